"""The training record: what happened in training (`ULMFiTStage`, `ULMFiTTrainingRecord`), read and written as
`ulmfit_training_record.json`, and built from a `ULMFiTTrainer` run.

`ULMFiTTrainer.save_model` writes the record next to the weights. The next stage loads its model from that folder,
and the trainer reads the file back from there (the model's `name_or_path`), so a model trained in three runs (general
LM, target LM, classifier) carries all three stages into its model card (`tl_nlp.training.model_card`). Every value
comes from the run itself: the arguments, the training data, `trainer.state` and its log history.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult
from torch import nn
from transformers import DataCollatorForLanguageModeling
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)
from transformers.utils import cached_file

from ..config_files import read_mapping_file
from ..data.lm_data import LanguageModelStreams
from ..models.awd_lstm import AWDLSTMForSequenceClassification, AWDLSTMPreTrainedModel

# "language-modeling" is next-token prediction (AWD-LSTM, GPT-style); "masked-language-modeling" is BERT-style.
OBJECTIVES = ("language-modeling", "masked-language-modeling", "classification")
TRAINING_RECORD_FILE = "ulmfit_training_record.json"
# Where a recipe stage's setting came from, in `ULMFiTStage.settings`.
SETTING_SOURCES = ("default", "set by you")
# Per objective: the model's pipeline task, its Auto class and what the card calls it.
OBJECTIVE_TASKS = {
    "language-modeling": ("text-generation", "AutoModelForCausalLM", "language model"),
    "masked-language-modeling": ("fill-mask", "AutoModelForMaskedLM", "masked language model"),
    "classification": ("text-classification", "AutoModelForSequenceClassification", "text classifier"),
}


@dataclass
class ULMFiTStage:
    """One ULMFiT training stage as it was run. Field names follow `ULMFiTTrainingArguments`; None means unknown
    or not applicable, and the card leaves it out."""

    name: str = field(metadata={"help": "What the stage was, e.g. 'target-task language model fine-tuning'."})
    objective: str = field(metadata={"help": f"One of {OBJECTIVES}."})
    dataset: str = field(metadata={"help": "Hub id of the data (e.g. 'stanfordnlp/imdb') or a short description."})
    dataset_split: str | None = field(default=None, metadata={"help": "Split(s) trained on, e.g. 'train+unsup'."})
    num_examples: int | None = field(default=None, metadata={"help": "Documents trained on."})
    num_tokens: int | None = field(default=None, metadata={"help": "Tokens trained on (language models)."})
    num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs over the data."})
    num_train_steps: int | None = field(default=None, metadata={"help": "Optimizer steps run."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate of the top layer group."})
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "Batch size per device."})
    bptt: int | None = field(default=None, metadata={"help": "Window length of language-model training."})
    discriminative_lr_decay: float | None = field(
        default=None, metadata={"help": "Each lower layer group's rate is the one above divided by this (2.6)."}
    )
    use_stlr: bool = field(default=False, metadata={"help": "Whether slanted triangular learning rates were used."})
    stlr_cut_frac: float = field(default=0.1, metadata={"help": "Fraction of the steps during which STLR rose."})
    stlr_ratio: float = field(default=32.0, metadata={"help": "Peak rate divided by the lowest STLR rate."})
    gradual_unfreezing: bool = field(
        default=False, metadata={"help": "Whether layer groups were unfrozen one by one."}
    )
    unfreeze_every_n_steps: int | None = field(default=None, metadata={"help": "Steps between unfreezing stages."})
    unfreeze_at_fractions: list[float] | None = field(
        default=None, metadata={"help": "Fractions of the steps at which unfreezing stages began."}
    )
    trainable_groups: list[int] | None = field(
        default=None,
        metadata={
            "help": "Layer groups trainable in each unfreezing stage, top down (the first stage, then one entry per "
            "fraction of unfreeze_at_fractions), out of num_layer_groups."
        },
    )
    num_layer_groups: int | None = field(default=None, metadata={"help": "Layer groups of the model."})
    dropout_multiplier: float | None = field(default=None, metadata={"help": "Scale of every dropout (drop_mult)."})
    weight_decay: float | None = field(default=None, metadata={"help": "Weight decay."})
    metrics: dict[str, float] = field(default_factory=dict, metadata={"help": "Metrics at the end of the stage."})
    notes: str | None = field(default=None, metadata={"help": "Anything else a reader should know, one sentence."})
    settings: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Where each of the stage's main settings came from: 'default' (the recipe's default for the stage "
            "and model family) or 'set by you'."
        },
    )

    def __post_init__(self):
        for name in ("name", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"ULMFiTStage.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"ULMFiTStage.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in (
            "num_examples",
            "num_tokens",
            "num_train_steps",
            "per_device_train_batch_size",
            "bptt",
            "unfreeze_every_n_steps",
            "num_layer_groups",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ULMFiTStage.{name} must be a positive integer or None, got {value!r}")
        for name in ("num_train_epochs", "learning_rate", "discriminative_lr_decay"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"ULMFiTStage.{name} must be > 0 or None, got {value!r}")
        if not 0 < self.stlr_cut_frac < 1:
            raise ValueError(f"ULMFiTStage.stlr_cut_frac must be in (0, 1), got {self.stlr_cut_frac!r}")
        if not self.stlr_ratio >= 1:
            raise ValueError(f"ULMFiTStage.stlr_ratio must be >= 1, got {self.stlr_ratio!r}")
        fractions = self.unfreeze_at_fractions
        if fractions is not None and not (
            all(0 < f < 1 for f in fractions) and all(a < b for a, b in zip(fractions, fractions[1:], strict=False))
        ):
            raise ValueError(f"ULMFiTStage.unfreeze_at_fractions must increase inside (0, 1), got {fractions!r}")
        groups = self.trainable_groups
        if groups is not None and not (
            groups
            and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in groups)
            and all(a < b for a, b in zip(groups, groups[1:], strict=False))
            and (self.num_layer_groups is None or groups[-1] <= self.num_layer_groups)
            and (fractions is None or len(groups) == len(fractions) + 1)
        ):
            raise ValueError(
                "ULMFiTStage.trainable_groups must be increasing positive group counts, one for the first stage and "
                f"one per unfreezing fraction, at most num_layer_groups; got {groups!r}"
            )
        for key, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"ULMFiTStage.metrics[{key!r}] must be a number, got {value!r}")
        for key, value in self.settings.items():
            if value not in SETTING_SOURCES:
                raise ValueError(f"ULMFiTStage.settings[{key!r}] must be one of {SETTING_SOURCES}, got {value!r}")

    @classmethod
    def from_training_arguments(cls, args: Any, **values) -> ULMFiTStage:
        """The stage of a run made with `args` (a `ULMFiTTrainingArguments` or `TrainingArguments`); `values` give
        the rest (name, objective, dataset, metrics...) and override what `args` says."""
        from_args = {}
        for f in fields(cls):
            if hasattr(args, f.name):
                from_args[f.name] = getattr(args, f.name)
        # A decay of 1.0 means every layer group shared one rate: the card then says so.
        if from_args.get("discriminative_lr_decay") == 1.0:
            from_args["discriminative_lr_decay"] = None
        return cls(**{**from_args, **values})


@dataclass
class ULMFiTTrainingRecord:
    """What happened in training, from which [`build_model_card`] writes the card."""

    stages: list[ULMFiTStage] = field(metadata={"help": "The stages in the order they ran (pretraining first)."})
    language: str | list[str] = field(default="en", metadata={"help": "ISO 639-1 code(s) of the text."})
    license: str = field(default="apache-2.0", metadata={"help": "Hub license id of the weights."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id of the model this one started from."})
    eval_results: list[EvalResult] = field(
        default_factory=list, metadata={"help": "Final evaluation results (go into the card's model-index)."}
    )
    limitations: list[str] = field(
        default_factory=list, metadata={"help": "Known limitations beyond those the card derives itself."}
    )

    def __post_init__(self):
        if not self.stages:
            raise ValueError("ULMFiTTrainingRecord.stages must list at least one stage")
        for index, stage in enumerate(self.stages):
            if not isinstance(stage, ULMFiTStage):
                raise ValueError(
                    f"ULMFiTTrainingRecord.stages[{index}] is {type(stage).__name__}, expected ULMFiTStage"
                )
        for index, result in enumerate(self.eval_results):
            if not isinstance(result, EvalResult):
                raise ValueError(
                    f"ULMFiTTrainingRecord.eval_results[{index}] is {type(result).__name__}, expected EvalResult"
                )
        if not isinstance(self.license, str) or not self.license or self.license != self.license.strip().lower():
            raise ValueError(f"ULMFiTTrainingRecord.license must be a lower-case Hub license id, got {self.license!r}")

    @classmethod
    def from_dict(cls, values: dict) -> ULMFiTTrainingRecord:
        """Builds a record from plain data (a parsed JSON or YAML file), naming any unknown or bad key."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training record key(s) {sorted(unknown)}; expected some of {sorted(known)}")
        values = dict(values)
        stage_fields = {f.name for f in fields(ULMFiTStage)}
        stages = []
        for index, stage in enumerate(values.pop("stages", [])):
            if not isinstance(stage, dict):
                raise ValueError(f"training record stages[{index}] is {type(stage).__name__}, expected a mapping")
            unknown = set(stage) - stage_fields
            if unknown:
                raise ValueError(f"training record stages[{index}] has unknown key(s) {sorted(unknown)}")
            try:
                stages.append(ULMFiTStage(**stage))
            except (TypeError, ValueError) as error:
                raise ValueError(f"training record stages[{index}]: {error}") from error
        results = []
        for index, result in enumerate(values.pop("eval_results", [])):
            try:
                results.append(EvalResult(**result))
            except (TypeError, ValueError) as error:
                raise ValueError(f"training record eval_results[{index}]: {error}") from error
        return cls(stages=stages, eval_results=results, **values)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["eval_results"] = [
            {k: v for k, v in vars(result).items() if v is not None} for result in self.eval_results
        ]
        return values


