"""The typed configuration of the recipe's stages, one dataclass per concern, parsed once (by `HfArgumentParser` in the
`tl-nlp` commands, or built in Python) and handed to the stage functions as it is:

- [`DataArguments`]: where a stage reads its texts;
- [`TaskArguments`]: what the labelled data asks (one text, pairs, regression, multi-label, multiple choice);
- [`ModelArguments`]: the checkpoint a stage starts from, or the new AWD-LSTM and tokenizer it builds;
- [`ClassifierMethodArguments`]: how the classifier stage transfers the language model (full, LoRA, features);
- [`PretrainTrainingArguments`], [`FinetuneTrainingArguments`], [`ClassifierTrainingArguments`]: the training of
  each stage. **The stage defaults are written here and nowhere else**: each class lists what its stage changes from
  `ULMFiTTrainingArguments`, and `learning_rate=None` means the stage's rate for the model family
  (`LEARNING_RATES`), chosen once the stage knows the checkpoint;
- [`HubArguments`]: whether and where a stage uploads its folder with its model card;
- [`UlmfitArguments`], [`EvaluateArguments`], [`LRFindTaskArguments`]: what the `ulmfit`, `evaluate` and `lr-find`
  commands add.

A new option is a field with `metadata={"help": ...}` (validated in `__post_init__`) on the class of its concern; the
commands and the stage functions receive it without further plumbing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..feature_extraction import POOLINGS, FeatureHeadArguments
from ..setting_checks import check_class_names, check_positive_number, check_training_settings, check_whole_number
from ..tasks import TASKS
from ..training import ULMFiTTrainingArguments
from ..training.arguments import UNFREEZING_STAGE_FIELDS
from ..training.lora import ULMFiTLoraArguments
from .data import TextData

METHODS = ("full", "lora", "feature_extraction")
# A checkpoint's family decides its default learning rates: AWD-LSTM (ULMFiT's rates) or any transformer.
MODEL_FAMILIES = ("awd_lstm", "transformer")
# The settings whose source ("default" or "set by you") a stage records in its training record and model card.
RECORDED_SETTINGS = (
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "discriminative_lr_decay",
    "gradual_unfreezing",
    "weight_decay",
)


@dataclass
class DataArguments:
    """Where a stage reads its texts."""

    _argument_group_name = "data"  # the heading of these options in --help

    train_file: str = field(
        default=None,
        metadata={"help": "Training texts: a local file (txt/csv/tsv/json/jsonl/parquet) or a Hub dataset."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out texts (file or Hub dataset): perplexity or accuracy/macro-F1."}
    )
    train_split: str = field(default="train", metadata={"help": "Split of a Hub training dataset."})
    validation_split: str = field(default="validation", metadata={"help": "Split of a Hub validation dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the Hub datasets."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels (classifier)."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names in id order (integer labels index them)."}
    )
    train_rows: str | None = field(default=None, metadata={"help": "FILE:KEY, JSON row indices of the training set."})
    validation_rows: str | None = field(default=None, metadata={"help": "FILE:KEY, row indices of the held-out set."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Keep at most this many training rows."})
    max_eval_examples: int | None = field(default=None, metadata={"help": "Keep at most this many held-out rows."})

    def __post_init__(self):
        if not self.train_file:
            raise ValueError("train_file is required: a local file or a Hub dataset name")
        # `class_names: negative` in YAML is one string, which would become eight one-letter classes.
        check_class_names(self.class_names)
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def train(self) -> TextData:
        return self._data(self.train_file, self.train_split, self.train_rows, self.max_train_examples)

    def validation(self) -> TextData | None:
        if self.validation_file is None:
            return None
        return self._data(self.validation_file, self.validation_split, self.validation_rows, self.max_eval_examples)

    def _data(self, source: str, split: str, rows: str | None, max_examples: int | None) -> TextData:
        return TextData(
            source,
            split=split,
            config_name=self.dataset_config_name,
            text_column=self.text_column,
            label_column=self.label_column,
            rows=rows,
            max_examples=max_examples,
        )


@dataclass
class TaskArguments:
    """What the labelled data asks of the classifier stage (see `tl_nlp.tasks`); every field not given is inferred from
    the data where that is unambiguous, and the stage says what it inferred."""

    task: str | None = field(
        default=None,
        metadata={"help": f"One of {', '.join(TASKS)}; inferred from the data when not given."},
    )
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Second text of a pair (sentence2, hypothesis...); inferred when not given."}
    )
    choice_columns: list[str] | None = field(
        default=None, metadata={"help": "Candidate answers of a multiple-choice row (choice1 choice2...)."}
    )
    symmetric_pair: bool | None = field(
        default=None,
        metadata={
            "help": "GPT-style and AWD-LSTM models: read pairs in both orders, summed (GPT's similarity input); "
            "default: yes for regression on pairs."
        },
    )

    def __post_init__(self):
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.choice_columns is not None and len(self.choice_columns) < 2:
            raise ValueError(f"choice_columns must name 2 or more columns, got {self.choice_columns}")


@dataclass
class ModelArguments:
    """The model a stage starts from, or the new AWD-LSTM and tokenizer it builds, and its language-model data."""

    _argument_group_name = "model"  # the heading of these options in --help

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint to start from (AWD-LSTM, BERT- or GPT-style folder or Hub id); pretrain-lm "
            "and ulmfit build a new AWD-LSTM when not given."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "A GGUF file in the --model_name_or_path folder or Hub repo (needs the `gguf` extra); the same as "
            "giving the file's path, e.g. --model_name_or_path models/x.gguf. Dequantised into a plain checkpoint."
        },
    )
    vocab_size: int = field(default=60_000, metadata={"help": "New tokenizer: vocabulary size (>= 10)."})
    tokenizer_type: str = field(default="word", metadata={"help": "New tokenizer: 'word', 'bpe' or 'unigram'."})
    min_frequency: int = field(default=3, metadata={"help": "New tokenizer: occurrences a word needs (>= 1)."})
    embedding_size: int = field(default=400, metadata={"help": "New AWD-LSTM: embedding size (>= 1)."})
    hidden_size: int = field(default=1152, metadata={"help": "New AWD-LSTM: hidden size (>= 1)."})
    num_hidden_layers: int = field(default=3, metadata={"help": "New AWD-LSTM: LSTM layers (>= 1)."})
    backwards: bool = field(
        default=False, metadata={"help": "Read texts in reverse token order (ulmfit: also train backward, ensemble)."}
    )
    lm_objective: str = field(
        default="auto", metadata={"help": "'auto' (from the model type), 'stream', 'masked' or 'causal'."}
    )
    bptt: int = field(default=70, metadata={"help": "AWD-LSTM window length (>= 2)."})
    block_size: int = field(default=128, metadata={"help": "BERT/GPT-style LM block length in tokens (>= 2)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of masked tokens, in (0, 1)."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest classifier input in tokens (>= 1; transformers: default 512, capped by the model's "
            "context; AWD-LSTM: whole documents by default, else their first max_length tokens)."
        },
    )
    inference_max_length: int | None = field(
        default=None,
        metadata={"help": "Transformers: tokens read by evaluate, predict, pipeline() (>= 1; default: max_length)."},
    )
    truncation_side: str = field(
        default="right",
        metadata={"help": "Cut a long text on the 'right' (keep its beginning; transformers' default) or 'left'."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub checkpoint's own code."})

    def __post_init__(self):
        minimums = {
            "vocab_size": 10,
            "min_frequency": 1,
            "embedding_size": 1,
            "hidden_size": 1,
            "num_hidden_layers": 1,
            "bptt": 2,
            "block_size": 2,
        }
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 (or not given), got {self.max_length}")
        if self.inference_max_length is not None and self.inference_max_length < 1:
            raise ValueError(f"inference_max_length must be >= 1 (or not given), got {self.inference_max_length}")
        check_truncation_side(self.truncation_side)
        if self.tokenizer_type not in ("word", "bpe", "unigram"):
            raise ValueError(f"tokenizer_type must be 'word', 'bpe' or 'unigram', got {self.tokenizer_type!r}")
        if self.lm_objective not in ("auto", "stream", "masked", "causal"):
            raise ValueError(f"lm_objective must be 'auto', 'stream', 'masked' or 'causal', got {self.lm_objective!r}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.gguf_file is not None:
            if self.model_name_or_path is None:
                raise ValueError("gguf_file names a file in --model_name_or_path's folder or Hub repo: give that too")
            # One reference from here down: every stage loads "folder_or_repo/file.gguf" through recipe/loading.py.
            if not self.model_name_or_path.endswith(self.gguf_file):
                self.model_name_or_path = f"{self.model_name_or_path.rstrip('/')}/{self.gguf_file}"

    def language_model_options(self) -> dict[str, Any]:
        """The keyword arguments of `train_language_model` these fields set."""
        return {
            "vocab_size": self.vocab_size,
            "tokenizer_type": self.tokenizer_type,
            "min_frequency": self.min_frequency,
            "model_config": {
                "embedding_size": self.embedding_size,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers,
            },
            "lm_objective": self.lm_objective,
            "bptt": self.bptt,
            "block_size": self.block_size,
            "mlm_probability": self.mlm_probability,
            "trust_remote_code": self.trust_remote_code,
        }


TRUNCATION_SIDES = ("right", "left")


def check_truncation_side(truncation_side: str) -> None:
    """Raises `ValueError` for a `truncation_side` tokenizers do not know."""
    if truncation_side not in TRUNCATION_SIDES:
        raise ValueError(
            f"truncation_side must be 'right' (keep a text's beginning) or 'left' (keep its end), got "
            f"{truncation_side!r}"
        )


def check_method(
    method: str,
    auxiliary_lm_weight: float = 0.0,
    lora: ULMFiTLoraArguments | None = None,
    feature_head: FeatureHeadArguments | None = None,
) -> None:
    """Raises `ValueError` naming the option for a method that does not exist or options that do not go with it."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}")
    if not auxiliary_lm_weight >= 0:
        raise ValueError(f"auxiliary_lm_weight must be >= 0 (0: no auxiliary LM loss), got {auxiliary_lm_weight}")
    if auxiliary_lm_weight > 0 and method == "feature_extraction":
        raise ValueError(
            "auxiliary_lm_weight > 0 needs a backbone that trains (method 'full' or 'lora'); feature_extraction "
            "keeps it frozen: set auxiliary_lm_weight to 0"
        )
    if lora is not None and method != "lora":
        raise ValueError(f"lora settings were given but method is {method!r}: use method='lora' or drop them")
    if feature_head is not None and method != "feature_extraction":
        raise ValueError(
            f"feature_head settings were given but method is {method!r}: use method='feature_extraction' or drop them"
        )


