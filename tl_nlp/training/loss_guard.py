"""Stopping a run whose loss turns NaN or infinite before the bad values reach the weights or a checkpoint."""

from __future__ import annotations

import math
import os

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint


class NonFiniteLossError(RuntimeError):
    """Training stopped because its loss (or gradient) turned NaN or infinite."""


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first optimizer step whose gradients are NaN or infinite (what a NaN or infinite loss
    leaves behind), before that step changes any weight, and stops any checkpoint from being written after it: the
    last checkpoint saved before it is the last good one.

    After `trainer.train()` returns, `message` says what happened (the step, the learning rate of each parameter
    group, the last good checkpoint) or is `None`; `raise_if_stopped()` raises [`NonFiniteLossError`] with it.
    Works with any `Trainer` (the step is skipped by dropping the gradients, so the optimizer leaves every parameter
    as it was).

    Example:

    ```python
    >>> guard = NonFiniteLossCallback()
    >>> trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[guard])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    >>> guard.raise_if_stopped()  # doctest: +SKIP
    ```
    """

    def __init__(self) -> None:
        self.message: str | None = None
        self.step: int | None = None
        self.learning_rates: list[float] | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.message = self.step = self.learning_rates = None

    def on_pre_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs,
    ):
        if model is None or self.message is not None:
            return
        gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        # One host-device sync per step (not one per parameter): this runs at every optimizer step.
        if not gradients or bool(torch.stack([torch.isfinite(gradient).all() for gradient in gradients]).all()):
            return
        # The step that would apply these gradients is `global_step + 1` (global_step counts completed steps).
        self.step = state.global_step + 1
        self.learning_rates = [group["lr"] for group in optimizer.param_groups] if optimizer is not None else []
        # Without gradients the optimizer skips every parameter: the weights stay those of the last good step.
        for parameter in model.parameters():
            parameter.grad = None
        last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        rates = ", ".join(f"{rate:.3g}" for rate in self.learning_rates) or "unknown"
        self.message = (
            f"the loss turned NaN or infinite at step {self.step} (learning rate {max(self.learning_rates or [0]):.3g}; "
            f"per parameter group: {rates}); training stopped before that step changed the weights. "
            + (f"Last good checkpoint: {last}. " if last else f"No {PREFIX_CHECKPOINT_DIR}-* was saved before it. ")
            + "Lower the learning rate (try `tl-nlp lr-find`), or clip gradients with max_grad_norm."
        )
        control.should_training_stop = True
        self._no_more_writes(control)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.message is not None:
            self._no_more_writes(control)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.message is not None:
            self._no_more_writes(control)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        # Trainer replaces a NaN step loss by the running mean in its logs (logging_nan_inf_filter); a loss that is
        # NaN in the log nevertheless (filter off) stops too, without a checkpoint after it.
        loss = (logs or {}).get("loss")
        if self.message is None and isinstance(loss, float) and not math.isfinite(loss):
            self.step = state.global_step
            self.message = f"the logged training loss is {loss} at step {state.global_step}; training stopped."
            control.should_training_stop = True
            self._no_more_writes(control)

    @staticmethod
    def _no_more_writes(control: TrainerControl) -> None:
        control.should_save = False
        control.should_evaluate = False

    def raise_if_stopped(self) -> None:
        """Raises [`NonFiniteLossError`] with `message` if training was stopped by a non-finite loss."""
        if self.message is not None:
            raise NonFiniteLossError(self.message)
