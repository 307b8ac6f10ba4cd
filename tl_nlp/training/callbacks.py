"""Gradual unfreezing (ULMFiT section 3.3) as a `TrainerCallback`.

Training starts with only the top layer group trainable; one more group is unfrozen at each stage boundary (every
epoch, every N optimizer steps, or at given fractions of training) until the embeddings train too.

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
    else:
        interval = every_n_steps if every_n_steps is not None else steps_per_epoch
        if interval is None or interval < 1:
            raise ValueError(
                "Gradual unfreezing per epoch needs the number of optimizer steps per epoch (a dataset with a "
                "length); with an iterable dataset set `unfreeze_every_n_steps` or `unfreeze_at_fractions`."
            )
        starts = [interval * stage for stage in range(1, num_groups)]
    return [start for start in starts if 0 < start < max_steps][: num_groups - 1]


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
    ):
        if every_n_steps is not None and at_fractions is not None:
            raise ValueError("Give at most one of every_n_steps and at_fractions (per epoch when neither is given).")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        if at_fractions is not None:
            fractions = list(at_fractions)
            if not fractions or any(not 0 < f < 1 for f in fractions) or fractions != sorted(set(fractions)):
                raise ValueError(f"at_fractions must be strictly increasing values in (0, 1), got {fractions}.")
        if freeze_method not in FREEZE_METHODS:
            raise ValueError(f"freeze_method must be one of {FREEZE_METHODS}, got {freeze_method!r}.")
        self.every_n_steps = every_n_steps
        self.at_fractions = list(at_fractions) if at_fractions is not None else None
        self.groups = groups
        self.freeze_method = freeze_method
        self.num_trainable_groups: int | None = None
        self._layer_groups: list[LayerGroup] = []
        self._stage_starts: list[int] = []
        self._parameters: dict[str, nn.Parameter] = {}
        self._trainable_at_start: set[str] = set()
        self._frozen: list[nn.Parameter] = []
        self._method = "requires_grad"
        self._wrapped_model: nn.Module | None = None

    # ---- schedule -------------------------------------------------------------------------------------------------

    def stage_starts(self, num_groups: int, max_steps: int, steps_per_epoch: int | None) -> list[int]:
        """The steps at which each later stage begins, with this callback's schedule (see `unfreezing_stage_starts`)."""
        return unfreezing_stage_starts(num_groups, max_steps, steps_per_epoch, self.every_n_steps, self.at_fractions)

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

    def _apply_stage(self, num_trainable_groups: int) -> None:
        num_trainable_groups = min(num_trainable_groups, len(self._layer_groups))
        if num_trainable_groups == self.num_trainable_groups:
            return
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
        self._stage_starts = self.stage_starts(len(self._layer_groups), state.max_steps, steps_per_epoch)
        # Force `_apply_stage` to (re)apply: the stage is a pure function of the step, so a resumed run lands in the
        # stage it was interrupted in.
        self.num_trainable_groups = None
        self._apply_stage(num_trainable_groups_at(state.global_step, self._stage_starts))

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._apply_stage(num_trainable_groups_at(state.global_step, self._stage_starts))

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
            },
            "attributes": {"num_trainable_groups": self.num_trainable_groups},
        }
