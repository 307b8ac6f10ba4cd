"""Gradual unfreezing on one process: the schedule, bit-identical frozen weights, no backward below the frozen line,
BatchNorm in the head, a plain Trainer, and a run resumed in the middle of a frozen stage."""

import json
import os

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from ulmfit_tiny_models import classification_dataset, snapshot, tiny_awd_lstm_classifier, tiny_bert

from tl_nlp.training import (
    GradualUnfreezingCallback,
    ULMFiTTrainer,
    ULMFiTTrainingArguments,
    layer_groups,
    num_trainable_groups_at,
    unfreezing_stage_starts,
)


def test_stage_starts():
    assert unfreezing_stage_starts(4, max_steps=100, steps_per_epoch=30) == [30, 60, 90]
    assert unfreezing_stage_starts(4, max_steps=80, steps_per_epoch=30) == [30, 60]  # the run ends first
    assert unfreezing_stage_starts(3, max_steps=100, every_n_steps=10) == [10, 20]  # then every group trains
    assert unfreezing_stage_starts(5, max_steps=200, at_fractions=[0.1, 0.25, 0.5]) == [20, 50, 100]
    assert [num_trainable_groups_at(step, [10, 20]) for step in (0, 9, 10, 19, 20, 99)] == [1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="iterable dataset"):
        unfreezing_stage_starts(3, max_steps=10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(every_n_steps=2, at_fractions=[0.5]), "at most one"),
        (dict(every_n_steps=0), "every_n_steps"),
        (dict(at_fractions=[0.5, 0.2]), "strictly increasing"),
        (dict(at_fractions=[1.0]), "strictly increasing"),
        (dict(freeze_method="sometimes"), "freeze_method"),
    ],
)
def test_callback_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualUnfreezingCallback(**kwargs)


class GroupRecorder(TrainerCallback):
    """After every optimizer step: which layer groups differ from their initial weights, and which have Adam state."""

    def __init__(self, model, optimizer_getter):
        self.initial = snapshot(model)
        self.groups = layer_groups(model)
        self.optimizer_getter = optimizer_getter
        self.changed, self.with_state, self.lowest_block_output_requires_grad = {}, {}, {}
        self._outputs = []
        lowest_block = model.bert.encoder.layer[0] if hasattr(model, "bert") else None
        if lowest_block is not None:
            lowest_block.register_forward_hook(lambda module, args, output: self._outputs.append(output))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        current = snapshot(model)
        parameters = dict(model.named_parameters())
        optimizer_state = self.optimizer_getter().state
        step = state.global_step
        self.changed[step] = [
            index
            for index, group in enumerate(self.groups)
            if any(not torch.equal(current[n], self.initial[n]) for n in group.parameter_names)
        ]
        self.with_state[step] = [
            index
            for index, group in enumerate(self.groups)
            if any(parameters[n] in optimizer_state for n in group.parameter_names)
        ]
        if self._outputs:
            output = self._outputs[-1]
            output = output[0] if isinstance(output, tuple) else output
            self.lowest_block_output_requires_grad[step] = output.requires_grad
            self._outputs.clear()


def train_with_unfreezing(trainer_kind, freeze_method="auto", **overrides):
    model = tiny_bert()
    common = dict(
        output_dir="unused",
        per_device_train_batch_size=4,
        max_steps=8,
        learning_rate=1e-2,
        weight_decay=0.1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    common.update(overrides)
    callback = GradualUnfreezingCallback(every_n_steps=2, freeze_method=freeze_method)
    if trainer_kind == "ulmfit":
        args = ULMFiTTrainingArguments(**common, gradual_unfreezing=False)  # the explicit callback below instead
        trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset(), callbacks=[callback])
    else:
        trainer = Trainer(
            model=model, args=TrainingArguments(**common), train_dataset=classification_dataset(), callbacks=[callback]
        )
    recorder = GroupRecorder(model, lambda: trainer.optimizer)
    trainer.add_callback(recorder)
    trainer.train()
    return trainer, recorder


# 4 groups (embeddings, layer 0, layer 1, head); one more unfrozen every 2 steps: after step s (1-based) the groups
# updated so far are the top 1 (s <= 2), 2 (s <= 4), 3 (s <= 6), then all 4.
EXPECTED_CHANGED = {1: [3], 2: [3], 3: [2, 3], 4: [2, 3], 5: [1, 2, 3], 6: [1, 2, 3], 7: [0, 1, 2, 3], 8: [0, 1, 2, 3]}