@dataclass
class ClassifierMethodArguments:
    """How the classifier stage transfers the language model: `--method`, the auxiliary LM loss, and the LoRA and
    feature-extraction settings (prefixed, as the training options already use their plain names)."""

    _argument_group_name = "transfer method"  # the heading of these options in --help

    method: str = field(
        default="full",
        metadata={
            "help": "'full' (every layer trains), 'lora' (adapters + head) or 'feature_extraction' "
            "(frozen backbone, head on cached features)."
        },
    )
    auxiliary_lm_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of GPT's auxiliary LM loss (>= 0; 0: none; GPT uses 0.5); AWD-LSTM and "
            "GPT-style models, methods 'full' and 'lora'."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "--method lora: adapter rank (>= 1)."})
    lora_alpha: float = field(
        default=16.0, metadata={"help": "--method lora: scale, update = alpha / r * B @ A (> 0)."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "--method lora: adapter input dropout, in [0, 1)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "--method lora: modules to adapt, as peft names them (default: every projection outside the head)."
        },
    )
    lora_save_adapter: bool = field(
        default=False,
        metadata={
            "help": "--method lora: also save the adapter (peft folder) in OUTPUT_DIR/adapter; the stage "
            "folder always holds the merged model."
        },
    )
    feature_pooling: str = field(
        default="auto", metadata={"help": "--method feature_extraction: 'auto' (AWD-LSTM: concat pooling)."}
    )
    feature_head_hidden_size: int = field(
        default=0, metadata={"help": "--method feature_extraction: 0 for logistic regression, else MLP width (>= 0)."}
    )
    feature_head_epochs: int = field(
        default=100, metadata={"help": "--method feature_extraction: passes over the cached features (>= 1)."}
    )
    feature_head_learning_rate: float = field(
        default=1e-2, metadata={"help": "--method feature_extraction: the head's AdamW learning rate (> 0)."}
    )

    def __post_init__(self):
        check_method(self.method, self.auxiliary_lm_weight)
        if self.feature_pooling not in POOLINGS:
            raise ValueError(f"feature_pooling must be one of {', '.join(POOLINGS)}, got {self.feature_pooling!r}")
        # Each prefixed field is checked under its own name (the nested classes check them again when built).
        for name, valid, rule in (
            ("lora_r", self.lora_r >= 1, ">= 1"),
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("feature_head_hidden_size", self.feature_head_hidden_size >= 0, ">= 0"),
            ("feature_head_epochs", self.feature_head_epochs >= 1, ">= 1"),
            ("feature_head_learning_rate", self.feature_head_learning_rate > 0, "> 0"),
        ):
            if not valid:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")

    def lora_arguments(self) -> ULMFiTLoraArguments:
        """The LoRA settings as `ULMFiTLoraArguments`."""
        return ULMFiTLoraArguments(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules or None,
        )

    def feature_head_arguments(self, seed: int = 0) -> FeatureHeadArguments:
        """The feature-extraction head's settings as `FeatureHeadArguments` (seeded with the training seed)."""
        return FeatureHeadArguments(
            hidden_size=self.feature_head_hidden_size,
            num_epochs=self.feature_head_epochs,
            learning_rate=self.feature_head_learning_rate,
            seed=seed,
        )


