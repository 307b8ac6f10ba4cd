"""Gradual unfreezing (ULMFiT section 3.3) as a `TrainerCallback`.

Training starts with only the top layer group trainable; one more group is unfrozen at each stage boundary (every
epoch, every N optimizer steps, or at given fractions of training) until the embeddings train too. The named
schedules (`UNFREEZING_SCHEDULES`) always end with every group trained for a real share of the run, whatever the
number of epochs; one that would leave groups frozen at the end is refused unless asked for by name (`"partial"`).
The plan is printed before training starts.

How a group is frozen, and why:
- The optimizer knows every parameter from the start (transformers' Trainer only puts parameters that require a
  gradient into the optimizer when it creates it, so a group frozen that way would never train once unfrozen).
- With `freeze_method="requires_grad"` (the default on one process and under DDP when `ULMFiTTrainer` finds that DDP
  looks for unused parameters, as transformers' Trainer sets it up by default) frozen parameters get
  `requires_grad=False`: autograd then stops below the lowest trainable group, so frozen lower layers cost no
  backward computation. Under DDP this is safe because the Trainer wraps the model before `on_train_begin`, when
  every parameter is registered; see `tl_nlp.training.distributed_freezing`.
- With `freeze_method="drop_grads"` (the default under FSDP, or DDP without unused-parameter detection, and with a
  plain `Trainer` under DDP) every parameter keeps `requires_grad=True`, frozen gradients are computed and
  all-reduced and then set to `None` before clipping and the optimizer step (`ULMFiTTrainer.training_step`, and
  `on_pre_optimizer_step` as a fallback for a plain `Trainer`). DeepSpeed is refused (ZeRO keeps its own gradients).
- Either way a frozen parameter has no gradient at the optimizer step, and torch optimizers skip such parameters
  entirely: no update, no weight decay, no change to their Adam moments or step count. Frozen weights stay
  bit-identical.

The stage is a pure function of the global step, so a run resumed from a checkpoint taken in the middle of a frozen
stage picks up the same stage; the callback also exports its settings and stage with the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from .distributed_freezing import freeze_method_for
from .layer_groups import LayerGroup, layer_group_summary, layer_groups

logger = logging.getLogger(__name__)

FREEZE_METHODS = ("auto", "requires_grad", "drop_grads")


def unfreezing_stage_starts(
    num_groups: int,
    max_steps: int,
    steps_per_epoch: int | None = None,
    every_n_steps: int | None = None,
    at_fractions: Sequence[float] | None = None,
) -> list[int]:
    """The optimizer steps at which one more layer group is unfrozen, in order.

    Stage k (k = 0, 1, ...) trains the top k + 1 groups and begins at step `starts[k - 1]` (stage 0 at step 0).
    Exactly one of the three schedules applies: `at_fractions` if given, else `every_n_steps` if given, else one
    stage per epoch of `steps_per_epoch` optimizer steps. Starts at or past `max_steps` are dropped, and there are
    at most `num_groups - 1` of them (after that every group trains).

    Args:
        num_groups (`int`): the number of layer groups.
        max_steps (`int`): the number of optimizer steps of the run.
        steps_per_epoch (`int`, *optional*): optimizer steps per epoch, for the per-epoch schedule.
        every_n_steps (`int`, *optional*): unfreeze one more group every this many optimizer steps.
        at_fractions (`Sequence[float]`, *optional*): unfreeze one more group at each of these fractions of
            `max_steps`, increasing and inside (0, 1).

    Example:

    ```python
    >>> unfreezing_stage_starts(num_groups=4, max_steps=100, steps_per_epoch=30)
    [30, 60, 90]
    >>> unfreezing_stage_starts(num_groups=4, max_steps=100, at_fractions=[0.1, 0.2])
    [10, 20]
    ```
    """
    if at_fractions is not None:
        starts = [round(fraction * max_steps) for fraction in at_fractions]
        # A fraction that rounds to step 0 on a very short run unfreezes its group from the start.
        return [start for start in starts if start < max_steps][: num_groups - 1]
    else:
        interval = every_n_steps if every_n_steps is not None else steps_per_epoch
        if interval is None or interval < 1:
            raise ValueError(
                "Gradual unfreezing per epoch needs the number of optimizer steps per epoch (a dataset with a "
                "length); with an iterable dataset set `unfreeze_every_n_steps` or `unfreeze_at_fractions`."
            )
        starts = [interval * stage for stage in range(1, num_groups)]
    return [start for start in starts if 0 < start < max_steps][: num_groups - 1]


# The named schedules of `unfreezing_plan`, with what each does.
UNFREEZING_SCHEDULES = {
    "auto": "one more group per epoch when there are at least as many epochs as groups (the paper); otherwise the "
    "first stages share the first half of the steps and every group trains in the second half",
    "per_epoch": "one more group per epoch (the paper); refused when the epochs run out before every group trains",
    "fastai_imdb": "fastai's IMDb tutorial: 1 epoch with the top group at the top rate lr, 1 with two groups at lr/2, "
    "1 with three at lr/4, then every group for 2 epochs at lr/20, each stage its own one-cycle (as shares of the run) "
    "starting from a cleared optimizer state (fastai's freeze_to clears it)",
    "partial": "one more group per epoch (or at the given steps or fractions) even when that leaves the lowest groups "
    "frozen at the end",
}
# fastai's IMDb tutorial for the classifier: fit_one_cycle(1, 2e-2); freeze_to(-2), fit_one_cycle(1, slice(1e-2 /
# 2.6**4, 1e-2)); freeze_to(-3), fit_one_cycle(1, slice(5e-3 / 2.6**4, 5e-3)); unfreeze(), fit_one_cycle(2,
# slice(1e-3 / 2.6**4, 1e-3)). Epochs, trainable groups (None: all) and peak rates as shares of the first.
FASTAI_IMDB_STAGES = ((1, 1, 1.0), (1, 2, 0.5), (1, 3, 0.25), (2, None, 0.05))


@dataclass(frozen=True)
class UnfreezingStage:
    """One stage of gradual unfreezing: optimizer steps `[start, end)`, during which the top `num_trainable_groups`
    layer groups train, with a peak rate of `peak_scale` times `learning_rate`."""

    start: int
    end: int
    num_trainable_groups: int
    peak_scale: float = 1.0


def unfreezing_plan(
    num_groups: int,
    max_steps: int,
    steps_per_epoch: int | None = None,
    schedule: str = "auto",
    every_n_steps: int | None = None,
    at_fractions: Sequence[float] | None = None,
) -> list[UnfreezingStage]:
    """The stages of gradual unfreezing for a run of `max_steps` optimizer steps, in order.

    Args:
        num_groups (`int`): the number of layer groups.
        max_steps (`int`): the optimizer steps of the run.
        steps_per_epoch (`int`, *optional*): optimizer steps per epoch (per-epoch schedules need it).
        schedule (`str`, defaults to `"auto"`): one of `UNFREEZING_SCHEDULES`.
        every_n_steps (`int`, *optional*), at_fractions (`Sequence[float]`, *optional*): your own stage starts,
            every N steps or at these fractions of the run (with `"auto"`, `"per_epoch"` or `"partial"`).

    Raises:
        `ValueError`: the schedule would leave layer groups frozen at the end of the run (unless `"partial"`).

    Example:

    ```python
    >>> [(s.start, s.num_trainable_groups) for s in unfreezing_plan(5, max_steps=40, steps_per_epoch=10)]
    [(0, 1), (5, 2), (10, 3), (15, 4), (20, 5)]
    >>> [(s.start, s.num_trainable_groups) for s in unfreezing_plan(3, max_steps=40, steps_per_epoch=10)]
    [(0, 1), (10, 2), (20, 3)]
    ```
    """
    if schedule not in UNFREEZING_SCHEDULES:
        raise ValueError(f"unfreezing schedule must be one of {sorted(UNFREEZING_SCHEDULES)}, got {schedule!r}.")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    if schedule == "fastai_imdb":
        if every_n_steps is not None or at_fractions is not None:
            raise ValueError(
                "The fastai_imdb schedule fixes its own stages: leave unfreeze_every_n_steps and "
                "unfreeze_at_fractions unset."
            )
        total_epochs = sum(epochs for epochs, _, _ in FASTAI_IMDB_STAGES)
        stages, done = [], 0
        for epochs, groups, scale in FASTAI_IMDB_STAGES:
            start = round(done / total_epochs * max_steps)
            done += epochs
            end = round(done / total_epochs * max_steps)
            trainable = num_groups if groups is None else min(groups, num_groups)
            if end > start:
                stages.append(UnfreezingStage(start, end, trainable, scale))
        return stages
    explicit = every_n_steps is not None or at_fractions is not None
    # The paper's one group per epoch when the last stage, with every group, still gets a whole epoch.
    enough_epochs = steps_per_epoch is not None and max_steps >= steps_per_epoch * num_groups
    if schedule == "auto" and not explicit and not enough_epochs:
        # Fewer epochs than groups: the first num_groups - 1 stages share the first half of the run.
        starts = (
            [round(k * max_steps / (2 * (num_groups - 1))) for k in range(1, num_groups)] if num_groups > 1 else []
        )
        starts = [max(start, 1) for start in starts]
    else:
        starts = unfreezing_stage_starts(num_groups, max_steps, steps_per_epoch, every_n_steps, at_fractions)
        if len(starts) < num_groups - 1 and schedule != "partial":
            how = (
                f"every {every_n_steps} steps"
                if every_n_steps is not None
                else f"at fractions {list(at_fractions)}"
                if at_fractions is not None
                else f"one group per epoch of {steps_per_epoch} steps"
            )
            raise ValueError(
                f"Gradual unfreezing {how} reaches only {len(starts) + 1} of {num_groups} layer groups in "
                f"{max_steps} steps: the lowest {num_groups - 1 - len(starts)} would never train. Use the 'auto' "
                "schedule (it spreads the stages over the steps), more epochs, or unfreezing_schedule='partial' to "
                "keep them frozen on purpose."
            )
    bounds = [0, *starts, max_steps]
    stages = []
    for index in range(len(bounds) - 1):
        if bounds[index + 1] > bounds[index]:
            stages.append(UnfreezingStage(bounds[index], bounds[index + 1], index + 1))
        elif stages:  # two starts at the same step: that stage unfreezes two groups at once
            stages[-1] = UnfreezingStage(stages[-1].start, stages[-1].end, index + 1)
    return stages


def num_trainable_groups_in(plan: Sequence[UnfreezingStage], step: int) -> int:
    """How many top layer groups train at optimizer step `step` of `plan`."""
    for stage in plan:
        if step < stage.end:
            return stage.num_trainable_groups
    return plan[-1].num_trainable_groups


def describe_unfreezing_plan(
    plan: Sequence[UnfreezingStage], groups: Sequence[LayerGroup], steps_per_epoch: int | None = None
) -> str:
    """The plan as printed before training: one line per stage with its steps, epochs, groups and peak rate."""
    lines = [f"Gradual unfreezing over {plan[-1].end} optimizer steps, {len(groups)} layer groups (bottom to top):"]
    for stage in plan:
        trainable = [group.name for group in groups[len(groups) - stage.num_trainable_groups :]]
        when = f"steps {stage.start}-{stage.end - 1}"
        if steps_per_epoch:
            when += f" (epochs {stage.start / steps_per_epoch:.2f}-{stage.end / steps_per_epoch:.2f})"
        rate = "" if stage.peak_scale == 1.0 else f", peak rate x{stage.peak_scale:g}"
        names = ", ".join(trainable) if len(trainable) <= 4 else f"{trainable[0]} ... {trainable[-1]}"
        lines.append(f"  {when}: {stage.num_trainable_groups} of {len(groups)} train ({names}){rate}")
    return "\n".join(lines)


def num_trainable_groups_at(step: int, stage_starts: Sequence[int]) -> int:
    """How many top layer groups train at optimizer step `step` (from 0), given `unfreezing_stage_starts`."""
    return 1 + sum(start <= step for start in stage_starts)


class GradualUnfreezingCallback(TrainerCallback, ExportableState):
    """Train the top layer group first and unfreeze one more group at each stage, down to the embeddings.

    Use it with `ULMFiTTrainer` (which adds it when `gradual_unfreezing=True`) or with a plain `Trainer` on one
    process. Under DDP with a plain `Trainer`, frozen gradients are dropped only after gradient clipping, so the
    clipping norm counts them; `ULMFiTTrainer` drops them before.

    Args:
        every_n_steps (`int`, *optional*): unfreeze one more group every this many optimizer steps instead of every
            epoch.
        at_fractions (`Sequence[float]`, *optional*): unfreeze one more group at each of these fractions of the run.
        groups (`Sequence[str | Sequence[str]]`, *optional*): custom layer-group patterns (see `layer_groups`);
            the default groups of the model otherwise.
        schedule (`str`, defaults to `"auto"`): one of `UNFREEZING_SCHEDULES` (see `unfreezing_plan`).
        freeze_method (`str`, defaults to `"auto"`): `"requires_grad"` (frozen groups cost no backward; one
            process, or DDP with `find_unused_parameters=True`), `"drop_grads"` (keeps every parameter in the
            autograd graph and drops frozen gradients before the step; safe under any wrapper), or `"auto"`:
            `"requires_grad"` on one process; with more than one process `"drop_grads"` until `ULMFiTTrainer`
            shows the callback the wrapped model (`use_wrapped_model`), then what `freeze_method_for` says.

    Example:

    ```python
    >>> from tl_nlp import GradualUnfreezingCallback
    >>> callback = GradualUnfreezingCallback(every_n_steps=100)
    >>> # Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback]).train()
    ```
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        at_fractions: Sequence[float] | None = None,
        groups: Sequence[str | Sequence[str]] | None = None,
        freeze_method: str = "auto",
        schedule: str = "auto",
    ):
        if every_n_steps is not None and at_fractions is not None:
            raise ValueError("Give at most one of every_n_steps and at_fractions (per epoch when neither is given).")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        if at_fractions is not None:
            fractions = list(at_fractions)
            if not fractions or any(not 0 < f < 1 for f in fractions) or fractions != sorted(set(fractions)):
                raise ValueError(f"at_fractions must be strictly increasing values in (0, 1), got {fractions}.")
        if schedule not in UNFREEZING_SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(UNFREEZING_SCHEDULES)}, got {schedule!r}.")
        if schedule == "fastai_imdb" and (every_n_steps is not None or at_fractions is not None):
            raise ValueError(
                "The fastai_imdb schedule fixes its own stages: give neither every_n_steps nor at_fractions."
            )
        if freeze_method not in FREEZE_METHODS:
            raise ValueError(f"freeze_method must be one of {FREEZE_METHODS}, got {freeze_method!r}.")
        self.every_n_steps = every_n_steps
        self.at_fractions = list(at_fractions) if at_fractions is not None else None
        self.groups = groups
        self.freeze_method = freeze_method
        self.schedule = schedule
        self.num_trainable_groups: int | None = None
        self.plan: list[UnfreezingStage] = []
        self._layer_groups: list[LayerGroup] = []
        self._parameters: dict[str, nn.Parameter] = {}
        self._trainable_at_start: set[str] = set()
        self._frozen: list[nn.Parameter] = []
        self._method = "requires_grad"
        self._wrapped_model: nn.Module | None = None

    # ---- schedule -------------------------------------------------------------------------------------------------

    def unfreezing_plan(self, num_groups: int, max_steps: int, steps_per_epoch: int | None) -> list[UnfreezingStage]:
        """The stages of a run with this callback's schedule (see `unfreezing_plan`)."""
        return unfreezing_plan(
            num_groups, max_steps, steps_per_epoch, self.schedule, self.every_n_steps, self.at_fractions
        )

    @property
    def num_layer_groups(self) -> int:
        """The model's layer groups (0 before training begins)."""
        return len(self._layer_groups)

    @property
    def freeze_method_in_use(self) -> str:
        """`"requires_grad"` or `"drop_grads"`: how groups are frozen in the current run (resolved from `"auto"`)."""
        return self._method

    @property
    def frozen_parameters(self) -> list[nn.Parameter]:
        """The parameters frozen at the current stage."""
        return self._frozen

    def use_wrapped_model(self, wrapped_model: nn.Module) -> None:
        """With `freeze_method="auto"`, freeze the way `wrapped_model` allows (`freeze_method_for`): under DDP with
        unused-parameter detection, by `requires_grad`, so that frozen groups cost no backward. `ULMFiTTrainer` calls
        it with the model its training step runs; a change of method re-applies the current stage."""
        if self.freeze_method != "auto" or wrapped_model is self._wrapped_model:
            return
        self._wrapped_model = wrapped_model
        method = freeze_method_for(wrapped_model)
        if method != self._method and self.num_trainable_groups is not None:
            self._method = method
            stage, self.num_trainable_groups = self.num_trainable_groups, None
            self._apply_stage(stage)

    def drop_frozen_gradients(self) -> None:
        """Set the gradient of every frozen parameter to `None`, so that the optimizer skips it entirely."""
        for parameter in self._frozen:
            parameter.grad = None

    def summary(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str:
        """The layer-group table (see `layer_group_summary`) at the current stage."""
        return layer_group_summary(model, self._layer_groups, optimizer, self.num_trainable_groups)

    def _apply_stage(self, num_trainable_groups: int) -> bool:
        """Freezes all but the top `num_trainable_groups` groups; returns whether the stage changed."""
        num_trainable_groups = min(num_trainable_groups, len(self._layer_groups))
        if num_trainable_groups == self.num_trainable_groups:
            return False
        self.num_trainable_groups = num_trainable_groups
        first_trainable = len(self._layer_groups) - num_trainable_groups
        frozen_names = [
            name
            for group in self._layer_groups[:first_trainable]
            for name in group.parameter_names
            if name in self._trainable_at_start
        ]
        frozen_set = set(frozen_names)
        self._frozen = [self._parameters[name] for name in frozen_names]
        for name in self._trainable_at_start:
            parameter = self._parameters[name]
            if self._method == "requires_grad":
                parameter.requires_grad_(name not in frozen_set)
            if name in frozen_set:
                parameter.grad = None
        logger.info(
            "Gradual unfreezing: %d of %d layer groups train from here on.",
            num_trainable_groups,
            len(self._layer_groups),
        )
        return True

    # ---- TrainerCallback events -----------------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        model = kwargs["model"]
        self._layer_groups = layer_groups(model, self.groups)
        self._parameters = dict(model.named_parameters())
        self._trainable_at_start = {name for name, parameter in self._parameters.items() if parameter.requires_grad}
        self._wrapped_model = None
        if self.freeze_method == "auto":
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            self._method = "drop_grads" if distributed and torch.distributed.get_world_size() > 1 else "requires_grad"
        else:
            self._method = self.freeze_method
        steps_per_epoch = None
        dataloader = kwargs.get("train_dataloader")
        try:
            batches = len(dataloader)
            steps_per_epoch = batches // args.gradient_accumulation_steps + int(
                batches % args.gradient_accumulation_steps > 0
            )
        except TypeError:
            pass
        self.plan = self.unfreezing_plan(len(self._layer_groups), state.max_steps, steps_per_epoch)
        if getattr(state, "is_world_process_zero", True):
            print(describe_unfreezing_plan(self.plan, self._layer_groups, steps_per_epoch))
        # Force `_apply_stage` to (re)apply: the stage is a pure function of the step, so a resumed run lands in the
        # stage it was interrupted in.
        self.num_trainable_groups = None
        self._apply_stage(num_trainable_groups_in(self.plan, state.global_step))
        if state.global_step > 0 and any(stage.start == state.global_step for stage in self.plan):
            # Resumed exactly where a stage begins: the uninterrupted run cleared the state here.
            self._clear_optimizer_state_for_a_new_stage(kwargs.get("optimizer"))

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._apply_stage(num_trainable_groups_in(self.plan, state.global_step)):
            self._clear_optimizer_state_for_a_new_stage(kwargs.get("optimizer"))

    def _clear_optimizer_state_for_a_new_stage(self, optimizer: torch.optim.Optimizer | None) -> None:
        # fastai's `Learner.freeze_to` clears the optimizer state (moments and step counts): each stage of its
        # tutorial starts Adam afresh. The fastai_imdb schedule does the same; the others keep the state.
        if self.schedule == "fastai_imdb" and optimizer is not None:
            optimizer.state.clear()

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.drop_frozen_gradients()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # Leave the model as we found it, so that a later `train()` or optimizer sees every parameter.
        for name in self._trainable_at_start:
            self._parameters[name].requires_grad_(True)
        self._frozen = []

    # ---- ExportableState --------------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "args": {
                "every_n_steps": self.every_n_steps,
                "at_fractions": self.at_fractions,
                "groups": self.groups,
                "freeze_method": self.freeze_method,
                "schedule": self.schedule,
            },
            "attributes": {"num_trainable_groups": self.num_trainable_groups},
        }
