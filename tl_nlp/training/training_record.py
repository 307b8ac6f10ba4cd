"""What a `ULMFiTTrainer` run did, as a `ULMFiTStage` added to the record of the model it started from.

`ULMFiTTrainer.save_model` writes the record as `ulmfit_training_record.json` next to the weights. The next stage
loads its model from that folder, and the trainer reads the file back from there (the model's `name_or_path`), so a
model trained in three runs (general LM, target LM, classifier) carries all three stages into its model card.
Every value comes from the run itself: the arguments, the training data, `trainer.state` and its log history.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult
from transformers import DataCollatorForLanguageModeling
from transformers.utils import cached_file

from ..data.lm_data import LanguageModelStreams
from ..hub import (
    OBJECTIVE_TASKS,
    TRAINING_RECORD_FILE,
    ULMFiTStage,
    ULMFiTTrainingRecord,
    model_objective,
    read_training_record,
)

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
        values.update(unfreeze_every_n_steps=None, unfreeze_at_fractions=None)
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
