"""The learning-rate range test (Smith 2015; fastai's `lr_find`) for any model trained by a `Trainer`.

The learning rate grows exponentially from `start_lr` to `end_lr` over `num_steps` optimizer steps on training
batches; the loss is smoothed with a bias-corrected exponential moving average, and the test stops early once the
smoothed loss exceeds `divergence_threshold` times its minimum. Two suggestions are read off the curve:

- *steepest*: the rate where the smoothed loss falls fastest against log(learning rate);
- *valley*: the longest run of decreasing loss, read two thirds of the way down it (fastai's default suggestion).

The model's weights, the trainer's optimizer and scheduler, and the frozen/trainable state of every parameter are
restored afterwards. With discriminative learning rates (`ULMFiTTrainer`) every parameter group keeps its ratio to
the top group: the rate that is swept and suggested is the top group's `learning_rate`.

The sweep trains what training will start with: with gradual unfreezing, the top layer group alone (every other
group frozen), as fastai's `lr_find` sweeps a learner as it is frozen. The recipe takes the *valley* suggestion
(`LRFinderResult.suggestion`), fastai's default.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import Trainer

from ..extras import import_extra
from .training_record import TRAINING_RECORD_FILE, read_training_record

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass
class LRFinderArguments:
    """Options of the learning-rate range test."""

    _argument_group_name = "learning-rate range test"  # the heading of these options in tl-nlp lr-find --help

    start_lr: float = field(default=1e-7, metadata={"help": "First learning rate of the sweep (> 0)."})
    end_lr: float = field(default=10.0, metadata={"help": "Last learning rate of the sweep (> start_lr)."})
    num_steps: int = field(default=100, metadata={"help": "Optimizer steps of the sweep (>= 6; fastai: 100)."})
    smoothing: float = field(
        default=0.98, metadata={"help": "EMA factor of the loss smoothing, in [0, 1) (0: no smoothing)."}
    )
    divergence_threshold: float = field(
        default=4.0, metadata={"help": "Stop once the smoothed loss exceeds this times its minimum (> 1)."}
    )
    plot_file: str | None = field(
        default=None, metadata={"help": "Save the loss-against-learning-rate plot here (PNG); none when not given."}
    )

    def __post_init__(self):
        if not self.start_lr > 0:
            raise ValueError(f"start_lr must be > 0, got {self.start_lr}")
        if not self.end_lr > self.start_lr:
            raise ValueError(f"end_lr must be > start_lr ({self.start_lr}), got {self.end_lr}")
        if self.num_steps < 6:
            raise ValueError(f"num_steps must be >= 6, got {self.num_steps}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing}")
        if not self.divergence_threshold > 1:
            raise ValueError(f"divergence_threshold must be > 1, got {self.divergence_threshold}")


@dataclass
class LRFinderResult:
    """What the range test measured: the top group's learning rate, the smoothed and the raw loss at each step, and
    the suggestions (`None` when the curve is too short to read one)."""

    learning_rates: list[float]
    losses: list[float]
    raw_losses: list[float]
    steepest: float | None
    valley: float | None
    stopped_early: bool
    swept_groups: list[str] | None = None

    @property
    def suggestion(self) -> float | None:
        """The rate a recipe should train with: the valley (fastai's default suggestion), else the steepest."""
        return self.valley if self.valley is not None else self.steepest

    def to_dict(self) -> dict:
        return {
            "steepest": self.steepest,
            "valley": self.valley,
            "stopped_early": self.stopped_early,
            "learning_rates": self.learning_rates,
            "losses": self.losses,
            "raw_losses": self.raw_losses,
        }

    def __repr__(self) -> str:
        def rate(value: float | None) -> str:
            return "None" if value is None else f"{value:.2e}"

        sweep = (
            f"{len(self.learning_rates)} steps from {self.learning_rates[0]:.0e} to {self.learning_rates[-1]:.2e}"
            if self.learning_rates
            else "no step"
        )
        stop = ", stopped early (loss diverged)" if self.stopped_early else ""
        return f"LRFinderResult(valley={rate(self.valley)}, steepest={rate(self.steepest)}, {sweep}{stop})"

    def plot(self, path: str | Path | None = None, axes: Axes | None = None) -> Axes:
        """Draws the smoothed loss against the learning rate (log scale) with the suggestions marked.

        Returns the matplotlib Axes: in a notebook the plot shows inline, as fastai's `lr_find` plot does. The
        matplotlib backend is left as it is.

        Args:
            path: also save the figure there (PNG, or any format matplotlib infers from the suffix).
            axes: draw on these axes (e.g. a subplot) instead of a new figure.
        """
        if axes is None:
            plt = import_extra("matplotlib.pyplot", "The LR-finder plot")
            _, axes = plt.subplots(figsize=(6, 4))
        axes.plot(self.learning_rates, self.losses)
        for name, rate, marker in (("steepest", self.steepest, "o"), ("valley", self.valley, "s")):
            if rate is not None:
                loss = float(np.interp(np.log(rate), np.log(self.learning_rates), self.losses))
                axes.plot([rate], [loss], marker, label=f"{name}: {rate:.2e}")
        axes.set_xscale("log")
        axes.set_xlabel("learning rate (top layer group)")
        axes.set_ylabel("training loss (smoothed)")
        if self.steepest is not None or self.valley is not None:
            axes.legend()
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            axes.figure.savefig(path, dpi=100, bbox_inches="tight")
        return axes


def steepest_learning_rate(learning_rates: list[float], losses: list[float]) -> float | None:
    """The rate at the start of the steepest fall of the loss against log(learning rate)."""
    if len(losses) < 2:
        return None
    slopes = np.diff(losses) / np.diff(np.log(learning_rates))
    return float(learning_rates[int(np.argmin(slopes))])


def valley_learning_rate(learning_rates: list[float], losses: list[float]) -> float | None:
    """The longest decreasing run of the loss (its longest decreasing subsequence, ending at index `end`), read at
    two thirds of its way from its start: low enough to be safely before the minimum, high enough to learn fast."""
    count = len(losses)
    if count < 2:
        return None
    run_lengths = [1] * count  # run_lengths[i]: longest decreasing subsequence ending at i
    end = 0
    for i in range(1, count):
        for j in range(i):
            if losses[i] < losses[j] and run_lengths[i] < run_lengths[j] + 1:
                run_lengths[i] = run_lengths[j] + 1
        if run_lengths[i] > run_lengths[end]:
            end = i
    start = end - run_lengths[end]
    third = (end - start) / 3
    return float(learning_rates[max(0, start + int(third) + int(third / 2))])


def find_learning_rate(
    trainer: Trainer, arguments: LRFinderArguments | None = None, **options: float | int | str | None
) -> LRFinderResult:
    """Runs the learning-rate range test on `trainer`'s model and training data and restores everything afterwards.

    Args:
        trainer: any `Trainer` (a `ULMFiTTrainer` keeps its discriminative ratios; a `LanguageModelTrainer` reads its
            streams with the carried state) whose `train_dataset` is set.
        arguments: the test's options; `options` (the same names) are used when it is not given.

    Returns:
        An [`LRFinderResult`]; with `plot_file` set, the plot is saved there too.

    Example:

    ```python
    >>> result = find_learning_rate(trainer, num_steps=200, plot_file="runs/lr_find.png")  # doctest: +SKIP
    >>> result.valley, result.steepest  # doctest: +SKIP
    ```
    """
    arguments = arguments if arguments is not None else LRFinderArguments(**options)
    model = trainer.model
    saved_weights = copy.deepcopy(model.state_dict())
    saved_requires_grad = [parameter.requires_grad for parameter in model.parameters()]
    saved_optimizer, saved_scheduler = trainer.optimizer, trainer.lr_scheduler
    saved_optimizer_state = copy.deepcopy(saved_optimizer.state_dict()) if saved_optimizer is not None else None
    was_training = model.training
    try:
        swept_groups = _freeze_as_training_starts(trainer)
        trainer.optimizer, trainer.lr_scheduler = None, None
        optimizer = trainer.create_optimizer()
        top_rate = max(group["lr"] for group in optimizer.param_groups)
        ratios = [group["lr"] / top_rate for group in optimizer.param_groups]
        learning_rates, losses, raw_losses = _sweep(trainer, optimizer, ratios, arguments)
    finally:
        model.load_state_dict(saved_weights)
        for parameter, requires_grad in zip(model.parameters(), saved_requires_grad, strict=True):
            parameter.requires_grad_(requires_grad)
            parameter.grad = None
        trainer.optimizer, trainer.lr_scheduler = saved_optimizer, saved_scheduler
        if saved_optimizer is not None:
            saved_optimizer.load_state_dict(saved_optimizer_state)
        if hasattr(trainer, "carried_state"):  # LanguageModelTrainer: next training starts from a fresh state
            trainer.carried_state = {True: None, False: None}
            trainer.window_lr_scales = []
        model.train(was_training)
    stopped_early = len(learning_rates) < arguments.num_steps
    # As fastai: the first tenth of the sweep is noise from the EMA warming up and the last steps are divergence.
    usable = slice(arguments.num_steps // 10, -5 if stopped_early else None)
    curve_rates, curve_losses = learning_rates[usable], losses[usable]
    result = LRFinderResult(
        learning_rates=learning_rates,
        losses=losses,
        raw_losses=raw_losses,
        steepest=steepest_learning_rate(curve_rates, curve_losses),
        valley=valley_learning_rate(curve_rates, curve_losses),
        stopped_early=stopped_early,
        swept_groups=swept_groups,
    )
    if arguments.plot_file:
        figure = result.plot(arguments.plot_file).figure
        import matplotlib.pyplot as plt

        # Only the file was asked for: the figure is closed, so that repeated runs do not pile figures up.
        plt.close(figure)
    return result


def _freeze_as_training_starts(trainer: Trainer) -> list[str] | None:
    """With gradual unfreezing (a `ULMFiTTrainer` with its callback), freezes every layer group that the first stage
    leaves frozen (all but the top one) and returns the names of the groups that the sweep trains."""
    callback = getattr(trainer, "unfreezing_callback", None)
    if callback is None:
        return None
    groups = trainer.get_layer_groups()
    # Stage 0 of every unfreezing plan trains the top group alone (see `unfreezing_plan`).
    parameters = dict(trainer.model.named_parameters())
    for group in groups[:-1]:
        for name in group.parameter_names:
            parameters[name].requires_grad_(False)
    return [groups[-1].name]


def _sweep(
    trainer: Trainer, optimizer: torch.optim.Optimizer, ratios: list[float], arguments: LRFinderArguments
) -> tuple[list[float], list[float], list[float]]:
    model = trainer.model
    model.train()
    dataloader = trainer.get_train_dataloader()
    batches = itertools.chain.from_iterable(itertools.repeat(dataloader))  # as many epochs as the sweep needs
    growth = (arguments.end_lr / arguments.start_lr) ** (1 / (arguments.num_steps - 1))
    # One batch per sweep step: Trainer.training_step divides the loss by this (set by `train()` otherwise).
    trainer.current_gradient_accumulation_steps = 1
    learning_rates, losses, raw_losses = [], [], []
    average, best = 0.0, math.inf
    for step in range(arguments.num_steps):
        rate = arguments.start_lr * growth**step
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = rate * ratio
        inputs = next(batches)
        loss = trainer.training_step(model, inputs)
        if trainer.args.max_grad_norm and trainer.args.max_grad_norm > 0:  # as the real run will clip
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.grad is not None], trainer.args.max_grad_norm
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        # Exponential moving average with bias correction (the first values are not pulled towards 0).
        average = arguments.smoothing * average + (1 - arguments.smoothing) * value
        smoothed = average / (1 - arguments.smoothing ** (step + 1))
        learning_rates.append(rate)
        losses.append(smoothed)
        raw_losses.append(value)
        best = min(best, smoothed)
        if smoothed > arguments.divergence_threshold * best:
            break
    return learning_rates, losses, raw_losses


def take_lr_finder_suggestion(trainer: Trainer, is_main: bool = True, checkpoint: str | None = None) -> float:
    """Runs the learning-rate range test on `trainer` (the model as training starts: with gradual unfreezing, the
    top layer group alone) and sets its `learning_rate` to the valley suggestion; keeps the rate it had when the
    curve gives none. Resuming from `checkpoint`, it sweeps nothing and takes the rate the interrupted run found, from
    the checkpoint's training record (a `ULMFiTTrainer` checkpoint): the resumed run goes on at that rate, as the
    checkpoint's scheduler state does anyway. Returns the rate training will use."""
    record = Path(checkpoint) / TRAINING_RECORD_FILE if checkpoint is not None else None
    if record is not None and record.is_file():
        found = read_training_record(record).stages[-1].learning_rate
        if found is not None:
            trainer.args.learning_rate = found
        if is_main:
            print(f"LR finder: resuming {checkpoint} at the rate found before, {trainer.args.learning_rate:.2e}")
        return trainer.args.learning_rate
    result = find_learning_rate(trainer)
    if result.suggestion is not None:
        trainer.args.learning_rate = result.suggestion
    if is_main:
        swept = ", ".join(result.swept_groups or ["every layer group"])
        found = "none (curve too short), keeping" if result.suggestion is None else "valley"
        print(f"LR finder on {swept}: {found} {trainer.args.learning_rate:.2e} for the top layer group")
    return trainer.args.learning_rate
