"""`LanguageModelTrainer`: `ULMFiTTrainer` for recurrent language models read as contiguous streams.

It reads [`LanguageModelStreams`] without Trainer's samplers or Accelerate's batch sharding (which would break the
streams), carries the recurrent state from one window to the next (detached, reset at each epoch start and at the
start of every evaluation), and scales the learning rate of each optimizer step by the window length when the
streams use variable BPTT. Other datasets go through `ULMFiTTrainer` unchanged (masked-LM or packed causal-LM
batches for transformer models, see `tl_nlp.data.lm_data`).
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import EvalLoopOutput

from ..data.lm_data import IGNORE_INDEX, LanguageModelDataLoader, LanguageModelStreams
from .trainer import ULMFiTTrainer

CARRIED_STATE_FILE = "carried_state_rank{rank}.safetensors"


class LanguageModelTrainer(ULMFiTTrainer):
    """A `ULMFiTTrainer` that trains and evaluates stateful language models (AWD-LSTM) on [`LanguageModelStreams`].

    - `get_train_dataloader` / `get_eval_dataloader` return the streams' own dataloader: under DDP each process
      already reads its own `batch_size` contiguous streams, so nothing is sharded or re-sampled.
    - `compute_loss` passes the state of the previous window as `state=` and keeps the new one detached; a window
      marked `reset_state` (the first of an epoch or of an evaluation) starts from zeros. Training and evaluation keep
      separate states.
    - With `variable_bptt=True` streams, each optimizer step's learning rate is multiplied by the mean window length
      over `bptt` of its batches (AWD-LSTM's rule), and restored after the step.
    - With streams, `label_names` defaults to `["shift_labels"]`, so evaluation reports `eval_loss`: the mean
      negative log-likelihood over every target token of the evaluation streams (summed over all processes under
      DDP, each token counted once), and `eval_perplexity`, its exponential; the same number as
      [`stream_perplexity`] on one process.
    - Checkpoints hold the training state carried between windows (`carried_state_rank{N}.safetensors`, one per
      process: each reads its own rows), and a run resumed mid-epoch restarts from it at the next window of the same
      epoch's stream, so it ends with the weights of an uninterrupted run (Trainer's own resume would skip the
      windows with the wrong epoch's order and restart the state from zeros).
    - Gradient accumulation over streams sums the gradients of consecutive windows of the same rows (the state is
      carried between them): a step then sees `gradient_accumulation_steps` times more tokens of each stream, which
      is not the same update as more streams per batch (a larger `batch_size`).

    Args:
        *args, **kwargs: as for `ULMFiTTrainer`.

    Example:

    ```python
    >>> streams = LanguageModelStreams.from_dataset(tokenized_train, batch_size=64, bptt=70)  # doctest: +SKIP
    >>> trainer = LanguageModelTrainer(model=model, args=args, train_dataset=streams, eval_dataset=valid_streams)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        eval_datasets = self.eval_dataset.values() if isinstance(self.eval_dataset, dict) else [self.eval_dataset]
        streams = [d for d in [self.train_dataset, *eval_datasets] if isinstance(d, LanguageModelStreams)]
        for dataset in streams:
            if (dataset.process_index, dataset.num_processes) != (self.args.process_index, self.args.world_size):
                raise ValueError(
                    f"LanguageModelStreams built for process {dataset.process_index} of {dataset.num_processes}, but "
                    f"this is process {self.args.process_index} of {self.args.world_size}: every process would read "
                    "the wrong rows. Build the streams after the training arguments (creating them starts the "
                    "process group), or pass process_index= and num_processes=."
                )
        if self.args.label_names is None and streams:
            # Stream batches carry their targets as `shift_labels`; evaluation needs them to report a loss.
            self.label_names = ["shift_labels"]
        self.carried_state: dict[bool, tuple | None] = {True: None, False: None}
        # Evaluation over streams: summed negative log-likelihood and number of target tokens on this process.
        self.eval_totals = torch.zeros(2, dtype=torch.float64)
        self.window_lr_scales: list[float] = []
        self.add_callback(WindowLearningRateCallback(self))

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if isinstance(self.train_dataset, LanguageModelStreams):
            return self.train_dataset.dataloader(
                num_workers=self.args.dataloader_num_workers,
                # As Trainer does: pinning means nothing (and torch warns) without an accelerator.
                pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
            )
        return super().get_train_dataloader()

    def get_resumed_dataloader(self, dataloader: torch.utils.data.DataLoader, num_batches: int):
        if isinstance(dataloader, LanguageModelDataLoader):
            return ResumedLanguageModelDataLoader(dataloader.dataset, num_batches)
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _save_rng_state(self, output_dir: str) -> None:
        # Trainer saves the random states into the checkpoint folder before `trainer_state.json`, the file that makes
        # a checkpoint complete; the carried state goes in with them.
        super()._save_rng_state(output_dir)
        state = self.carried_state[True]
        if state is None:
            return
        tensors = {}
        for layer, (hidden, cell) in enumerate(state):
            tensors[f"layer{layer}.hidden"] = hidden.contiguous().cpu()
            tensors[f"layer{layer}.cell"] = cell.contiguous().cpu()
        save_file(tensors, os.path.join(output_dir, CARRIED_STATE_FILE.format(rank=self.args.process_index)))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, CARRIED_STATE_FILE.format(rank=self.args.process_index))
        if not os.path.isfile(path):
            # A checkpoint from an epoch end (the next window resets the state anyway) or from another trainer.
            self.carried_state[True] = None
            return
        # Read on the CPU (safetensors does not take every torch device string, e.g. "cpu:0"), then moved.
        tensors = {name: tensor.to(self.args.device) for name, tensor in load_file(path).items()}
        self.carried_state[True] = tuple(
            (tensors[f"layer{layer}.hidden"], tensors[f"layer{layer}.cell"]) for layer in range(len(tensors) // 2)
        )

    def get_eval_dataloader(self, eval_dataset: str | Any | None = None) -> torch.utils.data.DataLoader:
        dataset = eval_dataset
        if isinstance(eval_dataset, str):
            dataset = self.eval_dataset[eval_dataset]
        elif eval_dataset is None:
            dataset = self.eval_dataset
        if isinstance(dataset, LanguageModelStreams):
            if dataset.shuffle:
                raise ValueError(
                    "evaluation streams must be built with shuffle=False so that the loss is deterministic."
                )
            return dataset.dataloader(num_workers=self.args.dataloader_num_workers)
        return super().get_eval_dataloader(eval_dataset)

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if (
            num_items_in_batch is None
            and self.model_accepts_loss_kwargs
            and batch_samples
            and "shift_labels" in batch_samples[0]
            and "labels" not in batch_samples[0]
        ):
            # Trainer counts target tokens only in batches that carry `labels`; stream batches carry
            # `shift_labels`. Without the count each process (and each accumulated window) would average its own
            # tokens, and a process holding the stream's padded tail would weigh its tokens more.
            num_items_in_batch = sum(int((batch["shift_labels"] != IGNORE_INDEX).sum()) for batch in batch_samples)
            num_items_in_batch = torch.tensor(num_items_in_batch, device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                num_items_in_batch = self.accelerator.gather(num_items_in_batch).sum()
        return batch_samples, num_items_in_batch

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None
    ):
        if "reset_state" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        reset_state = inputs.pop("reset_state")
        lr_scale = inputs.pop("lr_scale")
        training = model.training
        state = None if reset_state else self.carried_state[training]
        loss, outputs = super().compute_loss(
            model,
            {**inputs, "state": state, "use_cache": True},
            return_outputs=True,
            num_items_in_batch=num_items_in_batch,
        )
        # Detached: gradients stop at the window edge (truncated BPTT), the values carry on.
        self.carried_state[training] = tuple((h.detach(), c.detach()) for h, c in outputs.state)
        if training:
            self.window_lr_scales.append(float(lr_scale))
        else:
            # The model's loss is the mean over this window's target tokens; windows differ in how many they hold
            # (the last is shorter, the padded tail has none), so the evaluation loss is weighted by tokens.
            num_targets = (inputs["shift_labels"] != IGNORE_INDEX).sum()
            self.eval_totals += torch.stack([loss.detach().double().cpu() * num_targets.cpu(), num_targets.cpu()])
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(
        self,
        dataloader: torch.utils.data.DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        self.eval_totals = torch.zeros(2, dtype=torch.float64)
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if isinstance(dataloader.dataset, LanguageModelStreams):
            # Each process read its own rows of the streams: the sums over processes cover every token once.
            totals = self.accelerator.reduce(self.eval_totals.to(self.args.device), reduction="sum").cpu()
            if totals[1] > 0:
                loss = float(totals[0] / totals[1])
                output.metrics[f"{metric_key_prefix}_loss"] = loss
                output.metrics[f"{metric_key_prefix}_perplexity"] = math.exp(loss)
        return output


class ResumedLanguageModelDataLoader(LanguageModelDataLoader):
    """The windows of one epoch of [`LanguageModelStreams`] after the first `skip_windows` (a run resumed mid-epoch).

    Trainer builds it for the resumed epoch only and sets that epoch on it afterwards, so the skipped windows are those
    of the resumed epoch's document order.
    """

    def __init__(self, dataset: LanguageModelStreams, skip_windows: int):
        super().__init__(dataset, batch_size=None)
        self.skip_windows = skip_windows

    def __iter__(self):
        return itertools.islice(self.dataset, self.skip_windows, None)

    def __len__(self) -> int:
        return len(self.dataset) - self.skip_windows


class WindowLearningRateCallback(TrainerCallback):
    """Multiplies every parameter group's learning rate by the step's mean window length / `bptt` around
    `optimizer.step()` (the schedule itself is untouched). A no-op for fixed-length windows (scale 1)."""

    def __init__(self, trainer: LanguageModelTrainer):
        self.trainer = trainer
        self.saved_learning_rates: list[float] | None = None

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        scales = self.trainer.window_lr_scales
        self.trainer.window_lr_scales = []
        scale = sum(scales) / len(scales) if scales else 1.0
        if optimizer is None or scale == 1.0:
            return
        self.saved_learning_rates = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * scale

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self.saved_learning_rates is not None and optimizer is not None:
            for group, learning_rate in zip(optimizer.param_groups, self.saved_learning_rates, strict=True):
                group["lr"] = learning_rate
        self.saved_learning_rates = None


@torch.no_grad()
def stream_perplexity(model: nn.Module, streams: LanguageModelStreams, carry_state: bool = True) -> float:
    """Perplexity of a stateful causal LM over a whole stream: exp of the mean negative log-likelihood over every
    target token (padding excluded), reading the windows in order with the state carried. Deterministic (eval mode,
    streams built with `shuffle=False`).

    Args:
        model: a causal LM whose forward takes `input_ids`, `state` and returns `logits` and `state` (AWD-LSTM).
        streams: validation streams, `shuffle=False`.
        carry_state: carry the state between windows (the standard measure); `False` starts every window from zeros.
    """
    if streams.shuffle:
        raise ValueError("stream_perplexity needs streams built with shuffle=False.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, total_tokens, state = 0.0, 0, None
    for batch in streams:
        if batch["reset_state"] or not carry_state:
            state = None
        outputs = model(input_ids=batch["input_ids"].to(device), state=state, use_cache=True)
        state = outputs.state
        targets = batch["shift_labels"].to(device)
        total_loss += nn.functional.cross_entropy(
            outputs.logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        total_tokens += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return math.exp(total_loss / total_tokens)
