"""`ULMFiTTrainer`: transformers' `Trainer` with discriminative learning rates, STLR, gradual unfreezing and AR/TAR.

It overrides only the narrow hooks: `create_optimizer`, `create_scheduler`, `compute_loss` and `training_step`
(to drop frozen gradients before clipping), plus `set_initial_training_values` to remember the number of steps
per epoch and `_load_from_checkpoint` to refuse resuming a checkpoint with other settings. It never overrides
`train()`. For sharing, `_save` also writes the training record and
`create_model_card` writes the card from it, so `save_model` and `push_to_hub` work as they do for `Trainer`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss, ForMaskedLMLoss
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.trainer_utils import unwrap_peft_model

from .arguments import ULMFiTTrainingArguments, with_model_family_defaults
from .callbacks import GradualUnfreezingCallback
from .distributed_freezing import check_deepspeed_supports_ulmfit, deepspeed_config_of
from .layer_groups import LayerGroup, layer_group_summary, layer_groups
from .model_card import build_model_card, check_hub_folder
from .output_folders import OutputFolderError
from .param_groups import discriminative_param_groups
from .schedules import get_staged_schedule
from .training_record import (
    TRAINING_RECORD_FILE,
    ULMFiTStage,
    ULMFiTTrainingRecord,
    chain_record,
    data_statistics,
    dataset_name_and_split,
    find_starting_point,
    read_training_record,
    run_stage,
    training_objective,
    write_training_record,
)

# The settings that shape a run's batches, rates and frozen groups step by step, as the training record keeps them: a
# run resumed from a checkpoint with one of them changed does not end where the uninterrupted run would (e.g. after
# a default changed between versions). A changed peak rate would not even be used: the checkpoint's scheduler state
# brings back the old one, while the training record would name the new one.
RESUME_SETTINGS = (
    "learning_rate",
    "per_device_train_batch_size",
    "discriminative_lr_decay",
    "use_stlr",
    "stlr_cut_frac",
    "stlr_ratio",
    "gradual_unfreezing",
    "weight_decay",
)


def model_normalizes_loss_by_num_items(model: nn.Module) -> bool:
    """Whether the model's loss divides by the `num_items_in_batch` that the Trainer passes in.

    transformers' Trainer assumes so for every model whose `forward` takes `**kwargs`, unless the model says
    otherwise with an `accepts_loss_kwargs` attribute. Many do not (BERT-style classifiers take `**kwargs` but
    return a plain batch mean): the Trainer then multiplies their loss by the number of processes under DDP and stops
    dividing it by the gradient-accumulation steps, so the logged loss and the gradients come out too large. We
    trust an explicit `accepts_loss_kwargs` (AWD-LSTM's language model sets it), and otherwise only the
    causal-LM and masked-LM losses of transformers, which do use `num_items_in_batch`.
    """
    model = unwrap_peft_model(model)
    if hasattr(model, "accepts_loss_kwargs"):
        return bool(model.accepts_loss_kwargs)
    takes_kwargs = any(
        parameter.kind == inspect.Parameter.VAR_KEYWORD
        for parameter in inspect.signature(model.forward).parameters.values()
    )
    # `loss_type` comes from the class name (`...ForCausalLM`); older names (`GPT2LMHeadModel`) are found through the
    # Auto mappings, whose models all compute their loss with `self.loss_function`.
    token_loss = LOSS_MAPPING.get(getattr(model, "loss_type", None)) in (ForCausalLMLoss, ForMaskedLMLoss)
    class_name = type(model).__name__
    token_loss = token_loss or class_name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) | set(
        MODEL_FOR_MASKED_LM_MAPPING_NAMES.values()
    )
    return takes_kwargs and token_loss


def check_fsdp_supports_layer_groups(accelerator: Any, args: ULMFiTTrainingArguments) -> None:
    """Fails early when FSDP would hide the per-parameter names that layer groups need.

    FSDP1 without `use_orig_params` flattens each wrapped unit into one `FlatParameter`: the optimizer can no longer
    give each layer group its own learning rate, and a group cannot be frozen inside a unit. FSDP2 shards every
    parameter separately (as a DTensor) and keeps their names, so it needs nothing; gradual unfreezing then keeps
    `requires_grad=True` and drops frozen gradients before the step (see `GradualUnfreezingCallback`).

    Args:
        accelerator: the trainer's `accelerate.Accelerator`.
        args: the training arguments (`discriminative_lr_decay`, `gradual_unfreezing`).
    """
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "fsdp_version", 1) != 1 or plugin.use_orig_params:
        return
    if args.gradual_unfreezing or args.discriminative_lr_decay != 1.0:
        raise ValueError(
            "FSDP (fsdp_version: 1) with use_orig_params=False flattens the parameters, so layer groups cannot get "
            "their own learning rates (discriminative_lr_decay) or be frozen (gradual_unfreezing). Set "
            "`fsdp_use_orig_params: true` in the accelerate config (fsdp_config={'use_orig_params': True} in "
            "TrainingArguments), or use `fsdp_version: 2` (accelerate_configs/fsdp.yaml)."
        )


class ULMFiTTrainer(Trainer):
    """A `Trainer` that fine-tunes any model the ULMFiT way.

    - Discriminative learning rates: the optimizer (`args.optim`, AdamW by default) gets one learning rate per layer
      group, `args.learning_rate` for the top group and each lower group the rate above divided by
      `args.discriminative_lr_decay`, with the usual no-weight-decay split inside each group. Every parameter that
      requires a gradient when training starts is in the optimizer. The optimizer lists the top group first, so the
      `learning_rate` that transformers logs is the top group's.
    - Slanted triangular learning rates over the run (or per unfreezing stage) when `args.use_stlr`.
    - Gradual unfreezing when `args.gradual_unfreezing` (a `GradualUnfreezingCallback` is added).
    - AR/TAR for models whose outputs carry `dropped_last_hidden_state` / `raw_last_hidden_state` (AWD-LSTM),
      added to the training gradient only: the logged training loss and the evaluation loss stay the model's plain
      loss. Override `compute_regularization_loss` to change or extend it.
    - The loss is a true mean under DDP and gradient accumulation (see `model_normalizes_loss_by_num_items`).
    - Resuming checks the settings: a checkpoint trained with other `RESUME_SETTINGS` (peak rate, batch size, decay,
      STLR, gradual unfreezing, weight decay) than this run's is refused in one line (`check_checkpoint_settings`), where
      `Trainer` would resume it and end elsewhere than the uninterrupted run.
    - A training record: `save_model(folder)` also writes `ulmfit_training_record.json`, the stages of the record
      in the folder the model was loaded from plus this run's stage (see `training_record`), and `push_to_hub()`
      uploads the output folder with a model card written from that record (`tl_nlp.training.model_card.build_model_card`).

    Args:
        *args, **kwargs: as for `Trainer`; `args` must be a `ULMFiTTrainingArguments`.
        custom_layer_groups (`Sequence[str | Sequence[str]]`, *optional*): layer-group patterns, bottom to top (see
            `tl_nlp.layer_groups`); the model's default groups otherwise.

    Example:

    ```python
    >>> from tl_nlp import ULMFiTTrainer, ULMFiTTrainingArguments
    >>> args = ULMFiTTrainingArguments(output_dir="runs/clas", learning_rate=1e-4, unfreeze_every_n_steps=50)
    >>> trainer = ULMFiTTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    >>> print(trainer.layer_group_summary())  # doctest: +SKIP
    >>> trainer.save_model("runs/clas/final")  # doctest: +SKIP  (weights, tokenizer, ulmfit_training_record.json)
    >>> trainer.push_to_hub()  # doctest: +SKIP  (to args.hub_model_id, with the model card)
    ```
    """

    def __init__(self, *args: Any, custom_layer_groups: Sequence[str | Sequence[str]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, ULMFiTTrainingArguments):
            raise TypeError(
                f"ULMFiTTrainer needs ULMFiTTrainingArguments, got {type(self.args).__name__}: build the arguments "
                "with tl_nlp.ULMFiTTrainingArguments (same fields as TrainingArguments, plus the ULMFiT ones)."
            )
        # The fields left None take the model family's defaults (fastai's for AWD-LSTM), in a copy of the arguments;
        # a Transformer's decay depends on how many layer groups it has.
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.args = with_model_family_defaults(
            self.args, unwrapped, count_groups=lambda: len(layer_groups(unwrapped, custom_layer_groups))
        )
        check_fsdp_supports_layer_groups(self.accelerator, self.args)
        if self.is_deepspeed_enabled:
            check_deepspeed_supports_ulmfit(deepspeed_config_of(self.accelerator), self.args.gradual_unfreezing)
        self.custom_layer_groups = custom_layer_groups
        self.num_update_steps_per_epoch: int | None = None
        self.model_accepts_loss_kwargs = model_normalizes_loss_by_num_items(self.accelerator.unwrap_model(self.model))
        # Read now: saving this run into the folder it started from must not make it its own ancestor.
        self.starting_point = find_starting_point(
            self.accelerator.unwrap_model(self.model), self.args.previous_training_record
        )
        if self.args.gradual_unfreezing and self.unfreezing_callback is None:
            self.add_callback(
                GradualUnfreezingCallback(
                    every_n_steps=self.args.unfreeze_every_n_steps,
                    at_fractions=self.args.unfreeze_at_fractions,
                    groups=custom_layer_groups,
                    schedule=self.args.unfreezing_schedule,
                )
            )

    # ---- helpers --------------------------------------------------------------------------------------------------

    @property
    def unfreezing_callback(self) -> GradualUnfreezingCallback | None:
        """The gradual-unfreezing callback in use (looked up each time: resuming can replace the instance)."""
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, GradualUnfreezingCallback):
                return callback
        return None

    def get_layer_groups(self) -> list[LayerGroup]:
        """The layer groups of the model being trained, bottom to top."""
        return layer_groups(self.model, self.custom_layer_groups)

    def layer_group_summary(self) -> str:
        """A printable table of the layer groups with their current learning rates and frozen state."""
        callback = self.unfreezing_callback
        num_trainable = callback.num_trainable_groups if callback is not None else None
        return layer_group_summary(self.model, self.get_layer_groups(), self.optimizer, num_trainable)

    def training_record(self) -> ULMFiTTrainingRecord | None:
        """What happened in training so far: the record of the model this run started from plus this run's stage.

        The stage takes its hyperparameters from `args`, its objective from the data collator, the streams or the
        model class, its data statistics from `train_dataset`, the epochs and steps actually run from `self.state`,
        and its metrics (last training loss, last evaluation, perplexity for language models) from the log history.
        Returns the earlier record unchanged before the first optimizer step, and None when there is nothing to
        record (no earlier record and no step, or a model that is neither a text classifier nor a language model).
        """
        model = self.accelerator.unwrap_model(self.model)
        objective = training_objective(model, self.train_dataset, self.data_collator)
        if objective is None:
            return None
        stage = run_stage(self.args, self.state, self.train_dataset, objective, self.starting_point)
        callback = self.unfreezing_callback
        if stage.gradual_unfreezing and callback is not None and callback.plan and not stage.unfreeze_every_n_steps:
            # The stages as they were run (the "auto" schedule chooses them from the run's length).
            total = callback.plan[-1].end
            stage = dataclasses.replace(
                stage,
                unfreeze_every_n_steps=None,
                unfreeze_at_fractions=[step.start / total for step in callback.plan[1:]] or None,
                trainable_groups=[step.num_trainable_groups for step in callback.plan],
                num_layer_groups=callback.num_layer_groups or None,
            )
        _, eval_split = dataset_name_and_split(self.eval_dataset)
        return chain_record(self.starting_point, stage, language=self.args.language, eval_split=eval_split)

    def check_checkpoint_settings(self, checkpoint: str) -> None:
        """Refuses to resume `checkpoint` with settings (`RESUME_SETTINGS`) other than those it was trained with, as
        the training record in the checkpoint says; transformers' `Trainer` resumes whatever they are. A checkpoint
        without a record (not written by a `ULMFiTTrainer`) is not checked.

        Raises:
            OutputFolderError: one line naming each changed setting, its value then and now, and the flags that
                resume the run as it was.
        """
        path = Path(checkpoint) / TRAINING_RECORD_FILE
        if not path.is_file():
            return
        saved = read_training_record(path).stages[-1]  # this run's stage when the checkpoint was written
        # As the record is written: the data's own statistics (a language model's stream batch size) win over args.
        statistics = data_statistics(self.train_dataset, saved.objective)
        now = ULMFiTStage.from_training_arguments(
            self.args, name=saved.name, objective=saved.objective, dataset=saved.dataset, **statistics
        )
        changed = [name for name in RESUME_SETTINGS if not _same_setting(getattr(saved, name), getattr(now, name))]
        if changed:
            then = "; ".join(f"{name} {getattr(saved, name)!r} (now {getattr(now, name)!r})" for name in changed)
            flags = " ".join(f"--{name} {_flag_value(getattr(saved, name), name)}" for name in changed)
            raise OutputFolderError(
                f"resume from {checkpoint}: it was trained with {then}, so this run would not end where the "
                f"uninterrupted one would; resume it with {flags}, or start afresh (overwrite_output_dir)."
            )

    # ---- Trainer hooks ----------------------------------------------------------------------------------------------

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        self.check_checkpoint_settings(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            record = self.training_record()
            if record is not None:
                write_training_record(record, output_dir if output_dir is not None else self.args.output_dir)

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Writes `README.md` in `args.output_dir` from the training record (see `tl_nlp.training.model_card.build_model_card`),
        then checks that the folder has what a Hub user needs (code and `auto_map` for AWD-LSTM). `language`,
        `license`, `finetuned_from` and `tags` override or extend the record's; `tasks`, `dataset_tags`, `dataset`
        and `dataset_args` are transformers' and the record already says what they would. peft models, and models
        that are neither text classifiers nor language models, get transformers' card."""
        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model)
        record = self.training_record()
        if record is None or hasattr(model, "get_base_model"):
            return super().create_model_card(
                language, license, tags, model_name, finetuned_from, tasks, dataset_tags, dataset, dataset_args
            )
        overrides = {"language": language, "license": license, "base_model": finetuned_from}
        record = dataclasses.replace(record, **{name: value for name, value in overrides.items() if value is not None})
        output_dir = Path(self.args.output_dir)
        repo_id = self.hub_model_id or self.args.hub_model_id or model_name or output_dir.absolute().name
        card = build_model_card(model, self.processing_class, record, repo_id)
        for tag in [tags] if isinstance(tags, str) else tags or []:
            if tag not in card.data.tags:
                card.data.tags.append(tag)
        card.save(output_dir / "README.md")
        check_hub_folder(output_dir, model, with_tokenizer=self.processing_class is not None)

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        # Remembered for STLR per unfreezing stage, whose stages may be epochs.
        self.num_update_steps_per_epoch = values[1]
        return values

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            param_groups = discriminative_param_groups(
                opt_model,
                lr=self.args.learning_rate,
                decay=self.args.discriminative_lr_decay,
                weight_decay=self.args.weight_decay,
                groups=layer_groups(opt_model, self.custom_layer_groups),
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            if {"params", "model", "optimizer_dict"} & optimizer_kwargs.keys():
                raise ValueError(
                    f"optim={self.args.optim!r} builds its own parameter groups, which would drop the discriminative "
                    "learning rates; use an optimizer that takes parameter groups (adamw_torch, sgd, adafactor, ...)."
                )
            # Top group first: transformers logs the first group's rate as `learning_rate`.
            self.optimizer = optimizer_cls(param_groups[::-1], **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        fastai_imdb = self.args.unfreezing_schedule == "fastai_imdb" and self.args.gradual_unfreezing
        if not (self.args.use_stlr or fastai_imdb):
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            callback = self.unfreezing_callback
            plan = None
            if callback is not None and (self.args.stlr_per_stage or fastai_imdb):
                plan = callback.unfreezing_plan(
                    len(self.get_layer_groups()), num_training_steps, self.num_update_steps_per_epoch
                )
            bounds = [0, *[stage.start for stage in plan[1:]], num_training_steps] if plan else [0, num_training_steps]
            self.lr_scheduler = get_staged_schedule(
                optimizer if optimizer is not None else self.optimizer,
                bounds,
                # fastai's IMDb tutorial fits each stage with `fit_one_cycle` at its own peak rate.
                shape="one_cycle" if fastai_imdb else "stlr",
                peak_scales=[stage.peak_scale for stage in plan] if plan else None,
                momentums=self.args.momentum_cycle or None,
                cut_frac=self.args.stlr_cut_frac,
                ratio=self.args.stlr_ratio,
            )
            # Tells Trainer to build a fresh schedule on the next `train()` call, as it does for its own.
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        callback = self.unfreezing_callback
        if callback is not None:
            # `model` is the wrapped model: under DDP with unused-parameter detection, frozen groups can leave the
            # autograd graph (no backward below the lowest trainable group), as on one process.
            callback.use_wrapped_model(model)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if callback is not None:
            # With `drop_grads` freezing (FSDP, DDP without unused-parameter detection) frozen parameters still get
            # (all-reduced) gradients; drop them before gradient clipping so that the clipping norm and the
            # optimizer see only the trainable groups.
            callback.drop_frozen_gradients()
        return loss

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None
    ):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            regularization = self.compute_regularization_loss(outputs)
            if regularization is not None:
                if self._loss_is_scaled_for_gradient_accumulation(num_items_in_batch):
                    # The model's loss is already a share of the whole accumulated batch; AR/TAR are per-batch means.
                    regularization = regularization / self.current_gradient_accumulation_steps
                # Adds AR/TAR to the gradient but not to the value: the logged training loss stays the plain loss.
                loss = loss + (regularization - regularization.detach())
        return (loss, outputs) if return_outputs else loss

    # ---- overridable ----------------------------------------------------------------------------------------------

    def compute_regularization_loss(self, outputs: Any) -> torch.Tensor | None:
        """The term added to the training loss: AR + TAR for outputs that carry AWD-LSTM's hidden states.

        AR is `ar_alpha * dropped.pow(2).mean()` on the last layer's dropped-out outputs and TAR is
        `tar_beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()` on its raw outputs (Merity et al. 2017, as fastai's
        `RNNRegularizer`). Returns `None` when the outputs carry neither, or both weights are 0.
        """
        dropped = getattr(outputs, "dropped_last_hidden_state", None)
        raw = getattr(outputs, "raw_last_hidden_state", None)
        terms = []
        if dropped is not None and self.args.ar_alpha > 0:
            terms.append(self.args.ar_alpha * dropped.float().pow(2).mean())
        if raw is not None and self.args.tar_beta > 0 and raw.size(1) > 1:
            terms.append(self.args.tar_beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean())
        return sum(terms) if terms else None

    def _loss_is_scaled_for_gradient_accumulation(self, num_items_in_batch) -> bool:
        # Mirrors the rule `Trainer.training_step` uses to decide whether to divide the loss by the accumulation steps.
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (
            self.model_accepts_loss_kwargs and num_items_in_batch is not None
        ) or self.compute_loss_func is not None


def _same_setting(saved: Any, now: Any) -> bool:
    if isinstance(saved, float) and isinstance(now, float):
        return abs(saved - now) <= 1e-9 * max(abs(saved), abs(now))
    return saved == now


def _flag_value(value: Any, name: str) -> str:
    """A recorded setting as its flag takes it (a decay recorded as None was 1.0: one rate for every group)."""
    if value is None and name == "discriminative_lr_decay":
        return "1.0"
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)
