"""Stopping a run whose loss turns NaN or infinite before the bad values reach the weights or a checkpoint, and
naming the checkpoint to go back to.

Which checkpoint is "the last good one": the checkpoint of the highest step that (1) this run saved (or resumed
from), before the failing step: a `checkpoint-N` that an earlier run left in the folder says nothing about this
one, and (2) was not already diverging: the training loss last logged at or before its step is finite and at most
`divergence_factor` (4, fastai's `LRFinder` stopping rule) times the lowest loss this run had logged up to then.
A checkpoint with no logged loss before it is judged by (1) alone.
"""

from __future__ import annotations

import math
import os

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


class NonFiniteLossError(RuntimeError):
    """Training stopped because its loss (or gradient) turned NaN or infinite."""


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first optimizer step whose gradients are NaN or infinite (what a NaN or infinite loss
    leaves behind), before that step changes any weight, and stops any checkpoint from being written after it: the
    last checkpoint saved before it is the last good one.

    After `trainer.train()` returns, `message` says what happened (the step, the learning rate of each parameter
    group, the last good checkpoint: see the module's docstring for the rule) or is `None`; `raise_if_stopped()`
    raises [`NonFiniteLossError`] with it. Works with any `Trainer` (the step is skipped by dropping the gradients, so the optimizer leaves every parameter
    as it was).

    Example:

    ```python
    >>> guard = NonFiniteLossCallback()
    >>> trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[guard])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    >>> guard.raise_if_stopped()  # doctest: +SKIP
    ```

    Args:
        divergence_factor: a checkpoint whose last logged training loss exceeds this many times the lowest loss
            logged before it is not called good (fastai's `LRFinder` stops at 4x the best loss).
    """

    def __init__(self, divergence_factor: float = 4.0) -> None:
        if not divergence_factor > 1:
            raise ValueError(f"divergence_factor must be above 1, got {divergence_factor}.")
        self.divergence_factor = divergence_factor
        self.message: str | None = None
        self.step: int | None = None
        self.learning_rates: list[float] | None = None
        # (step, loss) of each logged training loss, and (step, verdict) of each checkpoint of this run.
        self.logged_losses: list[tuple[int, float]] = []
        self.checkpoints: list[tuple[int, str | None]] = []

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.message = self.step = self.learning_rates = None
        self.logged_losses = []
        # A resumed run starts from the checkpoint of its first step (it held finite weights to get here).
        self.checkpoints = [(state.global_step, None)] if state.global_step > 0 else []

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.checkpoints.append((state.global_step, self._divergence(state.global_step)))

    def _divergence(self, step: int) -> str | None:
        """Why the checkpoint of `step` is not good (its loss diverged), or None."""
        losses = [loss for logged_step, loss in self.logged_losses if logged_step <= step]
        if not losses:
            return None
        last, best = losses[-1], min(losses)
        if not math.isfinite(last):
            return f"its loss was {last}"
        if last > self.divergence_factor * best:
            return f"its loss {last:.3g} was over {self.divergence_factor:g}x the lowest, {best:.3g}"
        return None

    def last_good_checkpoint(self, output_dir: str, before_step: int) -> tuple[str | None, list[str]]:
        """The last good checkpoint of this run saved before `before_step` (a folder that still exists), and why
        later ones of this run were passed over."""
        passed_over = []
        for step, divergence in reversed(self.checkpoints):
            folder = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
            if step >= before_step or not os.path.isdir(folder):
                continue
            if divergence is not None:
                passed_over.append(f"{PREFIX_CHECKPOINT_DIR}-{step} ({divergence})")
                continue
            return folder, passed_over
        return None, passed_over

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
        rates = ", ".join(f"{rate:.3g}" for rate in self.learning_rates) or "unknown"
        self.message = (
            f"the loss turned NaN or infinite at step {self.step} (learning rate {max(self.learning_rates or [0]):.3g}; "
            f"per parameter group: {rates}); training stopped before that step changed the weights. "
            + self._checkpoint_sentence(args.output_dir, self.step)
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
        if isinstance(loss, (int, float)):
            self.logged_losses.append((state.global_step, float(loss)))
        if self.message is None and isinstance(loss, float) and not math.isfinite(loss):
            self.step = state.global_step
            self.message = (
                f"the logged training loss is {loss} at step {state.global_step}; training stopped. "
                + self._checkpoint_sentence(args.output_dir, state.global_step)
            ).strip()
            control.should_training_stop = True
            self._no_more_writes(control)

    def _checkpoint_sentence(self, output_dir: str, step: int) -> str:
        last, passed_over = self.last_good_checkpoint(output_dir, step)
        skipped = f" (not {', '.join(passed_over)})" if passed_over else ""
        if last is not None:
            return f"Last good checkpoint: {last}{skipped}. "
        return f"This run saved no good {PREFIX_CHECKPOINT_DIR}-* before it{skipped}. "

    @staticmethod
    def _no_more_writes(control: TrainerControl) -> None:
        control.should_save = False
        control.should_evaluate = False

    def raise_if_stopped(self) -> None:
        """Raises [`NonFiniteLossError`] with `message` if training was stopped by a non-finite loss."""
        if self.message is not None:
            raise NonFiniteLossError(self.message)