@dataclass
class HubArguments:
    """Whether a stage uploads its folder (weights, tokenizer, training record and a model card written from it) to
    the Hugging Face Hub once it is saved. The Trainer itself never pushes: the stage folder, not its checkpoints,
    is what a Hub user needs."""

    _argument_group_name = "Hub upload"  # the heading of these options in --help

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the stage folder with its model card."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repository, user/name (default: the output folder's name)."}
    )
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in user's)."})
    hub_private_repo: bool | None = field(default=None, metadata={"help": "Create the repository as private."})

    def __post_init__(self):
        if self.hub_model_id is not None and not self.hub_model_id.strip("/"):
            raise ValueError(f"hub_model_id must name a repository (user/name), got {self.hub_model_id!r}")

    def repo_id(self, output_dir: str | Path) -> str:
        """The repository the stage folder `output_dir` goes to."""
        return self.hub_model_id or Path(output_dir).absolute().name


# What differs between the stages' arguments (and names the stage): never carried from one stage to another.
STAGE_FIELDS = (
    *RECORDED_SETTINGS,
    "per_device_eval_batch_size",
    "output_dir",
    "dataset_name",
    "dataset_split",
    "ulmfit_stage_name",
    "previous_training_record",
)
HUB_OPTIONS = {"push_to_hub", "hub_model_id", "hub_token", "hub_private_repo"}
_NOT_PARSED = "set with HubArguments (--push_to_hub, --hub_model_id...): the stage uploads its folder itself"


