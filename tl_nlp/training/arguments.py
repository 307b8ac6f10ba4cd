"""`ULMFiTTrainingArguments`: transformers' `TrainingArguments` plus the ULMFiT fine-tuning techniques."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .callbacks import UNFREEZING_SCHEDULES

# What `ULMFiTTrainer` fills in for the fields left None, by model family (see `model_family`). AWD-LSTM gets fastai's
# text learners' settings and ULMFiT's gradual unfreezing; Transformers keep transformers' optimizer settings and train
# every group from the first step (`gradual_unfreezing` is None only where asked for, as the recipe's classifier stage
# does: see `ClassifierTrainingArguments`); their decay depends on the depth (`transformer_lr_decay`), so it is not in
# this table.
MODEL_FAMILY_DEFAULTS = {
    "awd_lstm": {
        "gradual_unfreezing": True,
        "discriminative_lr_decay": 2.6,
        "adam_beta2": 0.99,
        "adam_epsilon": 1e-5,
        "weight_decay": 0.01,
        "momentum_cycle": [0.8, 0.7, 0.8],
    },
    "transformer": {
        "gradual_unfreezing": False,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "weight_decay": 0.0,
        "momentum_cycle": [],
    },
}

# The settings that only gradual unfreezing uses: set, they turn it on where the model family was to decide
# (`ULMFiTTrainingArguments.asks_for_unfreezing_stages`); the recipe's language-model stages never take them from the
# classifier's options.
UNFREEZING_STAGE_FIELDS = ("unfreezing_schedule", "unfreeze_every_n_steps", "unfreeze_at_fractions", "stlr_per_stage")

# How many times more slowly a Transformer's bottom layer group (the embeddings) learns than its top group (the head)
# by default: 1.25 per group over all-MiniLM-L6-v2's 8 groups, the decay measured there (BENCHMARKS.md). One span for
# every depth, as ELECTRA (Clark et al. 2020) tuned its layer-wise decay per size: 0.8 per layer for 12 layers and 0.9
# for 24 leave the embeddings at the top rate / 14.6 and / 12.6. A fixed decay per group would not: 1.25 over
# SmolLM2-135M's 32 groups leaves its embeddings at / 1,000, where they hardly move.
TRANSFORMER_LR_SPAN = 1.25**7


@dataclass
class ULMFiTTrainingArguments(TrainingArguments):
    r"""
    `TrainingArguments` with the fields of the ULMFiT techniques. Every other field means what it means for
    `TrainingArguments`; `learning_rate` is the rate of the top layer group (the peak of the STLR triangle).

    Defaults changed from `TrainingArguments`:
    - `restore_callback_states_from_checkpoint=True`: a resumed run restores the gradual-unfreezing schedule saved
      with the checkpoint.
    - Left `None`, these are chosen by `ULMFiTTrainer` for the model's family (`MODEL_FAMILY_DEFAULTS`), when it is
      built:

      | field | AWD-LSTM (fastai's `TextLearner`) | Transformers | `TrainingArguments` |
      |---|---|---|---|
      | `discriminative_lr_decay` | 2.6 (the paper) | bottom group at top rate / 4.77 (`transformer_lr_decay`) | - |
      | `adam_beta2` | 0.99 (fastai's `Adam`) | 0.999 | 0.999 |
      | `adam_epsilon` | 1e-5 (fastai's `Adam`) | 1e-8 | 1e-8 |
      | `weight_decay` | 0.01 (fastai's `Adam`, decoupled like AdamW) | 0.0 | 0.0 |
      | `momentum_cycle` | (0.8, 0.7, 0.8) (fastai's text learners) | none (beta1 stays `adam_beta1`) | - |
      | `gradual_unfreezing` (when set to `None`) | on (the paper) | off (every group from the first step) | - |

      fastai trains with beta1 cycled against the rate (`fit_one_cycle`'s `moms`; the paper used a fixed 0.7); we
      cycle it along STLR's triangle. For Transformers the decay follows the layer-wise decays that fine-tuning
      work found (0.95 per layer in Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?"; 0.8 in
      ELECTRA, Clark et al. 2020), chosen by a measurement on all-MiniLM-L6-v2 (BENCHMARKS.md): 2.6 per group is the
      paper's value for a 3-layer LSTM and leaves a 12-layer model's embeddings at the top rate / 36,000. The span
      from the top group to the bottom one is fixed, not the factor per group, so deeper models get a gentler factor
      (1.25 per group for 6 layers, 1.13 for 12, 1.05 for 30), as ELECTRA chose 0.9 per layer for 24 layers against
      0.8 for 12. SmolLM2-135M (32 groups) fine-tuned on 1,000 SST-2 sentences scored 0.779 on held-out ones with
      1.25 per group (its embeddings at / 1,000) and 0.844 with 1.05 (3 seeds, BENCHMARKS.md).
    - Unlike fastai, gradient clipping stays `TrainingArguments`' (`max_grad_norm=1.0`; fastai clips nothing by
      default) and the no-weight-decay split is transformers' (every bias and norm; fastai decays the LSTM's
      biases, which are not a module's `bias` attribute).

    While `use_stlr=True` (STLR is the schedule, with its own warm-up), `lr_scheduler_type` must stay `"linear"` (its
    default), `lr_scheduler_kwargs` empty and `warmup_steps` 0: any other value is an error, not silently ignored.

    Args:
        discriminative_lr_decay (`float`, *optional*):
            Each layer group's learning rate is the rate of the group above it divided by this; 1.0 turns
            discriminative learning rates off. By model family when unset (2.6 for AWD-LSTM; for Transformers the
            factor that puts the bottom group at the top rate / 4.77, see above).
        momentum_cycle (`list[float]`, *optional*):
            Adam's beta1 (SGD's momentum) at the start, at the peak rate and at the end of each STLR triangle (or
            one-cycle stage), as fastai's `moms`; `[]` keeps it fixed. By model family when unset.
        unfreezing_schedule (`str`, defaults to `"auto"`):
            `"auto"`: one more group per epoch when there are at least as many epochs as layer groups (the paper),
            else the first stages share the first half of the steps and every group trains in the second half;
            `"per_epoch"`: one group per epoch, refused when that leaves groups frozen at the end; `"fastai_imdb"`:
            fastai's IMDb tutorial (stages of 1, 1, 1 and 2 fifths of the run training 1, 2, 3 and all groups at
            peak rates lr, lr/2, lr/4 and lr/20, each stage with its own `fit_one_cycle`, whatever `use_stlr` says);
            `"partial"`: one group per epoch (or per `unfreeze_every_n_steps` / `unfreeze_at_fractions`) even when
            the lowest groups stay frozen at the end. Given `unfreeze_every_n_steps` or `unfreeze_at_fractions`,
            `"auto"` and `"per_epoch"` refuse a schedule that leaves groups frozen at the end too.
        use_stlr (`bool`, defaults to `True`):
            Use slanted triangular learning rates instead of `lr_scheduler_type`.
        stlr_cut_frac (`float`, defaults to 0.1):
            Fraction of the steps during which the STLR rate rises.
        stlr_ratio (`float`, defaults to 32):
            How much smaller the lowest STLR rate is than the peak.
        stlr_per_stage (`bool`, defaults to `False`):
            Restart the STLR triangle at each gradual-unfreezing stage (fastai's recipe fits each stage with its own
            one-cycle schedule) instead of one triangle over the whole run.
        gradual_unfreezing (`bool`, *optional*, defaults to `True`):
            Start with only the top layer group trainable and unfreeze one more group at each stage. On by default
            here, as ULMFiT has it, whatever the model: `ULMFiTTrainer` is the techniques. `None` leaves it to the
            model family (on for AWD-LSTM, off for Transformers, see the table above; the default of the recipe's
            classifier stage, `ClassifierTrainingArguments`, whose docstring gives the measurements), except that a
            setting only gradual unfreezing uses (`unfreeze_every_n_steps`, `unfreeze_at_fractions`, an
            `unfreezing_schedule` other than `"auto"`, `stlr_per_stage`) turns it on. `False` with one of those
            settings is an error (they would do nothing).
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

    discriminative_lr_decay: float | None = field(
        default=None,
        metadata={
            "help": "Each layer group's rate is the rate of the group above divided by this; 1.0 turns it off "
            "(default: 2.6 for AWD-LSTM; for Transformers the factor that puts the bottom group at the top rate / "
            "4.77: 1.25 for 6 layers, 1.13 for 12)."
        },
    )
    momentum_cycle: list[float] | None = field(
        default=None,
        metadata={
            "help": "beta1 at the start, peak and end of each STLR triangle, e.g. 0.8 0.7 0.8 (default: fastai's "
            "0.8 0.7 0.8 for AWD-LSTM, fixed for Transformers)."
        },
    )
    unfreezing_schedule: str = field(
        default="auto",
        metadata={
            "help": "Gradual unfreezing: auto, per_epoch, fastai_imdb or partial (see the docstring).",
            "choices": list(UNFREEZING_SCHEDULES),
        },
    )
    adam_beta2: float | None = field(
        default=None, metadata={"help": "Adam's beta2 (default: fastai's 0.99 for AWD-LSTM, 0.999 otherwise)."}
    )
    adam_epsilon: float | None = field(
        default=None, metadata={"help": "Adam's epsilon (default: fastai's 1e-5 for AWD-LSTM, 1e-8 otherwise)."}
    )
    weight_decay: float | None = field(
        default=None, metadata={"help": "Decoupled weight decay (default: fastai's 0.01 for AWD-LSTM, 0 otherwise)."}
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
    gradual_unfreezing: bool | None = field(
        default=True,
        metadata={
            "help": "Train the top layer group first and unfreeze one more group per stage (None: by model family)."
        },
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

    def asks_for_unfreezing_stages(self) -> bool:
        """Whether a setting that only gradual unfreezing uses (`UNFREEZING_STAGE_FIELDS`: stage steps or fractions,
        a schedule other than "auto", one STLR triangle per stage) differs from its default."""
        fields = type(self).__dataclass_fields__
        return any(getattr(self, name) != fields[name].default for name in UNFREEZING_STAGE_FIELDS)

    def __post_init__(self):
        super().__post_init__()
        if self.discriminative_lr_decay is not None and not self.discriminative_lr_decay > 0:
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
        if self.gradual_unfreezing is None and self.asks_for_unfreezing_stages():
            self.gradual_unfreezing = True  # a schedule of stages only means something with gradual unfreezing
        if self.stlr_per_stage and not (self.use_stlr and self.gradual_unfreezing):
            raise ValueError("stlr_per_stage=True needs use_stlr=True and gradual_unfreezing=True.")
        if self.gradual_unfreezing is False:
            # Stages without gradual unfreezing would be ignored without a word; fastai_imdb says so below.
            stages = [
                f"{name}={getattr(self, name)!r}"
                for name in ("unfreeze_every_n_steps", "unfreeze_at_fractions")
                if getattr(self, name) is not None
            ]
            if self.unfreezing_schedule in ("per_epoch", "partial"):
                stages.append(f"unfreezing_schedule={self.unfreezing_schedule!r}")
            if stages:
                raise ValueError(
                    f"{', '.join(stages)} places gradual-unfreezing stages, but gradual_unfreezing=False: set "
                    "gradual_unfreezing=True (--gradual_unfreezing) or drop it."
                )
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
        if self.unfreezing_schedule not in UNFREEZING_SCHEDULES:
            raise ValueError(
                f"unfreezing_schedule must be one of {sorted(UNFREEZING_SCHEDULES)}, got {self.unfreezing_schedule!r}."
            )
        if self.unfreezing_schedule == "fastai_imdb" and not self.gradual_unfreezing:
            raise ValueError(
                "unfreezing_schedule='fastai_imdb' is a gradual-unfreezing schedule: it needs gradual_unfreezing=True."
            )
        if self.unfreezing_schedule == "fastai_imdb" and (
            self.unfreeze_every_n_steps is not None or self.unfreeze_at_fractions is not None
        ):
            raise ValueError(
                "unfreezing_schedule='fastai_imdb' fixes its own stages: leave unfreeze_every_n_steps and "
                "unfreeze_at_fractions unset."
            )
        if self.momentum_cycle is not None and (
            len(self.momentum_cycle) not in (0, 3) or any(not 0 <= m < 1 for m in self.momentum_cycle)
        ):
            raise ValueError(
                f"momentum_cycle must be three values in [0, 1) (start, at the peak rate, end), e.g. [0.8, 0.7, 0.8], "
                f"or [] to keep beta1 fixed; got {self.momentum_cycle}."
            )
        for name, low, high in (("adam_beta2", 0.0, 1.0), ("adam_epsilon", 0.0, 1.0), ("weight_decay", 0.0, None)):
            value = getattr(self, name)
            if value is not None and (value < low or (high is not None and value >= high)):
                raise ValueError(f"{name} must be in [{low}, {high or 'inf'}), got {value}.")
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


def model_family(model) -> str:
    """`"awd_lstm"` for AWD-LSTM models (also inside PEFT wrappers), `"transformer"` for every other model."""
    config = getattr(model, "config", None)
    return "awd_lstm" if getattr(config, "model_type", None) == "awd_lstm" else "transformer"


def transformer_lr_decay(num_groups: int) -> float:
    """The Transformer family's default `discriminative_lr_decay` for a model of `num_groups` layer groups: the factor
    per group that leaves the bottom group (the embeddings) at the top rate / `TRANSFORMER_LR_SPAN`, whatever the
    depth. That is 1.25 per group for a 6-layer model (8 groups, where it was measured), 1.13 for a 12-layer one,
    1.05 for SmolLM2-135M's 30 layers; one group (or none) gets 1.0."""
    return TRANSFORMER_LR_SPAN ** (1 / (num_groups - 1)) if num_groups > 1 else 1.0


def with_model_family_defaults(
    args: ULMFiTTrainingArguments, model, count_groups: Callable[[], int]
) -> ULMFiTTrainingArguments:
    """A shallow copy of `args` whose `None` fields of `MODEL_FAMILY_DEFAULTS` hold the values for `model`'s family,
    and an unset `discriminative_lr_decay` the family's: 2.6 for AWD-LSTM, for Transformers
    `transformer_lr_decay` of the number of layer groups (`count_groups()`, called only then). The caller's arguments
    are left alone, so that one object can serve models of different families."""
    resolved = copy.copy(args)
    family = model_family(model)
    for name, value in MODEL_FAMILY_DEFAULTS[family].items():
        if getattr(resolved, name) is None:
            setattr(resolved, name, copy.copy(value))
    if resolved.discriminative_lr_decay is None:  # AWD-LSTM's 2.6 came from the table
        resolved.discriminative_lr_decay = transformer_lr_decay(count_groups())
    return resolved