@pytest.mark.parametrize(
    "trainer_kind, freeze_method",
    [("ulmfit", "requires_grad"), ("ulmfit", "drop_grads"), ("plain", "auto")],
)
def test_frozen_groups_stay_bit_identical_and_train_once_unfrozen(tmp_path, trainer_kind, freeze_method):
    trainer, recorder = train_with_unfreezing(trainer_kind, freeze_method, output_dir=str(tmp_path))
    # Frozen groups equal their initial weights exactly (torch.equal), despite weight_decay=0.1 and lr=1e-2;
    # each group changes from the first step after it is unfrozen.
    assert recorder.changed == EXPECTED_CHANGED
    # No optimizer-state drift: a frozen parameter has no Adam moments until it is unfrozen.
    assert recorder.with_state == EXPECTED_CHANGED
    # Every parameter was in the optimizer from the start.
    in_optimizer = {p for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == set(trainer.model.parameters())
    # Afterwards the model is left fully trainable.
    assert all(p.requires_grad for p in trainer.model.parameters())
    callback = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GradualUnfreezingCallback))
    assert callback.freeze_method_in_use == ("requires_grad" if freeze_method == "auto" else freeze_method)


def test_frozen_lower_layers_cost_no_backward_but_drop_grads_computes_them(tmp_path):
    _, skipping = train_with_unfreezing("ulmfit", "requires_grad", output_dir=str(tmp_path))
    _, computing = train_with_unfreezing("ulmfit", "drop_grads", output_dir=str(tmp_path))
    # Layer 0 and the embeddings are frozen for steps 1-4 (and the embeddings alone for 5-6). With requires_grad
    # freezing, layer 0's output needs no gradient while layer 0 and everything below it is frozen: autograd records
    # no graph there, so no backward runs through it.
    assert skipping.lowest_block_output_requires_grad == {
        1: False,
        2: False,
        3: False,
        4: False,
        5: True,
        6: True,
        7: True,
        8: True,
    }
    # drop_grads (the DDP-safe method) keeps every parameter in the graph and discards the gradients afterwards.
    assert all(computing.lowest_block_output_requires_grad.values())


def test_batchnorm_in_the_head_keeps_training(tmp_path):
    model = tiny_awd_lstm_classifier()
    initial = snapshot(model)
    batch_norms = [m for m in model.classifier.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    running_means = [bn.running_mean.clone() for bn in batch_norms]
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        unfreeze_every_n_steps=10,
        unfreezing_schedule="partial",  # on purpose: only the head trains
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset())
    trainer.train()
    assert trainer.unfreezing_callback.num_trainable_groups == 1  # only the head trained
    for name, parameter in model.named_parameters():
        if name.startswith("classifier."):
            assert not torch.equal(parameter, initial[name]), name  # BatchNorm scale/shift included
        else:
            assert torch.equal(parameter, initial[name]), name
    assert all(not torch.equal(bn.running_mean, before) for bn, before in zip(batch_norms, running_means, strict=True))


def final_weights_and_trainer(output_dir, resume_from=None):
    torch.manual_seed(0)
    model = tiny_bert()  # dropout on: the resumed run must also restore the RNG
    args = ULMFiTTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        max_steps=9,
        learning_rate=1e-2,
        weight_decay=0.01,
        unfreeze_every_n_steps=3,
        unfreezing_schedule="partial",  # the embeddings stay frozen: the resumed run must keep them so
        save_strategy="steps",
        save_steps=4,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset(size=48))
    trainer.train(resume_from_checkpoint=resume_from)
    return snapshot(model), trainer


def test_resume_in_the_middle_of_a_frozen_stage_matches_an_uninterrupted_run(tmp_path):
    uninterrupted, trainer = final_weights_and_trainer(tmp_path / "a")
    checkpoint = tmp_path / "a" / "checkpoint-4"
    # Step 4 is inside stage 1 (stages start at steps 3 and 6): two groups train, embeddings and layer 0 are frozen.
    with open(checkpoint / "trainer_state.json") as handle:
        saved = json.load(handle)["stateful_callbacks"]["GradualUnfreezingCallback"]
    assert saved["attributes"]["num_trainable_groups"] == 2
    assert saved["args"]["every_n_steps"] == 3
    assert os.path.isdir(checkpoint)

    resumed, resumed_trainer = final_weights_and_trainer(tmp_path / "b", resume_from=str(checkpoint))
    assert resumed_trainer.state.global_step == 9
    for name, weight in uninterrupted.items():
        assert torch.equal(resumed[name], weight), name
    # Not vacuous: layer 0, frozen at the checkpoint, trained after step 6; the embeddings never did (stage 3 would
    # begin at step 9, the end of the run).
    torch.manual_seed(0)
    initial = snapshot(tiny_bert())
    layer_zero = "bert.encoder.layer.0.output.dense.weight"
    assert not torch.equal(uninterrupted[layer_zero], initial[layer_zero])
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(uninterrupted[embeddings], initial[embeddings])