def model_objective(model: nn.Module) -> str | None:
    """The training objective a model's class is built for, one of `OBJECTIVES`, or None when it is none of them.

    AWD-LSTM classifiers are `"classification"` and the other AWD-LSTM models `"language-modeling"`; other models
    are looked up by class name in transformers' Auto mappings (sequence classification, then masked LM, then causal
    LM, the order that settles the few classes listed twice).

    Args:
        model: the model, possibly wrapped by peft (its base model is looked at).
    """
    if hasattr(model, "get_base_model"):  # a peft model
        model = model.get_base_model()
    if isinstance(model, AWDLSTMForSequenceClassification):
        return "classification"
    if isinstance(model, AWDLSTMPreTrainedModel):
        return "language-modeling"
    return class_objective(type(model).__name__)


def class_objective(name: str) -> str | None:
    # A multiple-choice model classifies a row's choices (tl_nlp.tasks): a classifier for the card and record.
    if name in set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values()) or name.endswith(
        ("ForSequenceClassification", "ForMultipleChoice")
    ):
        return "classification"
    if name in set(MODEL_FOR_MASKED_LM_MAPPING_NAMES.values()) or name.endswith("ForMaskedLM"):
        return "masked-language-modeling"
    if name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith("ForCausalLM"):
        return "language-modeling"
    return None


