"""The learning-rate range test: exponential sweep, smoothing, early stop, suggestions, plot, state restored."""

import math

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from ulmfit_tiny_models import classification_dataset, snapshot, tiny_bert

from tl_nlp import ULMFiTTrainer, ULMFiTTrainingArguments
from tl_nlp.training.lr_finder import (
    LRFinderArguments,
    find_learning_rate,
    steepest_learning_rate,
    valley_learning_rate,
)


def make_trainer(tmp_path, decay: float = 2.6, gradual_unfreezing: bool = False) -> ULMFiTTrainer:
    torch.manual_seed(0)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path),
        gradual_unfreezing=gradual_unfreezing,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        discriminative_lr_decay=decay,
        report_to=[],
        dataloader_pin_memory=False,
        max_grad_norm=0.0,
    )
    return ULMFiTTrainer(model=tiny_bert(dropout=0.0), args=args, train_dataset=classification_dataset(64))


def record_learning_rates():
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append([group["lr"] for group in optimizer.param_groups])
    )
    return seen, handle


def test_sweep_is_exponential_keeps_group_ratios_and_restores_everything(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.create_optimizer()
    # One real step so that the optimizer has state (Adam moments) to restore.
    trainer.current_gradient_accumulation_steps = 1
    trainer.training_step(trainer.model, next(iter(trainer.get_train_dataloader())))
    trainer.optimizer.step()
    weights = snapshot(trainer.model)
    optimizer_state = {
        k: [v.clone() for v in s.values() if torch.is_tensor(v)] for k, s in trainer.optimizer.state.items()
    }
    rates_before = [group["lr"] for group in trainer.optimizer.param_groups]
    seen, handle = record_learning_rates()
    try:
        result = find_learning_rate(trainer, start_lr=1e-5, end_lr=1e-1, num_steps=12, divergence_threshold=1e9)
    finally:
        handle.remove()
    assert len(seen) == 12 and not result.stopped_early
    top = [rates[0] for rates in seen]
    assert top[0] == pytest.approx(1e-5) and top[-1] == pytest.approx(1e-1)
    assert np.allclose(np.diff(np.log(top)), math.log(1e4) / 11)  # exponential
    for rates in seen:  # discriminative ratios kept: each lower group 2.6x below the one above
        assert np.allclose(np.array(rates[:-2:2]) / np.array(rates[2::2]), 2.6)
    assert result.learning_rates == pytest.approx(top)
    # Restored: weights bit for bit, the optimizer object, its state and its rates.
    assert all(torch.equal(weights[name], p) for name, p in trainer.model.named_parameters())
    assert [group["lr"] for group in trainer.optimizer.param_groups] == rates_before
    for key, tensors in optimizer_state.items():
        restored = [v for v in trainer.optimizer.state[key].values() if torch.is_tensor(v)]
        assert all(torch.equal(a, b) for a, b in zip(tensors, restored, strict=True))


def test_with_gradual_unfreezing_the_sweep_trains_the_top_group_alone_as_fastai(tmp_path):
    trainer = make_trainer(tmp_path, gradual_unfreezing=True)
    groups = trainer.get_layer_groups()
    head = set(groups[-1].parameter_names)
    parameters = dict(trainer.model.named_parameters())
    stepped = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: stepped.append(
            {
                name
                for group in optimizer.param_groups
                for p in group["params"]
                for name, q in parameters.items()
                if p is q
            }
        )
    )
    try:
        result = find_learning_rate(trainer, start_lr=1e-5, end_lr=1e-1, num_steps=8, divergence_threshold=1e9)
    finally:
        handle.remove()
    assert result.swept_groups == [groups[-1].name] == ["head"]
    assert stepped and all(names == head for names in stepped)  # frozen as training starts
    assert all(p.requires_grad for p in trainer.model.parameters())  # restored
    assert result.suggestion == result.valley


def test_loss_is_smoothed_with_bias_correction_and_the_sweep_stops_on_divergence(tmp_path):
    trainer = make_trainer(tmp_path, decay=1.0)
    result = find_learning_rate(trainer, start_lr=1e-4, end_lr=1e4, num_steps=60, smoothing=0.9)
    raw = result.raw_losses
    average = 0.0
    for step, value in enumerate(raw):
        average = 0.9 * average + 0.1 * value
        assert result.losses[step] == pytest.approx(average / (1 - 0.9 ** (step + 1)))
    assert result.losses[0] == pytest.approx(raw[0])  # bias correction: no pull towards 0
    assert result.stopped_early and len(result.losses) < 60
    # Stopped at the first smoothed loss above 4x the minimum (or at a non-finite loss, which is not recorded).
    assert all(loss <= 4 * min(result.losses[: i + 1]) for i, loss in enumerate(result.losses[:-1]))


def test_suggestions_on_a_known_curve():
    rates = list(np.logspace(-6, 0, 13))  # one step = log(10**0.5)
    losses = [5.0, 5.0, 4.9, 4.6, 3.8, 2.6, 2.0, 1.8, 1.7, 1.75, 2.5, 4.0, 9.0]
    # Steepest fall: 3.8 -> 2.6 starts at index 4.
    assert steepest_learning_rate(rates, losses) == pytest.approx(rates[4])
    # Longest decreasing run: indices 0 (or 1) .. 8 -> start 8 - 9 = -1 -> clipped; its 2/3 point: index
    # -1 + int(3) + int(1.5) = 3.
    assert valley_learning_rate(rates, losses) == pytest.approx(rates[3])
    assert valley_learning_rate(rates[:1], losses[:1]) is None


def test_plot_is_a_png_and_options_are_validated(tmp_path):
    trainer = make_trainer(tmp_path)
    plot = tmp_path / "plots" / "lr.png"
    result = find_learning_rate(trainer, LRFinderArguments(num_steps=8, plot_file=str(plot)))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.steepest is not None and 1e-7 <= result.steepest <= 10
    with pytest.raises(ValueError, match="num_steps must be >= 6"):
        LRFinderArguments(num_steps=3)
    with pytest.raises(ValueError, match="end_lr must be > start_lr"):
        LRFinderArguments(start_lr=1.0, end_lr=0.5)


def test_plot_returns_axes_for_inline_display_keeps_the_backend_and_the_repr_is_short(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    result = find_learning_rate(make_trainer(tmp_path), num_steps=20, divergence_threshold=1e9)
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # any backend but Agg: the plot must leave the session's choice alone
    try:
        figures = plt.get_fignums()
        axes = result.plot()
        assert matplotlib.get_backend() == "svg"
        # The curve drawn is the result's, on a figure pyplot manages (what a notebook shows inline).
        x, y = axes.lines[0].get_data()
        assert list(x) == result.learning_rates and list(y) == result.losses
        assert axes.get_xscale() == "log" and plt.get_fignums() == [*figures, axes.figure.number]
        assert {text.get_text().split(":")[0] for text in axes.get_legend().get_texts()} == {"steepest", "valley"}
        saved = result.plot(tmp_path / "lr.svg", axes=plt.subplots()[1])
        assert (tmp_path / "lr.svg").read_text().lstrip().startswith("<?xml") and saved.lines
        plt.close("all")
        # A file-only request (find_learning_rate's plot_file) closes its figure.
        find_learning_rate(make_trainer(tmp_path), num_steps=8, plot_file=str(tmp_path / "lr.png"))
        assert plt.get_fignums() == [] and (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.use(backend)
    text = repr(result)
    assert text.startswith("LRFinderResult(valley=") and "[" not in text and len(text) < 150
    assert f"valley={result.valley:.2e}" in text and "20 steps from 1e-07 to" in text
