"""Training parity with fastai: from the same initial weights and the same batches, tl_nlp's trainer and fastai's
`TextLearner` reach the same weights, with the same learning rate in every trained layer group at every step.

fastai runs in its own virtual environment (`.fastai-venv`, built by `scripts/build_fastai_env.sh`; the tests
skip without it), in a subprocess that reads the initial weights and the batches from a file and writes back its
rates and final weights. Tiny models, so that each side trains in seconds.

(a) Language-model fine-tuning with discriminative rates (2.6 per group) and STLR, every group trainable, 60 steps;
fastai runs the same triangle through its `ParamScheduler` (linear pieces), as `fit_one_cycle` only has the
cosine shape.
(b) A classifier through every stage of fastai's IMDb tutorial (`fit_one_cycle(1, lr)`; `freeze_to(-2)`,
`fit_one_cycle(1, slice(lr / 2 / 2.6**4, lr / 2))`; `freeze_to(-3)`, ...; `unfreeze()`,
`fit_one_cycle(2, slice(lr / 20 / 2.6**4, lr / 20))`), 50 steps, as tl_nlp's `unfreezing_schedule="fastai_imdb"`,
with padded batches of documents of different lengths, several longer than `max_len`.

Settings that had to be matched, and why they differ by default:
- Dropouts off on both sides (fastai's config `*_p=0`, head `ps=[0]`; ours `dropout_multiplier=0` and the head's
  later dropouts zeroed, as `drop_mult` leaves them alone): the two draw their masks differently.
- Weight decay 0 on both sides: fastai decays the LSTM biases (its no-decay rule looks for a module attribute
  named `bias`, which `nn.LSTM` has not), transformers' rule and ours skip every parameter named bias.
- No gradient clipping in tl_nlp (`max_grad_norm=0`): `TrainingArguments` clips at 1.0, fastai not at all.
- The language model's groups are passed as fastai's `awd_lstm_lm_split` (three LSTM layers, then the tied
  embedding/decoder with the decoder's bias on top).
- The language model's state is reset before every batch in fastai: batches here are independent windows, which
  `ULMFiTTrainer` reads without carrying the state (fastai carries it across a stream's consecutive batches).
- Our classifier head's linear layers have a bias where fastai's (after a BatchNorm) have none: ours are loaded as
  zeros and kept frozen.
- Documents lengths are multiples of the chunk length and `max_len` a multiple of it too: fastai pads a batch at the
  front in whole chunks and keeps the chunks that start in the last `max_len` positions of the *batch*, which
  is each document's last `max_len` tokens (tl_nlp's rule for any length) only when everything is chunk-aligned.
Everything else is each side's default for AWD-LSTM: Adam with beta2 0.99 and eps 1e-5, beta1 cycled 0.8/0.7/0.8,
AR 2 and TAR 1 (classifiers too), layer groups and the discriminative decay of 2.6.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from test_convert_fastai import NO_FASTAI, fastai_python
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import SequentialSampler

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification
from tl_nlp.convert_fastai import fastai_to_awd_lstm_state_dict
from tl_nlp.training import ULMFiTTrainer, ULMFiTTrainingArguments

VOCAB, EMB, HID, LAYERS = 40, 8, 12, 3
PAD = 1
RELATIVE_TOLERANCE = 1e-4


FASTAI_TRAINING = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from fastai.callback.core import Callback
    from fastai.callback.schedule import ParamScheduler, SchedLin, combine_scheds
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.losses import CrossEntropyLossFlat
    from fastai.torch_core import even_mults
    from fastai.text.all import (AWD_LSTM, TextLearner, awd_lstm_clas_config, awd_lstm_clas_split,
                                 awd_lstm_lm_config, awd_lstm_lm_split, get_language_model, get_text_classifier)

    folder = sys.argv[1]
    spec = json.load(open(f"{folder}/spec.json"))
    data = torch.load(f"{folder}/batches.pt")
    torch.manual_seed(0)
    # Dropouts off. WeightDropout with p = 0 exactly breaks on this torch (F.dropout(p=0) hands back the parameter
    # itself, which `reset` then cannot replace): 1e-12 keeps every weight and scales by 1 / (1 - 1e-12) == 1.
    sizes = dict(emb_sz=spec["emb"], n_hid=spec["hid"], n_layers=spec["layers"], output_p=0.0, hidden_p=0.0,
                 input_p=0.0, embed_p=0.0, weight_p=1e-12)
    if spec["kind"] == "lm":
        model = get_language_model(AWD_LSTM, spec["vocab"], config={**awd_lstm_lm_config, **sizes})
        splitter = awd_lstm_lm_split
    else:
        model = get_text_classifier(AWD_LSTM, spec["vocab"], spec["classes"], seq_len=spec["bptt"],
                                    config={**awd_lstm_clas_config, **sizes}, lin_ftrs=[6], ps=[0.0],
                                    max_len=spec["max_len"])
        splitter = awd_lstm_clas_split
    torch.save(model.state_dict(), f"{folder}/initial.pth")
    batches = list(zip(data["x"], data["y"]))
    dls = DataLoaders(DataLoader(batches, bs=None), DataLoader(batches[:1], bs=None))

    class Record(Callback):
        order = 60  # after ParamScheduler has set this step's rates
        def before_fit(self):
            self.learn.rates = getattr(self.learn, "rates", [])
        def before_step(self):
            trainable = len(self.opt.param_lists) - self.opt.frozen_idx
            self.learn.rates.append([float(h["lr"]) for h in self.opt.hypers][-trainable:][::-1])

    class ResetEachBatch(Callback):
        def before_batch(self):
            self.learn.model.reset()

    cbs = [Record()] + ([ResetEachBatch()] if spec["kind"] == "lm" else [])
    learn = TextLearner(dls, model, splitter=splitter, loss_func=CrossEntropyLossFlat(), wd=0.0, cbs=cbs)
    lr = spec["lr"]
    if spec["kind"] == "lm":
        learn.unfreeze()
        rates = np.array(even_mults(lr / 2.6 ** 3, lr, 4))  # what fit(lr=slice(...)) gives the 4 groups
        cut = spec["cut_frac"]
        scheds = {
            "lr": combine_scheds([cut, 1 - cut], [SchedLin(rates / 32, rates), SchedLin(rates, rates / 32)]),
            "mom": combine_scheds([cut, 1 - cut], [SchedLin(0.8, 0.7), SchedLin(0.7, 0.8)]),
        }
        learn.fit(1, lr=slice(lr / 2.6 ** 3, lr), cbs=ParamScheduler(scheds))
    else:
        learn.freeze()
        learn.fit_one_cycle(1, lr)
        learn.freeze_to(-2)
        learn.fit_one_cycle(1, slice(lr / 2 / (2.6 ** 4), lr / 2))
        learn.freeze_to(-3)
        learn.fit_one_cycle(1, slice(lr / 4 / (2.6 ** 4), lr / 4))
        learn.unfreeze()
        learn.fit_one_cycle(2, slice(lr / 20 / (2.6 ** 4), lr / 20))
    torch.save(learn.model.state_dict(), f"{folder}/final.pth")
    json.dump({"rates": learn.rates}, open(f"{folder}/rates.json", "w"))
    """
)