@dataclass
class StageTrainingArguments(ULMFiTTrainingArguments):
    """`ULMFiTTrainingArguments` with the changes every recipe stage makes; the subclasses add their stage's.

    Defaults changed from `ULMFiTTrainingArguments` (and why):
    - `learning_rate=None`: the stage's rate for the model family, `LEARNING_RATES[family]` (ULMFiT's for AWD-LSTM,
      the usual fine-tuning rates for transformers), so a BERT-style checkpoint never trains at an AWD-LSTM rate;
      with `method="lora"`, `LORA_LEARNING_RATES[family]` where the stage has one.
      A rate you give is the peak of the top layer group (lower groups get it divided by `discriminative_lr_decay`).
      The transformer rates of the language-model stages are transformers' fine-tuning defaults; the classifier's is
      higher (see [`ClassifierTrainingArguments`]). Run `tl-nlp lr-find` for your model.
    - `report_to=[]`, `save_strategy="no"`, `logging_steps=20`, `disable_tqdm=False`: a stage saves its own folder
      and reports nowhere unless asked.
    - `dataloader_pin_memory` only with CUDA (pinning means nothing without an accelerator, and torch warns).
    - The Trainer's own Hub upload is off (`push_to_hub` is not parsed here): see [`HubArguments`].
    """

    _argument_group_name = "training (ULMFiTTrainingArguments, a transformers TrainingArguments)"  # the heading of these options in --help

    stage: ClassVar[str] = ""
    LEARNING_RATES: ClassVar[dict[str, float]] = {}
    # The default top rate with method "lora", where it differs from LEARNING_RATES (per family).
    LORA_LEARNING_RATES: ClassVar[dict[str, float]] = {}

    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the top layer group (lower groups: divided by discriminative_lr_decay "
            "per group; the STLR peak). Default: the stage's rate for the model family and method."
        },
    )
    report_to: list[str] | None = field(default_factory=list, metadata={"help": "Integrations to report to."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoint strategy ('no', 'steps', 'epoch')."})
    logging_steps: float = field(default=20, metadata={"help": "Log every this many optimizer steps."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data-loading worker processes."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})
    dataloader_pin_memory: bool = field(
        default=torch.cuda.is_available(), metadata={"help": "Pin data-loader memory (CUDA only)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace what an earlier run left in the stage folder (deleted first). Without it a used folder "
            "is refused, unless the run resumes from one of its checkpoints."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue an interrupted run: 'last' (the last complete checkpoint of this stage) or a "
            "checkpoint folder. A stage whose folder already holds its finished model is kept as it is."
        },
    )
    push_to_hub: bool = field(default=False, init=False, metadata={"help": _NOT_PARSED})
    hub_model_id: str | None = field(default=None, init=False, metadata={"help": _NOT_PARSED})
    hub_token: str | None = field(default=None, init=False, metadata={"help": _NOT_PARSED})
    hub_private_repo: bool | None = field(default=None, init=False, metadata={"help": _NOT_PARSED})

    def __post_init__(self):
        if self.learning_rate is not None and not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(
                f"learning_rate must be > 0 (or not given: the stage's default), got {self.learning_rate}"
            )
        # Values transformers accepts and misuses later (0 epochs trains nothing, NaN rates train to NaN, a float
        # batch size fails in the dataloader, seed None in set_seed): refused here, naming the field.
        check_training_settings(
            num_train_epochs=self.num_train_epochs if self.max_steps is None or self.max_steps <= 0 else None,
            per_device_train_batch_size=self.per_device_train_batch_size,
            per_device_eval_batch_size=self.per_device_eval_batch_size,
            seed=self.seed,
        )
        check_whole_number("gradient_accumulation_steps", self.gradient_accumulation_steps)
        if self.weight_decay is not None:  # None: the model family's (ULMFiTTrainer fills it in)
            check_positive_number("weight_decay", self.weight_decay, allow_zero=True)
        if self.max_steps is not None and self.max_steps != -1:
            check_whole_number("max_steps", self.max_steps, minimum=1)
        super().__post_init__()

    @classmethod
    def from_shared(cls, shared: ULMFiTTrainingArguments, **values: Any) -> StageTrainingArguments:
        """This stage's arguments with the general options of another stage's (seed, precision, logging...):
        everything but the fields whose defaults differ between stages (`STAGE_FIELDS`), which take this class's
        defaults unless `values` sets them (None values are left out), and the unfreezing schedule
        (`UNFREEZING_STAGE_FIELDS`), which only the classifier uses: the language-model stages train every layer."""
        general = {
            f.name: getattr(shared, f.name)
            for f in dataclasses.fields(shared)
            if f.init
            and f.name not in STAGE_FIELDS
            and f.name not in UNFREEZING_STAGE_FIELDS
            and f.name in cls.__dataclass_fields__
            and cls.__dataclass_fields__[f.name].init
        }
        return cls(**general, **{name: value for name, value in values.items() if value is not None})

    def default_learning_rate(self, family: str, method: str = "full") -> float:
        if family not in MODEL_FAMILIES:
            raise ValueError(f"model family must be one of {MODEL_FAMILIES}, got {family!r}")
        if method == "lora" and family in self.LORA_LEARNING_RATES:
            return self.LORA_LEARNING_RATES[family]
        return self.LEARNING_RATES[family]

    def setting_sources(self) -> dict[str, str]:
        """Per recorded setting, `"default"` when it has the stage's default and `"set by you"` otherwise."""
        defaults = {f.name: f for f in dataclasses.fields(type(self))}
        sources = {}
        for name in RECORDED_SETTINGS:
            default = defaults[name].default
            sources[name] = "default" if getattr(self, name) == default else "set by you"
        return sources


@dataclass
class PretrainTrainingArguments(StageTrainingArguments):
    """ULMFiT stage 1 (general-domain language model): every layer at one rate, no unfreezing (the model is new),
    one epoch of batches of 32 streams (fastai's language-model batches are 64; 32 keeps a CPU run short)."""

    stage: ClassVar[str] = "pretrain"
    LEARNING_RATES: ClassVar[dict[str, float]] = {"awd_lstm": 3e-3, "transformer": 1e-4}

    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the texts."})
    per_device_train_batch_size: int = field(
        default=32, metadata={"help": "Streams (AWD-LSTM) or blocks per batch and device."}
    )

    discriminative_lr_decay: float = field(default=1.0, metadata={"help": "1.0: one rate for every layer group."})
    gradual_unfreezing: bool = field(default=False, metadata={"help": "Unfreeze one layer group per stage."})


@dataclass
class FinetuneTrainingArguments(StageTrainingArguments):
    """ULMFiT stage 2 (the language model on target text): discriminative rates and STLR, every layer trains (the
    paper unfreezes gradually only in the classifier), one epoch of batches of 32 streams."""

    stage: ClassVar[str] = "finetune"
    LEARNING_RATES: ClassVar[dict[str, float]] = {"awd_lstm": 2e-3, "transformer": 5e-5}

    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the texts."})
    per_device_train_batch_size: int = field(
        default=32, metadata={"help": "Streams (AWD-LSTM) or blocks per batch and device."}
    )

    gradual_unfreezing: bool = field(default=False, metadata={"help": "Unfreeze one layer group per stage."})


@dataclass
class ClassifierTrainingArguments(StageTrainingArguments):
    """ULMFiT stage 3 (the classifier): discriminative rates and STLR (the `ULMFiTTrainingArguments` defaults, with the
    model family's decay and optimizer settings), gradual unfreezing for AWD-LSTM, 4 epochs of batches of 16. The
    'auto' unfreezing schedule gives one group per epoch when there are at least as many epochs as layer groups, and
    otherwise spreads the stages over the first half of the steps, so every group trains for the second half
    (`unfreezing_schedule="fastai_imdb"` runs fastai's IMDb tutorial instead, best with 5 epochs).

    Gradual unfreezing (`gradual_unfreezing`, left None: by model family) is on for AWD-LSTM, as ULMFiT has it, and off
    for Transformers: every layer group trains from the first step, as transformers' `Trainer` trains every layer
    (fastai's `fine_tune` trains the head alone for one epoch, then everything), with the decay and STLR kept. ULMFiT
    unfroze an AWD-LSTM trained at 1e-2 one group per epoch; a pretrained Transformer fine-tuned for a few epochs mostly
    lost by it. With it, all-MiniLM-L6-v2 for 3 epochs scored lower on the mean on five of six tasks (7 seeds each,
    BENCHMARKS.md "Gradual unfreezing on these tasks"), settled at 95% on three: STS-B Spearman -1.3 points, SST-5 as a
    score -0.7, GoEmotions macro-F1 -1.4; COPA -0.6, SST-5 classes -0.1, RTE +0.3 (not settled); IMDb at 100 labels -1.7
    (3 seeds); with LoRA SST-2 held-out -1.4 and SST-5 validation -0.9 (3 seeds, settled); gemma-3-270m with LoRA -1.0
    (2 seeds). SmolLM2-135M went the other way, +0.6 on SST-2 and +1.3 on COPA fully fine-tuned (3 seeds each) and +1.1
    with LoRA (2 seeds), none settled, so no family of Transformers is singled out. Its spread was smaller on STS-B
    (0.41x); on RTE's 2,490 pairs one run of seven never learned without it (the stage says so when that happens), none
    of seven with it. `--gradual_unfreezing` (`gradual_unfreezing=True`) puts it back for any family, and so does any
    unfreezing schedule given (`unfreeze_at_fractions`, `unfreeze_every_n_steps`, `unfreezing_schedule`,
    `stlr_per_stage`); `--no_gradual_unfreezing` turns it off for AWD-LSTM.

    `learning_rate_from_lr_find=True` runs the learning-rate range test first, on the model as training starts (with
    gradual unfreezing the top layer group alone, else every group), and trains at its valley suggestion (fastai's
    default suggestion), for every task; a run resumed from a checkpoint goes on at the rate it found.

    Default top rates: 1e-2 for AWD-LSTM (fastai's IMDb tutorial trains the head alone at 2e-2, then 1e-2, 5e-3); 2e-4
    for transformers, 4x transformers' `TrainingArguments` default of 5e-5. The top rate is the new head's; with the
    Transformer decay the embeddings get 4.2e-5 at any depth (the top rate / 4.77) and the top block of a 6-layer model
    1.6e-4 (1.25 per group), each warmed up by STLR. Chosen by measurement on rows never used for the reported figures
    (all-MiniLM-L6-v2, 1,000 training sentences, 3 epochs, `tl-nlp train-classifier`, BENCHMARKS.md), first with
    gradual unfreezing: SST-2 held-out accuracy 0.811 at 5e-5, 0.826 at 1e-4, 0.832 at 2e-4, 0.815 at 5e-4, 0.805 at
    1e-3 (`Trainer` at its defaults 0.834); SST-5 validation 0.328 at 5e-5, 0.412 at 1e-4, 0.431 at 2e-4 (`Trainer`
    0.430). At 5e-5 the head and the lower groups, trained for a part of the run only and at divided rates, did not
    catch up with `Trainer`, which trains everything at 5e-5 from the first step. Checked again without gradual
    unfreezing: SST-2 held-out 0.835 at 1e-4, 0.835 at 2e-4, 0.815 at 5e-4 (2 seeds); SST-5 validation 0.414, 0.431,
    0.423 (seed 0). 2e-4 stays.

    With `method="lora"` a transformer's default top rate is 1e-3 (`LORA_LEARNING_RATES`), 5x the full fine-tuning
    rate: the adapters start from a zero update and only a rank-8 product of them trains, so at 2e-4 they move too
    little in a few hundred steps. The LoRA paper (Hu et al. 2021) trained RoBERTa-base's adapters at 4e-4 to 5e-4 on
    GLUE, and peft's sequence-classification example RoBERTa-large's at 3e-4, both for many more steps (tens of
    epochs or the full GLUE sets) than a small labelled set gives; transformers and fastai have no LoRA default.
    Measured the same way (SST-2 held-out, 1,000 sentences, 3 epochs, 3 seeds each,
    BENCHMARKS.md): all-MiniLM-L6-v2 0.774 at 2e-4, 0.799 at 5e-4, 0.806 at 1e-3, 0.808 at 2e-3 (full fine-tuning
    at 2e-4: 0.832), SST-5 validation 0.309 at 2e-4 and 0.419 at 1e-3 (full: 0.431); SmolLM2-135M on SST-2 0.704
    at 2e-4 and 0.836 at 1e-3 (seed 0). 1e-3 is the lowest rate of the plateau.
    An AWD-LSTM's adapters keep the family's 1e-2 (not measured otherwise)."""

    stage: ClassVar[str] = "classifier"
    LEARNING_RATES: ClassVar[dict[str, float]] = {"awd_lstm": 1e-2, "transformer": 2e-4}
    LORA_LEARNING_RATES: ClassVar[dict[str, float]] = {"transformer": 1e-3}

    num_train_epochs: float = field(default=4.0, metadata={"help": "Epochs over the labelled texts."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    gradual_unfreezing: bool | None = field(
        default=None,
        metadata={
            "help": "Top layer group first, one more per stage (default: on for AWD-LSTM, off for Transformers)."
        },
    )
    learning_rate_from_lr_find: bool = field(
        default=False,
        metadata={
            "help": "Run the learning-rate range test on the model as training starts and train at its valley "
            "suggestion (instead of learning_rate)."
        },
    )


STAGE_TRAINING_ARGUMENTS: dict[str, type[StageTrainingArguments]] = {
    "pretrain": PretrainTrainingArguments,
    "finetune": FinetuneTrainingArguments,
    "classifier": ClassifierTrainingArguments,
}
TrainingLike = ULMFiTTrainingArguments | dict[str, Any] | None


def stage_training_arguments(
    stage: str,
    training_args: TrainingLike,
    output_dir: str | Path,
    family: str,
    dataset_name: str | None = None,
    method: str = "full",
) -> tuple[ULMFiTTrainingArguments, dict[str, str]]:
    """The training arguments a stage trains with, and where its recorded settings came from.

    Args:
        stage: `"pretrain"`, `"finetune"` or `"classifier"`.
        training_args: the stage's arguments (a `StageTrainingArguments` keeps its unset learning rate for this
            function to fill; a plain `ULMFiTTrainingArguments` is used as it is), a dict of fields for the stage's
            class, or None for its defaults. Without an `output_dir`, checkpoints go to `output_dir/checkpoints`.
        output_dir: the stage folder.
        family: `"awd_lstm"` or `"transformer"`, for the default learning rate.
        dataset_name: the training data's name for the training record, unless the arguments name it.
        method: the classifier's method (`"full"`, `"lora"`...), for the default learning rate.

    Returns:
        The arguments, and `{setting: "default" | "set by you"}` for `StageTrainingArguments` (empty otherwise).
    """
    arguments_class = STAGE_TRAINING_ARGUMENTS[stage]
    hub_options = sorted(HUB_OPTIONS & set(training_args if isinstance(training_args, dict) else ()))
    if hub_options or getattr(training_args, "push_to_hub", False):
        # The Trainer would create a repository named after the checkpoint folder and upload nothing at the end.
        raise ValueError(
            f"{', '.join(hub_options) or 'push_to_hub'} in the training arguments: a recipe stage uploads its own "
            "folder with its model card; pass hub=HubArguments(push_to_hub=True, hub_model_id=...) instead"
        )
    if not isinstance(training_args, ULMFiTTrainingArguments):
        training_args = arguments_class(
            **{"output_dir": str(Path(output_dir) / "checkpoints"), **(training_args or {})}
        )
    changes: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if isinstance(training_args, StageTrainingArguments):
        sources = training_args.setting_sources()
        if training_args.learning_rate is None:
            changes["learning_rate"] = training_args.default_learning_rate(family, method)
    if training_args.dataset_name is None and dataset_name:
        changes["dataset_name"] = dataset_name
    return (dataclasses.replace(training_args, **changes) if changes else training_args), sources


@dataclass
class UlmfitArguments:
    """The data and per-stage settings of the whole recipe (the classifier's data are --train_file and
    --validation_file, its training options the plain ones; stages 1-2 share the others)."""

    _argument_group_name = "stages 1 and 2 of the recipe"  # the heading of these options in --help

    pretrain_file: str | None = field(
        default=None, metadata={"help": "Stage 1 general-domain texts (file or Hub dataset); skipped with a model."}
    )
    pretrain_validation_file: str | None = field(default=None, metadata={"help": "Stage 1 validation texts."})
    pretrain_split: str = field(default="train", metadata={"help": "Split of a Hub stage-1 dataset."})
    pretrain_validation_split: str = field(default="validation", metadata={"help": "Its validation split."})
    pretrain_dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration."})
    pretrain_dataset_name: str | None = field(
        default=None, metadata={"help": "Stage 1 data's name in the training record (default: its file or Hub id)."}
    )
    max_pretrain_examples: int | None = field(
        default=None, metadata={"help": "At most this many stage-1 texts (lines), in training and validation."}
    )
    finetune_file: str | None = field(
        default=None, metadata={"help": "Stage 2 target-domain texts (unlabelled); stage 2 is skipped without."}
    )
    finetune_validation_file: str | None = field(default=None, metadata={"help": "Stage 2 validation texts."})
    finetune_split: str = field(default="train", metadata={"help": "Split of a Hub stage-2 dataset."})
    finetune_dataset_name: str | None = field(
        default=None, metadata={"help": "Stage 2 data's name in the training record (default: its file or Hub id)."}
    )
    finetune_rows: str | None = field(default=None, metadata={"help": "FILE:KEY, row indices of stage 2's texts."})
    finetune_validation_rows: str | None = field(default=None, metadata={"help": "FILE:KEY for its validation."})
    max_finetune_examples: int | None = field(default=None, metadata={"help": "At most this many stage-2 texts."})
    pretrain_epochs: float | None = field(default=None, metadata={"help": "Stage 1 epochs (> 0; default: 1)."})
    pretrain_learning_rate: float | None = field(
        default=None, metadata={"help": "Stage 1 learning rate (> 0; default: the stage's rate for the model family)."}
    )
    finetune_epochs: float | None = field(default=None, metadata={"help": "Stage 2 epochs (> 0; default: 1)."})
    finetune_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Stage 2 top group's peak learning rate (> 0; default: the stage's rate for the family)."},
    )
    lm_batch_size: int | None = field(
        default=None, metadata={"help": "Stages 1-2 batch size (AWD-LSTM streams) (>= 1; default: 32)."}
    )

    def __post_init__(self):
        for name in ("pretrain_epochs", "finetune_epochs", "pretrain_learning_rate", "finetune_learning_rate"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (or not given: the stage's default), got {getattr(self, name)}")
        if self.lm_batch_size is not None and self.lm_batch_size < 1:
            raise ValueError(f"lm_batch_size must be >= 1, got {self.lm_batch_size}")
        for name in ("max_pretrain_examples", "max_finetune_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class EvaluateArguments:
    """The metrics of a classifier (or a forward + backward ensemble) on labelled texts: accuracy and macro-F1, and
    for a model trained on another task its own (per-class and averaged scores for pairs and choices, Pearson and
    Spearman for regression, F1 and exact match for multi-label)."""

    _argument_group_name = "evaluation"  # the heading of these options in --help

    model_name_or_path: list[str] = field(
        default=None, metadata={"help": "Classifier folder(s) or Hub id(s); several are ensembled (mean probability)."}
    )
    test_file: str = field(default=None, metadata={"help": "Labelled texts: a local file or a Hub dataset."})
    split: str = field(default="test", metadata={"help": "Split of a Hub dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels (ids or names)."})
    rows: str | None = field(default=None, metadata={"help": "FILE:KEY, JSON row indices to evaluate on."})
    max_examples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many rows."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest input in tokens (>= 1; default: the length the classifier was trained with, saved as "
            "its tokenizer's model_max_length)."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Texts per forward pass (>= 1)."})
    output_file: str | None = field(default=None, metadata={"help": "Also write the metrics there as JSON."})
    confusion_matrix_file: str | None = field(
        default=None,
        metadata={"help": "Classes and multiple choice, one model: also write the confusion matrix there as a PNG."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub checkpoint's own code."})

    def __post_init__(self):
        if not self.model_name_or_path:
            raise ValueError("model_name_or_path is required: one classifier folder, or several for an ensemble")
        if self.confusion_matrix_file is not None and len(self.model_name_or_path) > 1:
            raise ValueError("confusion_matrix_file is for one model, not an ensemble")
        if not self.test_file:
            raise ValueError("test_file is required: a local file or a Hub dataset name")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 (or not given: every row), got {self.max_examples}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 (or not given), got {self.max_length}")

    def data(self) -> TextData:
        return TextData(
            self.test_file,
            split=self.split,
            config_name=self.dataset_config_name,
            text_column=self.text_column,
            label_column=self.label_column,
            rows=self.rows,
            max_examples=self.max_examples,
        )


@dataclass
class LRFindTaskArguments:
    """Which stage's model and data the learning-rate range test sweeps."""

    _argument_group_name = "learning-rate range test"  # the heading of these options in --help

    task: str = field(
        default="classifier", metadata={"help": "'classifier', 'finetune' (language model) or 'pretrain'."}
    )
    # `--task` names the stage here, so the classifier's task and its columns (train-classifier's TaskArguments) are
    # given as `--classifier_task` and the same column options.
    classifier_task: str | None = field(
        default=None,
        metadata={
            "help": f"--task classifier: the classifier's task, as train-classifier's --task ({', '.join(TASKS)}); "
            "inferred from the data when not given."
        },
    )
    text_pair_column: str | None = field(
        default=None, metadata={"help": "--task classifier: second text of a pair; inferred when not given."}
    )
    choice_columns: list[str] | None = field(
        default=None, metadata={"help": "--task classifier: candidate answers of a multiple-choice row."}
    )
    symmetric_pair: bool | None = field(
        default=None, metadata={"help": "--task classifier: as train-classifier's --symmetric_pair."}
    )

    def __post_init__(self):
        if self.task not in ("classifier", "finetune", "pretrain"):
            raise ValueError(f"task must be 'classifier', 'finetune' or 'pretrain', got {self.task!r}")
        given = [name for name, value in self._classifier_options().items() if value is not None]
        if given and self.task != "classifier":
            options = ", ".join(f"--{name}" for name in given)
            raise ValueError(f"{options}: for --task classifier only; --task {self.task} sweeps a language model")
        self.classifier_task_arguments()  # the same checks as train-classifier's options

    def _classifier_options(self) -> dict[str, Any]:
        return {
            "classifier_task": self.classifier_task,
            "text_pair_column": self.text_pair_column,
            "choice_columns": self.choice_columns,
            "symmetric_pair": self.symmetric_pair,
        }

    def classifier_task_arguments(self) -> TaskArguments | None:
        """train-classifier's [`TaskArguments`] from these options (None when none is given: all inferred)."""
        options = self._classifier_options()
        if all(value is None for value in options.values()):
            return None
        options["task"] = options.pop("classifier_task")
        try:
            return TaskArguments(**options)
        except ValueError as error:  # name the option as lr-find spells it
            raise ValueError(str(error).replace("task must", "classifier_task must", 1)) from None
