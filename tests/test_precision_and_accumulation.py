"""bf16 autocast, gradient accumulation and the FSDP check: what a distributed recipe relies on, on one process.

- bf16 (`bf16=True` with `use_cpu=True`: Accelerate runs the forward under `torch.autocast("cpu", torch.bfloat16)`)
  trains AWD-LSTM and a BERT-style model to within a tolerance of fp32 after a few steps, with bf16 activations.
- Gradient accumulation over 2 x 4 examples gives the update of one batch of 8 with discriminative LRs, STLR and
  gradual unfreezing: for BERT (a plain batch-mean loss, divided by the accumulation steps) and for AWD-LSTM's
  language model (a token-level loss normalised by the accumulated batch's token count, `num_items_in_batch`).
- FSDP1 without `use_orig_params` is refused before training, naming the setting.
"""

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import FullyShardedDataParallelPlugin
from datasets import Dataset
from ulmfit_tiny_models import VOCAB, classification_dataset, tiny_bert

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, ULMFiTTrainer, ULMFiTTrainingArguments
from tl_nlp.training.trainer import check_fsdp_supports_layer_groups

COMMON = dict(report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", dataloader_pin_memory=False)
NO_DROPOUT = dict(input_dropout=0.0, hidden_dropout=0.0, embedding_dropout=0.0, weight_dropout=0.0, output_dropout=0.0)


def awd_lstm_lm(**dropouts) -> AWDLSTMForCausalLM:
    torch.manual_seed(0)
    return AWDLSTMForCausalLM(
        AWDLSTMConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=24, num_hidden_layers=2, **dropouts)
    )


def padded_language_model_dataset(size: int = 16) -> Dataset:
    """Rows of 12 tokens whose targets end with 0 to 7 ignored positions: micro-batches hold different numbers of
    target tokens, so only a loss normalised over the whole accumulated batch matches the larger batch."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, VOCAB, (size, 12), generator=generator)
    labels = input_ids.clone()
    for row in range(size):
        labels[row, 12 - row % 8 :] = -100
    return Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": labels.tolist()})


def train(model, dataset, **overrides) -> tuple[ULMFiTTrainer, list[float]]:
    args = ULMFiTTrainingArguments(
        output_dir="unused",
        learning_rate=1e-2,
        weight_decay=0.1,
        logging_steps=1,
        seed=0,
        **{**COMMON, **overrides},
    )
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer, losses


@pytest.mark.parametrize("family", ["awd_lstm", "bert"])
def test_bf16_autocast_trains_within_tolerance_of_fp32(family):
    def build():
        if family == "awd_lstm":
            return awd_lstm_lm(**NO_DROPOUT), padded_language_model_dataset()
        torch.manual_seed(0)
        return tiny_bert(dropout=0.0), classification_dataset(size=32)

    runs = {}
    for precision in ("fp32", "bf16"):
        model, dataset = build()
        output_dtypes = set()
        # The decoder / classifier output is a matrix multiply: bf16 under autocast, fp32 otherwise. Training
        # forwards only: the forward pass that `layer_groups` traces runs in eval mode, outside autocast.
        head = model.get_output_embeddings() if family == "awd_lstm" else model.classifier
        head.register_forward_hook(
            lambda module, inputs, output, dtypes=output_dtypes: dtypes.add(output.dtype) if module.training else None
        )
        _, losses = train(
            model,
            dataset,
            bf16=precision == "bf16",
            max_steps=4,
            per_device_train_batch_size=8,
            gradual_unfreezing=False,
        )
        runs[precision] = (losses, output_dtypes)
    assert runs["fp32"][1] == {torch.float32}
    assert runs["bf16"][1] == {torch.bfloat16}
    # bf16 keeps 8 bits of mantissa (~0.4% per operation), but the sums stay fp32: measured here, the losses of the
    # 4 steps agree to ~1e-4 relative; 5e-3 leaves room for other CPUs' kernels.
    assert runs["bf16"][0] == pytest.approx(runs["fp32"][0], rel=5e-3)
    assert runs["fp32"][0][-1] < runs["fp32"][0][0]  # it trained


@pytest.mark.parametrize("family", ["bert", "awd_lstm"])
def test_gradient_accumulation_gives_the_update_of_the_larger_batch(family):
    def build():
        if family == "awd_lstm":
            # AR/TAR on: their per-batch means are also averaged over the accumulated micro-batches.
            return awd_lstm_lm(**NO_DROPOUT), padded_language_model_dataset(size=32)
        torch.manual_seed(0)
        return tiny_bert(dropout=0.0), classification_dataset(size=32)

    # 4 steps of 8 examples; one more layer group every step; STLR; decay 2.6. Sequential order so that both runs
    # see the same examples in the same steps (the random sampler draws per dataloader batch).
    common = dict(max_steps=4, unfreeze_every_n_steps=1, train_sampling_strategy="sequential")
    results = {}
    for name, batch, accumulation in (("large", 8, 1), ("accumulated", 4, 2)):
        model, dataset = build()
        trainer, losses = train(
            model, dataset, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, **common
        )
        results[name] = ({n: p.detach().clone() for n, p in model.named_parameters()}, losses)
    large, accumulated = results["large"][0], results["accumulated"][0]
    worst = max((large[name] - accumulated[name]).abs().max().item() for name in large)
    assert worst < 1e-6
    assert results["accumulated"][1] == pytest.approx(results["large"][1], rel=1e-5)
    initial = dict(build()[0].named_parameters())
    assert max((large[name] - initial[name].detach()).abs().max().item() for name in large) > 1e-3


def test_fsdp1_without_original_parameters_is_refused_with_the_setting_to_change():
    def accelerator(**plugin_kwargs):
        return SimpleNamespace(state=SimpleNamespace(fsdp_plugin=FullyShardedDataParallelPlugin(**plugin_kwargs)))

    args = ULMFiTTrainingArguments(output_dir="unused", **COMMON)
    with pytest.raises(ValueError, match="fsdp_use_orig_params: true"):
        check_fsdp_supports_layer_groups(accelerator(fsdp_version=1, use_orig_params=False), args)
    check_fsdp_supports_layer_groups(accelerator(fsdp_version=1, use_orig_params=True), args)
    check_fsdp_supports_layer_groups(accelerator(fsdp_version=2), args)
    plain = ULMFiTTrainingArguments(
        output_dir="unused", gradual_unfreezing=False, discriminative_lr_decay=1.0, **COMMON
    )
    check_fsdp_supports_layer_groups(accelerator(fsdp_version=1, use_orig_params=False), plain)
