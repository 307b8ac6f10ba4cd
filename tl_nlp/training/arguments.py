"""`ULMFiTTrainingArguments`: transformers' `TrainingArguments` plus the ULMFiT fine-tuning techniques."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class ULMFiTTrainingArguments(TrainingArguments):
    r"""
    `TrainingArguments` with the fields of the ULMFiT techniques. Every other field means what it means for
    `TrainingArguments`; `learning_rate` is the rate of the top layer group (the peak of the STLR triangle).

    Defaults changed from `TrainingArguments`:
    - `restore_callback_states_from_checkpoint=True`: a resumed run restores the gradual-unfreezing schedule saved
      with the checkpoint.

    While `use_stlr=True` (STLR is the schedule, with its own warm-up), `lr_scheduler_type` must stay `"linear"` (its
    default), `lr_scheduler_kwargs` empty and `warmup_steps` 0: any other value is an error, not silently ignored.

    Args:
        discriminative_lr_decay (`float`, defaults to 2.6):
            Each layer group's learning rate is the rate of the group above it divided by this (ULMFiT's 2.6);
            1.0 turns discriminative learning rates off.
        use_stlr (`bool`, defaults to `True`):
            Use slanted triangular learning rates instead of `lr_scheduler_type`.
        stlr_cut_frac (`float`, defaults to 0.1):
            Fraction of the steps during which the STLR rate rises.
        stlr_ratio (`float`, defaults to 32):
            How much smaller the lowest STLR rate is than the peak.
        stlr_per_stage (`bool`, defaults to `False`):
            Restart the STLR triangle at each gradual-unfreezing stage (fastai's recipe fits each stage with its own
            one-cycle schedule) instead of one triangle over the whole run.
        gradual_unfreezing (`bool`, defaults to `True`):
            Start with only the top layer group trainable and unfreeze one more group at each stage.
        unfreeze_every_n_steps (`int`, *optional*):
            One stage every this many optimizer steps; one stage per epoch when neither this nor
            `unfreeze_at_fractions` is set.
        unfreeze_at_fractions (`list[float]`, *optional*):
            Stages begin at these fractions of the total optimizer steps (increasing, inside (0, 1)).
        ar_alpha (`float`, defaults to 2.0):
            Activation regularization weight for models whose outputs carry `dropped_last_hidden_state`
            (AWD-LSTM): `ar_alpha * dropped.pow(2).mean()` is added to the training loss only.
        tar_beta (`float`, defaults to 1.0):
            Temporal activation regularization weight for models whose outputs carry `raw_last_hidden_state`:
            `tar_beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()` is added to the training loss only.
        ulmfit_stage_name (`str`, *optional*):
            Name of this run's stage in `ulmfit_training_record.json` and the model card; by default it follows from
            the objective and the starting model ("language model pretraining", "language model fine-tuning",
            "classifier fine-tuning").
        dataset_name (`str`, *optional*):
            Hub id (e.g. `"stanfordnlp/imdb"`) or short description of the training data, for the training record;
            by default the training dataset's own Hub name when it has one.
        dataset_split (`str`, *optional*):
            Split(s) trained on, e.g. `"train+unsup"`; by default the training dataset's split when it knows it.
        language (`str`, *optional*):
            ISO 639 code of the text, for the model card; by default the language of the record of the model
            training started from, else `"en"`.
        previous_training_record (`str`, *optional*):
            Folder (or the `ulmfit_training_record.json` in it) whose stages came before this run, for a model
            passed on in memory rather than loaded from the folder of its last stage; by default the record in the
            folder the model was loaded from (`model.name_or_path`).

    Example:

    ```python
    >>> from tl_nlp import ULMFiTTrainingArguments
    >>> args = ULMFiTTrainingArguments(output_dir="runs/clas", learning_rate=1e-4, num_train_epochs=4,
    ...                                unfreeze_at_fractions=[0.1, 0.2, 0.3])
    ```
    """

    discriminative_lr_decay: float = field(
        default=2.6,
        metadata={"help": "Each layer group's rate is the rate of the group above divided by this; 1.0 turns it off."},
    )
    use_stlr: bool = field(
        default=True, metadata={"help": "Use slanted triangular learning rates instead of lr_scheduler_type."}
    )
    stlr_cut_frac: float = field(default=0.1, metadata={"help": "Fraction of the steps during which STLR rises."})
    stlr_ratio: float = field(
        default=32.0, metadata={"help": "How much smaller the lowest STLR rate is than the peak."}
    )
    stlr_per_stage: bool = field(
        default=False, metadata={"help": "Restart the STLR triangle at each gradual-unfreezing stage."}
    )
    gradual_unfreezing: bool = field(
        default=True, metadata={"help": "Train the top layer group first and unfreeze one more group per stage."}
    )
    unfreeze_every_n_steps: int | None = field(
        default=None, metadata={"help": "One unfreezing stage every this many optimizer steps (default: per epoch)."}
    )
    unfreeze_at_fractions: list[float] | None = field(
        default=None, metadata={"help": "Unfreezing stages begin at these fractions of the total optimizer steps."}
    )
    ar_alpha: float = field(
        default=2.0, metadata={"help": "AWD-LSTM activation regularization weight (training loss only)."}
    )
    tar_beta: float = field(
        default=1.0, metadata={"help": "AWD-LSTM temporal activation regularization weight (training loss only)."}
    )
    ulmfit_stage_name: str | None = field(
        default=None,
        metadata={"help": "Name of this stage in the training record and model card (default: from the objective)."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or short description of the training data (default: the dataset's own name)."},
    )
    dataset_split: str | None = field(
        default=None, metadata={"help": "Split(s) trained on, e.g. 'train+unsup' (default: the dataset's split)."}
    )
    language: str | None = field(
        default=None,
        metadata={"help": "ISO 639 code of the text (default: that of the starting model's record, else 'en')."},
    )
    previous_training_record: str | None = field(
        default=None,
        metadata={
            "help": "Folder or record file of the stages before this run (default: where the model was loaded)."
        },
    )
    restore_callback_states_from_checkpoint: bool = field(
        default=True,
        metadata={"help": "Restore the gradual-unfreezing schedule saved with the checkpoint when resuming."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.discriminative_lr_decay > 0:
            raise ValueError(
                f"discriminative_lr_decay must be > 0 (ULMFiT uses 2.6; 1.0 turns it off), got "
                f"{self.discriminative_lr_decay}."
            )
        if not 0 < self.stlr_cut_frac < 1:
            raise ValueError(f"stlr_cut_frac must be in (0, 1) (ULMFiT uses 0.1), got {self.stlr_cut_frac}.")
        if not self.stlr_ratio >= 1:
            raise ValueError(f"stlr_ratio must be >= 1 (ULMFiT uses 32), got {self.stlr_ratio}.")
        if self.use_stlr and self.warmup_steps != 0:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} conflicts with use_stlr=True: STLR warms up on its own over "
                "stlr_cut_frac of the steps. Set warmup_steps=0, or use_stlr=False to use lr_scheduler_type."
            )
        if self.use_stlr and (self.lr_scheduler_type != "linear" or self.lr_scheduler_kwargs):
            raise ValueError(
                f"lr_scheduler_type={str(getattr(self.lr_scheduler_type, 'value', self.lr_scheduler_type))!r} "
                f"(lr_scheduler_kwargs={self.lr_scheduler_kwargs!r}) cannot apply while use_stlr=True: STLR is the "
                "schedule. Set use_stlr=False to use lr_scheduler_type, or leave it at 'linear'."
            )
        if self.stlr_per_stage and not (self.use_stlr and self.gradual_unfreezing):
            raise ValueError("stlr_per_stage=True needs use_stlr=True and gradual_unfreezing=True.")
        if self.unfreeze_every_n_steps is not None and self.unfreeze_at_fractions is not None:
            raise ValueError(
                "Set at most one of unfreeze_every_n_steps and unfreeze_at_fractions (per epoch when neither is set)."
            )
        if self.unfreeze_every_n_steps is not None and self.unfreeze_every_n_steps < 1:
            raise ValueError(f"unfreeze_every_n_steps must be >= 1, got {self.unfreeze_every_n_steps}.")
        if self.unfreeze_at_fractions is not None:
            fractions = list(self.unfreeze_at_fractions)
            if not fractions or any(not 0 < f < 1 for f in fractions) or fractions != sorted(set(fractions)):
                raise ValueError(
                    f"unfreeze_at_fractions must be strictly increasing values in (0, 1), e.g. [0.1, 0.2, 0.3]; "
                    f"got {fractions}."
                )
        if self.ar_alpha < 0:
            raise ValueError(f"ar_alpha must be >= 0 (fastai uses 2.0; 0 turns AR off), got {self.ar_alpha}.")
        if self.tar_beta < 0:
            raise ValueError(f"tar_beta must be >= 0 (fastai uses 1.0; 0 turns TAR off), got {self.tar_beta}.")
        for name in ("ulmfit_stage_name", "dataset_name", "dataset_split", "previous_training_record"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string or None, got {value!r}.")
        if self.language is not None and not re.fullmatch(r"[a-z]{2,3}", str(self.language)):
            raise ValueError(
                f"language must be a lower-case ISO 639 code such as 'en' or 'de', got {self.language!r}."
            )
