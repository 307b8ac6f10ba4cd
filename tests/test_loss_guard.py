"""A loss that turns NaN stops training with the step and learning rate, keeping the last good checkpoint."""

import math

import pytest
import torch
from safetensors.torch import load_file
from ulmfit_tiny_models import classification_dataset, snapshot, tiny_bert

from tl_nlp import ULMFiTTrainer, ULMFiTTrainingArguments
from tl_nlp.training.loss_guard import NonFiniteLossCallback, NonFiniteLossError

NAN_FROM_STEP = 4


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # Batches of 8, one forward per step: from step NAN_FROM_STEP on, the embeddings (hence the loss) are NaN.
    guard, trainer, model = guarded_run(tmp_path, poison_from=NAN_FROM_STEP)
    assert guard.step == NAN_FROM_STEP
    assert trainer.state.global_step == NAN_FROM_STEP  # stopped there, not at max_steps
    saved = sorted(path.name for path in tmp_path.glob("checkpoint-*"))
    assert saved == [f"checkpoint-{step}" for step in range(1, NAN_FROM_STEP)]  # none at or after the NaN
    last_good = load_file(tmp_path / f"checkpoint-{NAN_FROM_STEP - 1}" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in last_good.values())
    # The NaN step changed nothing: the model still holds the weights of the last good checkpoint.
    weights = snapshot(model)
    for name, tensor in last_good.items():
        assert torch.equal(weights[name], tensor), name
    # The rate named is the one the NaN step ran at, as Trainer logged it for that step (top group first).
    logged = next(entry for entry in trainer.state.log_history if entry.get("step") == NAN_FROM_STEP)
    top_rate = guard.learning_rates[0]
    assert top_rate == pytest.approx(logged["learning_rate"])
    assert f"at step {NAN_FROM_STEP} " in guard.message
    assert f"learning rate {top_rate:.3g}" in guard.message and not math.isnan(top_rate)
    assert f"checkpoint-{NAN_FROM_STEP - 1}" in guard.message
    with pytest.raises(NonFiniteLossError, match=f"step {NAN_FROM_STEP}"):
        guard.raise_if_stopped()


def guarded_run(tmp_path, poison_from: int, scale_from: int | None = None, max_steps: int = 8):
    """A tiny BERT classifier saving every step; from forward `scale_from` the logits are multiplied by 1e12 (a
    finite loss that diverges), from forward `poison_from` the embeddings are NaN."""
    torch.manual_seed(0)
    model = tiny_bert(dropout=0.0)
    calls = {"forward": 0}

    def poison(module, inputs, output):
        calls["forward"] += 1
        return output * float("nan") if calls["forward"] >= poison_from else output

    def blow_up(module, inputs, output):
        return output * 1e12 if scale_from is not None and calls["forward"] >= scale_from else output

    model.bert.embeddings.register_forward_hook(poison)
    model.classifier.register_forward_hook(blow_up)
    guard = NonFiniteLossCallback()
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=max_steps,
        learning_rate=1e-3,
        gradual_unfreezing=False,
        save_strategy="steps",
        save_steps=1,
        logging_steps=1,
        report_to=[],
        dataloader_pin_memory=False,
        dataset_name="tiny",
    )
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset(64), callbacks=[guard])
    trainer.train()
    return guard, trainer, model


def test_an_older_runs_checkpoint_is_never_the_last_good_one(tmp_path):
    # An earlier, longer run left checkpoint-60 in the folder; this run fails at step 3.
    (tmp_path / "checkpoint-60").mkdir()
    (tmp_path / "checkpoint-60" / "trainer_state.json").write_text("{}")
    guard, _, _ = guarded_run(tmp_path, poison_from=3)
    assert guard.step == 3
    assert f"Last good checkpoint: {tmp_path / 'checkpoint-2'}." in guard.message
    assert "checkpoint-60" not in guard.message
    # Failing at the first step, there is none of this run to name, whatever the folder holds.
    guard, _, _ = guarded_run(tmp_path / "again", poison_from=1)
    assert "This run saved no good checkpoint-* before it." in guard.message


def test_a_finite_but_diverging_checkpoint_is_not_called_good(tmp_path):
    # Steps 1-3 train normally (loss ~0.7); from step 4 the logits are 1e12 times larger: a finite loss in the
    # billions, saved in checkpoint-4 and -5; step 6 is NaN.
    guard, _, _ = guarded_run(tmp_path, poison_from=6, scale_from=4)
    assert guard.step == 6
    losses = dict(guard.logged_losses)
    assert all(losses[step] < 1 for step in (1, 2, 3)) and all(losses[step] > 1e6 for step in (4, 5))
    assert f"Last good checkpoint: {tmp_path / 'checkpoint-3'} (not checkpoint-5 (its loss" in guard.message
    assert "checkpoint-4 (its loss" in guard.message and "over 4x the lowest" in guard.message