def write_training_record(record: ULMFiTTrainingRecord, folder: str | Path) -> Path:
    """Writes `record` as `ulmfit_training_record.json` into `folder` (created if needed) and returns the file.

    Args:
        record: what happened in training.
        folder: a model folder.
    """
    path = Path(folder) / TRAINING_RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return path


def read_training_record(path: str | Path) -> ULMFiTTrainingRecord:
    """Reads a [`ULMFiTTrainingRecord`] from a JSON or YAML file, naming the file in any error."""
    path = Path(path)
    values = read_mapping_file(path, "training record")
    try:
        return ULMFiTTrainingRecord.from_dict(values)
    except ValueError as error:
        raise ValueError(f"training record {path}: {error}") from error


logger = logging.getLogger(__name__)

# What `from_pretrained` accepts as a Hub id ("gpt2", "user/name"); anything else that is not a folder is left alone.
HUB_ID = re.compile(r"([\w.-]+/)?[\w.-]+")
# `load_dataset("parquet", data_files=...)` names the dataset after its file format; that is no name for a card.
FILE_FORMAT_BUILDERS = ("arrow", "csv", "json", "pandas", "parquet", "text", "xml")
# Run statistics that Trainer logs with the evaluation metrics: properties of the run, not of the model.
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")
UNNAMED_DATA = "unnamed data"


@dataclass
class StartingPoint:
    """Where a model came from before this run.

    Args:
        source: the model's `name_or_path` (a folder or a Hub id), `None` for a model built from a config.
        record: the training record found there, if any.
        hub_id: `source` when it is a Hub repository (the card's `base_model`).
    """

    source: str | None = None
    record: ULMFiTTrainingRecord | None = None
    hub_id: str | None = None