def test_peft_base_weights_stay_out_and_lora_unfreezes_by_layer(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_bert(), LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    initial = snapshot(model)
    base = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2,
        unfreeze_every_n_steps=2, unfreezing_schedule="partial", report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset())
    trainer.train()
    after = snapshot(model)
    changed = {name for name in after if not torch.equal(after[name], initial[name])}
    assert not changed & base  # PEFT's frozen base weights never move ...
    assert all(not dict(model.named_parameters())[name].requires_grad for name in base)  # ... nor get switched on
    lora = "base_model.model.bert.encoder.layer.{}.attention.self.query.lora_B.default.weight"
    assert lora.format(1) in changed  # layer 1 unfrozen at step 2
    assert lora.format(0) not in changed  # layer 0 would be unfrozen at step 4, the end of the run
    assert "base_model.model.classifier.modules_to_save.default.weight" in changed


def test_awd_lstm_lm_first_stage_trains_the_tied_decoder_as_fastai_does(tmp_path):
    from ulmfit_tiny_models import language_model_dataset, tiny_awd_lstm_lm

    model = tiny_awd_lstm_lm()
    initial = snapshot(model)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2,
        unfreeze_every_n_steps=10, unfreezing_schedule="partial", report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=language_model_dataset())
    trainer.train()
    assert model.decoder.weight is model.awd_lstm.embeddings.weight  # still tied
    # fastai's awd_lstm_lm_split puts the encoder with the decoder in the top group: the first stage trains the tied
    # embedding/decoder matrix and the decoder bias, and the LSTM layers stay frozen.
    for name, parameter in model.named_parameters():
        if name in ("decoder.bias", "awd_lstm.embeddings.weight"):
            assert not torch.equal(parameter, initial[name]), name  # the head trains
        else:
            assert torch.equal(parameter, initial[name]), name  # the LSTM layers are frozen


def test_plan_spreads_the_stages_when_there_are_fewer_epochs_than_groups():
    from tl_nlp.training.callbacks import unfreezing_plan

    # all-MiniLM-L6-v2 has 8 groups; 3 epochs of 100 steps: 7 stages over the first half, every group the second.
    plan = unfreezing_plan(8, max_steps=300, steps_per_epoch=100)
    assert [stage.start for stage in plan] == [0, 21, 43, 64, 86, 107, 129, 150]
    assert [stage.num_trainable_groups for stage in plan] == list(range(1, 9))
    assert plan[-1].end - plan[-1].start == 150
    # One epoch: the same, never "nothing below the head trains".
    assert unfreezing_plan(5, max_steps=40, steps_per_epoch=40)[-1].num_trainable_groups == 5
    # Enough epochs: the paper's one group per epoch, the last stage at least one epoch long.
    plan = unfreezing_plan(5, max_steps=500, steps_per_epoch=100)
    assert [(stage.start, stage.num_trainable_groups) for stage in plan] == [
        (0, 1),
        (100, 2),
        (200, 3),
        (300, 4),
        (400, 5),
    ]
    # Fewer steps than groups: several groups unfreeze at once, every one of them still trains.
    plan = unfreezing_plan(8, max_steps=4, steps_per_epoch=4)
    assert plan[-1].num_trainable_groups == 8 and plan[-1].end - plan[-1].start >= 2


def test_a_schedule_that_leaves_groups_frozen_is_refused_unless_asked_for_by_name():
    from tl_nlp.training.callbacks import unfreezing_plan

    with pytest.raises(ValueError, match=r"one group per epoch of 100 steps reaches only 4 of 8 layer groups"):
        unfreezing_plan(8, max_steps=400, steps_per_epoch=100, schedule="per_epoch")
    with pytest.raises(ValueError, match=r"every 10 steps reaches only 2 of 5 .*'partial'"):
        unfreezing_plan(5, max_steps=15, every_n_steps=10)
    plan = unfreezing_plan(8, max_steps=400, steps_per_epoch=100, schedule="partial")
    assert plan[-1].num_trainable_groups == 4


def test_fastai_imdb_schedule_is_the_tutorials_stages_and_rates():
    from tl_nlp.training.callbacks import unfreezing_plan

    plan = unfreezing_plan(5, max_steps=50, steps_per_epoch=10, schedule="fastai_imdb")
    assert [(s.start, s.end, s.num_trainable_groups, s.peak_scale) for s in plan] == [
        (0, 10, 1, 1.0),
        (10, 20, 2, 0.5),
        (20, 30, 3, 0.25),
        (30, 50, 5, 0.05),
    ]


def test_trainer_prints_the_plan_and_every_group_trains_with_one_epoch(tmp_path, capsys):
    model = tiny_awd_lstm_classifier()
    initial = snapshot(model)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset(size=32))
    trainer.train()
    printed = capsys.readouterr().out
    assert "Gradual unfreezing over 8 optimizer steps, 5 layer groups" in printed
    assert "5 of 5 train" in printed
    after = snapshot(model)
    assert all(not torch.equal(after[name], initial[name]) for name in after if "weight" in name)