def run_fastai(folder: Path, spec: dict, batches: dict) -> tuple[dict, dict, list]:
    python = fastai_python()
    if python is None:
        pytest.skip(NO_FASTAI)
    (folder / "spec.json").write_text(json.dumps(spec))
    torch.save(batches, folder / "batches.pt")
    result = subprocess.run([python, "-c", FASTAI_TRAINING, str(folder)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    initial = torch.load(folder / "initial.pth", weights_only=True)
    final = torch.load(folder / "final.pth", weights_only=True)
    return initial, final, json.loads((folder / "rates.json").read_text())["rates"]


class SequentialTrainer(ULMFiTTrainer):
    """Reads the prepared batches in order, as fastai's loader does (`shuffle=False`)."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def one_prepared_batch(features: list[dict]) -> dict:
    # Every row of the dataset is a whole batch: the trainer's batch size is 1 and this unwraps it.
    return {key: torch.tensor(value) for key, value in features[0].items()}


def train_tl_nlp(model, batches, tmp_path, custom_layer_groups=None, **arguments):
    from datasets import Dataset

    dataset = Dataset.from_list(batches)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path / "tl_nlp"),
        per_device_train_batch_size=1,
        weight_decay=0.0,
        max_grad_norm=0.0,
        remove_unused_columns=False,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
        **arguments,
    )
    trainer = SequentialTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=one_prepared_batch,
        custom_layer_groups=custom_layer_groups,
    )
    rates = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, _args, _kwargs: rates.append(
            # Trainable groups only, top first (the optimizer lists the top group first, decay/no-decay pairs).
            [
                group["lr"]
                for index, group in enumerate(optimizer.param_groups)
                if (index == 0 or group["layer_group"] != optimizer.param_groups[index - 1]["layer_group"])
                and any(p.grad is not None for p in group["params"])
            ]
        )
    )
    try:
        trainer.train()
    finally:
        handle.remove()
    return trainer, rates


def assert_same_weights(ours: dict[str, torch.Tensor], fastai_final: dict, initial: dict) -> None:
    _, _, converted = fastai_to_awd_lstm_state_dict(fastai_final)
    _, _, converted_initial = fastai_to_awd_lstm_state_dict(initial)
    compared = 0
    for name, reference in converted.items():
        if name not in ours or not reference.is_floating_point() or "running" in name:
            continue
        moved = (reference - converted_initial[name]).norm()
        difference = (ours[name] - reference).norm() / reference.norm().clamp_min(1e-12)
        assert difference <= RELATIVE_TOLERANCE, f"{name}: relative difference {difference:.2e}"
        compared += int(moved > 0)
    assert compared >= 10  # the weights did train, and were compared


def test_language_model_fine_tuning_matches_fastai(tmp_path):
    generator = torch.Generator().manual_seed(1)
    steps, batch_size, length = 60, 4, 10
    stream = torch.randint(4, VOCAB, (steps * batch_size * (length + 1),), generator=generator)
    windows = stream.view(steps, batch_size, length + 1)
    x, y = windows[..., :-1].contiguous(), windows[..., 1:].contiguous()
    spec = dict(kind="lm", vocab=VOCAB, emb=EMB, hid=HID, layers=LAYERS, lr=1e-2, cut_frac=0.1)
    initial, final, fastai_rates = run_fastai(tmp_path, spec, {"x": list(x), "y": list(y)})

    _, values, state = fastai_to_awd_lstm_state_dict(initial)
    model = AWDLSTMForCausalLM(AWDLSTMConfig(**values, dropout_multiplier=0.0))
    model.load_state_dict(state, strict=False)
    batches = [{"input_ids": x[i].tolist(), "shift_labels": y[i].tolist()} for i in range(steps)]
    fastai_lm_split = [
        "awd_lstm.layers.0",
        "awd_lstm.layers.1",
        "awd_lstm.layers.2",
        ["awd_lstm.embeddings", "decoder"],
    ]
    trainer, rates = train_tl_nlp(
        model,
        batches,
        tmp_path,
        custom_layer_groups=fastai_lm_split,
        learning_rate=1e-2,
        num_train_epochs=1,
        gradual_unfreezing=False,
    )
    assert trainer.state.global_step == steps == len(fastai_rates) == len(rates)
    assert trainer.args.discriminative_lr_decay == 2.6 and trainer.args.momentum_cycle == [0.8, 0.7, 0.8]
    for step, (ours, theirs) in enumerate(zip(rates, fastai_rates, strict=True)):
        assert ours == pytest.approx(theirs, rel=1e-6), f"step {step}"
    assert_same_weights(dict(model.named_parameters()), final, initial)


def classifier_batches(num_batches: int, batch_size: int, bptt: int, generator: torch.Generator):
    """Batches sorted longest first, padded at the front in whole chunks (fastai's `pad_input_chunk`): lengths are
    multiples of `bptt`, from one chunk to five (max_len is two)."""
    xs, ys = [], []
    for _ in range(num_batches):
        lengths = sorted((torch.randint(1, 6, (batch_size,), generator=generator) * bptt).tolist(), reverse=True)
        x = torch.full((batch_size, lengths[0]), PAD)
        for row, length in enumerate(lengths):
            x[row, lengths[0] - length :] = torch.randint(4, VOCAB, (length,), generator=generator)
        xs.append(x)
        ys.append(torch.randint(0, 3, (batch_size,), generator=generator))
    return xs, ys


def test_classifier_through_every_unfreezing_stage_matches_fastai(tmp_path):
    generator = torch.Generator().manual_seed(2)
    bptt, max_len, num_batches = 8, 16, 10
    # Batches of 8: with 4 rows the head's BatchNorm divides by a near-zero spread now and then, and float32
    # rounding (1e-7) grows past the tolerance over 50 steps at fastai's rate of 2e-2 in both libraries alike.
    xs, ys = classifier_batches(num_batches, 8, bptt, generator)
    assert any(x.size(1) > max_len for x in xs) and any((x == PAD).any() for x in xs)
    spec = dict(kind="clas", vocab=VOCAB, emb=EMB, hid=HID, layers=LAYERS, lr=2e-2, classes=3, bptt=bptt,
                max_len=max_len)  # fmt: skip
    initial, final, fastai_rates = run_fastai(tmp_path, spec, {"x": xs, "y": ys})

    _, values, state = fastai_to_awd_lstm_state_dict(initial)
    config = AWDLSTMConfig(
        **values, bptt_chunk_length=bptt, max_len=max_len, dropout_multiplier=0.0, classifier_dropouts=[0.0, 0.0]
    )
    model = AWDLSTMForSequenceClassification(config)
    model.load_state_dict(state, strict=False)
    for layer in model.classifier.layers:  # fastai's linear layers after a BatchNorm have no bias
        if isinstance(layer, torch.nn.Linear):
            layer.bias.requires_grad_(False)
    batches = [
        {"input_ids": x.tolist(), "attention_mask": (x != PAD).long().tolist(), "labels": y.tolist()}
        for x, y in zip(xs, ys, strict=True)
    ]
    trainer, rates = train_tl_nlp(
        model, batches, tmp_path, learning_rate=2e-2, num_train_epochs=5, unfreezing_schedule="fastai_imdb"
    )
    assert trainer.state.global_step == 5 * num_batches == len(fastai_rates) == len(rates)
    # Stages of 10, 10, 10 and 20 steps training 1, 2, 3 and all 5 groups.
    assert [len(r) for r in fastai_rates] == [1] * 10 + [2] * 10 + [3] * 10 + [5] * 20
    for step, (ours, theirs) in enumerate(zip(rates, fastai_rates, strict=True)):
        assert ours == pytest.approx(theirs, rel=1e-6), f"step {step}"
    assert_same_weights(dict(model.named_parameters()), final, initial)
    buffers = dict(model.named_buffers())
    _, _, converted = fastai_to_awd_lstm_state_dict(final)
    torch.testing.assert_close(buffers["classifier.layers.0.running_mean"], converted["classifier.layers.0.running_mean"],
                               rtol=1e-4, atol=1e-6)  # fmt: skip


FASTAI_DROPOUTS = textwrap.dedent(
    """
    import json
    import torch
    from torch import nn
    from fastai.text.all import (AWD_LSTM, awd_lstm_clas_config, awd_lstm_lm_config, get_language_model,
                                 get_text_classifier)
    from fastai.text.models.awdlstm import EmbeddingDropout, RNNDropout, WeightDropout

    def dropouts(model):
        encoder = model[0].module if hasattr(model[0], "module") else model[0]
        values = [encoder.encoder_dp.embed_p, encoder.input_dp.p, encoder.rnns[0].weight_p]
        values += [dp.p for dp in encoder.hidden_dps[:-1]]
        if hasattr(model[1], "output_dp"):
            return values + [model[1].output_dp.p]
        return values + [m.p for m in model[1].modules() if isinstance(m, nn.Dropout)]

    sizes = dict(emb_sz=8, n_hid=12, n_layers=3)
    print(json.dumps({
        "lm": dropouts(get_language_model(AWD_LSTM, 40, config={**awd_lstm_lm_config, **sizes}, drop_mult=0.5)),
        "clas": dropouts(get_text_classifier(AWD_LSTM, 40, 3, config={**awd_lstm_clas_config, **sizes},
                                             drop_mult=0.5, lin_ftrs=[6, 5])),
    }))
    """
)


def test_dropouts_and_drop_mult_are_fastais_for_each_head():
    python = fastai_python()
    if python is None:
        pytest.skip(NO_FASTAI)
    result = subprocess.run([python, "-c", FASTAI_DROPOUTS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = json.loads(result.stdout.strip().splitlines()[-1])
    config = AWDLSTMConfig(
        vocab_size=40, embedding_size=8, hidden_size=12, dropout_multiplier=0.5, classifier_hidden_sizes=[6, 5]
    )

    def ours(model):
        encoder = model.awd_lstm
        values = [encoder.embedding_dropout.p, encoder.input_dropout.p, encoder.layers[0].weight_dropout.p]
        values += [dropout.p for dropout in encoder.hidden_dropouts]
        if isinstance(model, AWDLSTMForCausalLM):
            return values + [model.output_dropout.p]
        return values + [m.p for m in model.classifier.layers if isinstance(m, torch.nn.Dropout)]

    assert ours(AWDLSTMForCausalLM(config)) == pytest.approx(expected["lm"])
    assert ours(AWDLSTMForSequenceClassification(config)) == pytest.approx(expected["clas"])