def find_starting_point(model: Any, previous_training_record: str | None = None) -> StartingPoint:
    """Reads the training record of the folder or Hub repository `model` was loaded from.

    Args:
        model: the model a trainer starts from (peft models: their base model's `name_or_path`).
        previous_training_record: a folder holding `ulmfit_training_record.json`, or the file itself, to read
            instead (for a model handed on in memory from the previous stage).

    Raises:
        ValueError: when a record file is not a valid record, or `previous_training_record` names none.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    config = getattr(model, "config", None)
    source = str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")
    if previous_training_record is not None:
        path = Path(previous_training_record)
        path = path / TRAINING_RECORD_FILE if path.is_dir() else path
        if not path.is_file():
            raise ValueError(
                f"previous_training_record={previous_training_record!r}: no such file or folder with "
                f"{TRAINING_RECORD_FILE}; give the folder the previous stage was saved to (trainer.save_model)."
            )
        hub_id = source if source and not Path(source).exists() and HUB_ID.fullmatch(source) else None
        return StartingPoint(str(path.parent), read_training_record(path), hub_id)
    if not source:
        return StartingPoint()
    folder = Path(source)
    if folder.is_dir():
        path = folder / TRAINING_RECORD_FILE
        return StartingPoint(source, read_training_record(path) if path.is_file() else None)
    if not HUB_ID.fullmatch(source):
        return StartingPoint(source)
    try:
        path = cached_file(
            source,
            TRAINING_RECORD_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError as error:  # a gated or private repository, a bad revision
        logger.warning(
            "Could not read %s from %s (%s); its earlier stages are left out.", TRAINING_RECORD_FILE, source, error
        )
        path = None
    return StartingPoint(source, read_training_record(path) if path else None, hub_id=source)


def training_objective(model: Any, train_dataset: Any, data_collator: Any) -> str | None:
    """The objective of a run, one of `tl_nlp.hub.OBJECTIVES`, or None if it is none of them: from the language-model
    collator or streams when there are any, else from the model's class."""
    if isinstance(data_collator, DataCollatorForLanguageModeling):
        return "masked-language-modeling" if data_collator.mlm else "language-modeling"
    if isinstance(train_dataset, LanguageModelStreams):
        return "language-modeling"
    return model_objective(model)


def dataset_name_and_split(dataset: Any) -> tuple[str | None, str | None]:
    """The name and split a `datasets.Dataset` knows about itself (set by `load_dataset`), or None."""
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None)
    if name in FILE_FORMAT_BUILDERS:
        name = f"local {name} files"
    split = getattr(dataset, "split", None)
    return name or None, str(split) if split else None


def data_statistics(dataset: Any, objective: str) -> dict[str, int]:
    """What the stage read: documents, tokens, window length and streams per device for `LanguageModelStreams`;
    tokens for other language-model data (packed blocks are not documents); rows for classification data."""
    if isinstance(dataset, LanguageModelStreams):
        return {
            "num_examples": len(dataset.offsets) - 1,
            "num_tokens": dataset.num_tokens,
            "bptt": dataset.bptt,
            "per_device_train_batch_size": dataset.batch_size,
        }
    if objective != "classification" and "input_ids" in (getattr(dataset, "column_names", None) or []):
        import pyarrow.compute

        lengths = pyarrow.compute.list_value_length(dataset.with_format("arrow")["input_ids"])
        return {"num_tokens": int(pyarrow.compute.sum(lengths).as_py() or 0)} if len(dataset) else {}
    try:
        return {"num_examples": len(dataset)}
    except TypeError:  # an iterable dataset of unknown length
        return {}


def final_metrics(log_history: list[dict[str, Any]], objective: str) -> dict[str, float]:
    """The stage's closing numbers from `trainer.state.log_history`.

    `train_loss` is the last logged training loss (the mean over the last `logging_steps`), or the mean over the
    whole run when no step was logged; then the last evaluation's metrics without their `eval_` prefix (the loss
    stays `eval_loss`), and for language models `perplexity = exp(eval_loss)` unless a perplexity was logged.
    """
    metrics: dict[str, float] = {}
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    run_means = [entry["train_loss"] for entry in log_history if "train_loss" in entry]
    if losses or run_means:
        metrics["train_loss"] = float((losses or run_means)[-1])
    evaluations = [entry for entry in log_history if any(key.startswith("eval_") for key in entry)]
    # The last evaluation, with anything else logged as `eval_*` at the same step (e.g. a perplexity over streams).
    last = [entry for entry in evaluations if entry.get("step") == evaluations[-1].get("step")] if evaluations else []
    for entry in last:
        for key, value in entry.items():
            if not key.startswith("eval_") or key.endswith(SPEED_SUFFIXES):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics["eval_loss" if key == "eval_loss" else key.removeprefix("eval_")] = float(value)
    if objective != "classification" and "eval_loss" in metrics and metrics["eval_loss"] < 700:
        # A perplexity logged as `eval_perplexity` (e.g. over whole streams) wins over exp(mean batch loss).
        metrics.setdefault("perplexity", math.exp(metrics["eval_loss"]))
    return metrics


def default_stage_name(objective: str, starting_point: StartingPoint) -> str:
    """ "classifier fine-tuning", or "(masked) language model pretraining" for a model built from a config and
    "... fine-tuning" for one loaded from a folder or the Hub."""
    if objective == "classification":
        return "classifier fine-tuning"
    what = "masked language model" if objective == "masked-language-modeling" else "language model"
    return f"{what} {'fine-tuning' if starting_point.source else 'pretraining'}"


def run_stage(
    args: Any,
    state: Any,
    train_dataset: Any,
    objective: str,
    starting_point: StartingPoint,
) -> ULMFiTStage | None:
    """The stage this run added, or None before its first optimizer step.

    Args:
        args: the run's `ULMFiTTrainingArguments` (hyperparameters, and the optional stage name, dataset name and
            split).
        state: the trainer's `TrainerState` (epochs and steps run, log history).
        train_dataset: the training data.
        objective: the run's objective (see [`training_objective`]).
        starting_point: where the model came from (for the default stage name).
    """
    if not state.global_step:
        return None
    name, split = dataset_name_and_split(train_dataset)
    if args.dataset_name is None and name is None:
        logger.warning(
            "The training data has no name: the training record says %r. Set ULMFiTTrainingArguments.dataset_name "
            "(a Hub id such as 'stanfordnlp/imdb', or a short description) to name it in the model card.",
            UNNAMED_DATA,
        )
    values: dict[str, Any] = {
        "name": args.ulmfit_stage_name or default_stage_name(objective, starting_point),
        "objective": objective,
        "dataset": args.dataset_name or name or UNNAMED_DATA,
        "dataset_split": args.dataset_split or split,
        "num_train_epochs": round(state.epoch, 4) if state.epoch else None,
        "num_train_steps": state.global_step,
        "metrics": final_metrics(state.log_history, objective),
        **data_statistics(train_dataset, objective),
    }
    if not args.gradual_unfreezing:
        values.update(unfreeze_every_n_steps=None, unfreeze_at_fractions=None, trainable_groups=None)
    return ULMFiTStage.from_training_arguments(args, **values)


def chain_record(
    starting_point: StartingPoint,
    stage: ULMFiTStage | None,
    language: str | None = None,
    eval_split: str | None = None,
) -> ULMFiTTrainingRecord | None:
    """The record of the model after this run: the stages of the record it started from, then `stage`.

    The evaluation results (the card's model-index) are `stage`'s evaluation metrics, on `stage.dataset` when it is
    a Hub id; the earlier model's results are not this model's and are dropped. None when there is no stage at all.

    Args:
        starting_point: the model's origin and its record.
        stage: this run's stage (None if it did not train).
        language: ISO 639 code of the text; default: the earlier record's, else "en".
        eval_split: the split of the evaluation data, when known.
    """
    earlier = starting_point.record
    if stage is None:
        return earlier
    eval_results = []
    if " " not in stage.dataset:
        task_type = OBJECTIVE_TASKS[stage.objective][0]
        for key, value in stage.metrics.items():
            if key != "train_loss":
                eval_results.append(
                    EvalResult(
                        task_type=task_type,
                        dataset_type=stage.dataset,
                        dataset_name=stage.dataset,
                        dataset_split=eval_split,
                        metric_type="loss" if key == "eval_loss" else key,
                        metric_value=value,
                    )
                )
    # The license and limitations carry over; the Hub model this run started from is the card's base model.
    inherited = {"license": earlier.license, "limitations": list(earlier.limitations)} if earlier else {}
    return ULMFiTTrainingRecord(
        stages=[*(earlier.stages if earlier else []), stage],
        language=language or (earlier.language if earlier else "en"),
        base_model=starting_point.hub_id or (earlier.base_model if earlier else None),
        eval_results=eval_results,
        **inherited,
    )
