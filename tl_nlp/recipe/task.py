"""ULMFiT stage 3 for tasks beyond one text and one label: text pairs, similarity and other regressions, multi-label
classes and multiple choice (`tl_nlp.tasks`), for BERT-style, GPT-style and AWD-LSTM checkpoints, with every ULMFiT
technique of the classifier stage (discriminative rates, STLR, gradual unfreezing, the auxiliary LM loss), trained in
full or with LoRA.

[`train_classifier`](tl_nlp.recipe.classifier) hands its data here whenever the task is not a single text with one
class, so the API, `tl-nlp train-classifier` and `tl-nlp ulmfit` take the same task options ([`TaskArguments`]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from transformers import set_seed

from ..data.task_encoding import (
    TaskDataCollator,
    add_task_tokens,
    check_label_count,
    encode_task_dataset,
    label_names_of,
    task_family,
)
from ..metrics import task_compute_metrics
from ..models.task_models import start_head_at_training_labels, task_model_from_pretrained
from ..task_predictions import TaskPredictor
from ..tasks import TaskSpec, infer_task
from ..training.chance_level import chance_level_loss
from ..training.lora import ULMFiTLoraArguments
from .config import HubArguments, TaskArguments, TrainingLike, check_method, stage_training_arguments
from .data import DataLike, RecipeError, TextData, data_description, load_rows, source_name
from .evaluation import set_truncation
from .loading import load_config, load_tokenizer, model_family, objective_or_none
from .methods import check_model_for_method, classifier_trainer, model_to_save, parameter_counts, wrap_classifier
from .results import PreparedStage, StageResult, print_metrics, save_trained_stage, stage_folder


def _given_columns(data: DataLike, dataset: datasets.Dataset) -> tuple[str | None, str | None]:
    """The text and label columns the user named, or None where the default name is absent (then inferred)."""
    text, label = (data.text_column, data.label_column) if isinstance(data, TextData) else ("text", "label")
    text = text if text in dataset.column_names or text != "text" else None
    label = label if label in dataset.column_names or label != "label" else None
    return text, label


# The task metrics a model card lists (all of them are in the folder's eval_results.json).
CARD_METRICS = tuple(
    f"eval_{name}" for name in ("accuracy", "macro_f1", "micro_f1", "pearson", "spearman", "exact_match", "threshold")
)


def task_chance_level_loss(
    spec: TaskSpec, labels: Any, label_names: Sequence[str] | None, label_smoothing: float = 0.0
) -> float | None:
    """The loss of the best constant prediction for a task's training labels (`chance_level_loss`): a multiple-choice
    head's softmax runs over the choices, every other head's loss follows the task's `problem_type`."""
    if spec.task == "multiple_choice":
        return chance_level_loss(labels, "single_label_classification", len(spec.choice_columns), label_smoothing)
    return chance_level_loss(labels, spec.problem_type, len(label_names) if label_names else None, label_smoothing)


def resolve_task(data: DataLike, task: TaskArguments | None = None) -> tuple[TaskSpec, str, datasets.Dataset]:
    """The task of labelled data: what `task` says, the rest inferred from the data (see `tl_nlp.tasks.infer_task`);
    returns the task, the sentence saying what was inferred, and the rows."""
    task = task or TaskArguments()
    dataset = load_rows(data)
    text_column, label_column = _given_columns(data, dataset)
    try:
        spec, reason = infer_task(
            dataset,
            task=task.task,
            text_column=text_column,
            text_pair_column=task.text_pair_column,
            label_column=label_column,
            choice_columns=task.choice_columns,
            symmetric_pair=task.symmetric_pair,
        )
    except ValueError as error:
        raise RecipeError(f"{source_name(data)}: {error}") from error
    return spec, reason, dataset


def prepare_task_classifier(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    task: TaskArguments | None = None,
    eval_data: DataLike | None = None,
    label_names: Sequence[str] | None = None,
    training_args: TrainingLike = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
    method: str = "full",
    auxiliary_lm_weight: float = 0.0,
    lora: ULMFiTLoraArguments | None = None,
    save_adapter: bool = False,
    truncation_side: str = "right",
    inference_max_length: int | None = None,
) -> PreparedStage:
    """The classifier stage of a task before `train()`: its rows checked and encoded for the model family, the task
    model (a new head; GPT's tokens added and embeddings resized for decoders) and its trainer.

    Args:
        model_name_or_path: the language model's folder or Hub id.
        train_data: the labelled rows ([`TextData`] names the text and label columns; inferred when they are the
            defaults and absent).
        output_dir: the stage folder.
        task: the task and its columns ([`TaskArguments`]; inferred from the data where not given).
        eval_data: validation rows: the task's metrics after training, and the multi-label threshold.
        label_names: class names in id order (classes, multi-label; default: the dataset's `ClassLabel` names).
        training_args, max_length, trust_remote_code, truncation_side, inference_max_length: as for
            `prepare_classifier` (a pair is cut on the side `truncation_side` names, its longer text first).
        method: `"full"` or `"lora"` (adapters in the backbone, the head in full; for a decoder the embeddings of
            GPT's added tokens train too, the rest stays frozen; the folder holds the merged model). Feature
            extraction is for single texts (`train_classifier`).
        auxiliary_lm_weight: GPT's auxiliary LM loss (AWD-LSTM and GPT-style models; every sequence of a row).
        lora, save_adapter: `method="lora"`: as for `prepare_classifier`.
    """
    check_method(method, auxiliary_lm_weight, lora)
    if method not in ("full", "lora"):
        raise RecipeError(
            f"method {method!r} is for single-text classifiers; tasks beyond them train with method 'full' or 'lora'"
        )
    if save_adapter and method != "lora":
        raise RecipeError(f"save_adapter saves a LoRA adapter, but method is {method!r}: use method 'lora'")
    output_dir = Path(output_dir)
    spec, reason, train_rows = resolve_task(train_data, task)
    config = load_config(model_name_or_path, trust_remote_code)
    tokenizer = load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
    check_model_for_method(
        method, auxiliary_lm_weight, config, objective_or_none(config, tokenizer), str(model_name_or_path)
    )
    try:
        family = task_family(config)
    except ValueError as error:
        raise RecipeError(f"{model_name_or_path}: {error}") from error
    if family == "encoder" and spec.symmetric_pair:
        # An encoder reads both texts at once (its own pair encoding): both orders are for left-to-right models.
        if task is not None and task.symmetric_pair:
            print("  symmetric_pair: an encoder reads both texts of a pair at once; the pair is read once")
        spec = dataclasses.replace(spec, symmetric_pair=False)
    print(f"  task: {spec.describe()}" + (f" ({reason})" if reason else ""))
    if family == "awd_lstm" and max_length is not None:
        raise RecipeError(f"max_length={max_length}: an AWD-LSTM classifier reads whole documents; drop max_length")
    training_length = set_truncation(tokenizer, config, max_length, truncation_side, inference_max_length)
    args, settings = stage_training_arguments(
        "classifier", training_args, output_dir, model_family(config), data_description(train_data), method
    )
    vocabulary = len(tokenizer)
    if family == "decoder":
        add_task_tokens(tokenizer)
    added_tokens = list(range(vocabulary, len(tokenizer)))  # GPT's new tokens: no pretrained embedding to keep
    names = list(label_names) if label_names is not None else label_names_of(train_rows, spec.label_column)
    encode = dict(spec=spec, tokenizer=tokenizer, family=family, max_length=training_length)
    train, id2label, _ = encode_task_dataset(train_rows, label_names=names, source=source_name(train_data), **encode)
    encode["max_length"] = training_length and tokenizer.model_max_length  # evaluation reads what predict will
    check_label_count(spec, id2label, source_name(train_data))
    names = [id2label[index] for index in range(len(id2label))] if id2label else None
    evaluation = None
    if eval_data is not None:
        eval_rows = load_rows(eval_data)
        evaluation, _, _ = encode_task_dataset(eval_rows, label_names=names, source=source_name(eval_data), **encode)
    set_seed(args.seed)  # the new head's weights
    model = task_model_from_pretrained(
        model_name_or_path,
        spec,
        family,
        id2label,
        vocab_size=len(tokenizer),
        trust_remote_code=trust_remote_code,
        pad_token_id=tokenizer.pad_token_id,
    )
    if start_head_at_training_labels(model, spec, train["labels"]):
        start = "each label's rate" if spec.task == "multi_label" else "the mean score"
        print(f"  head: starts from the training labels ({start}), not from zero")
    model = wrap_classifier(model, method, auxiliary_lm_weight, lora, trained_tokens=added_tokens)
    trainer, guard = classifier_trainer(
        model,
        args,
        train,
        TaskDataCollator(tokenizer),
        task_compute_metrics(spec.task, len(names) if names else None),
        auxiliary_lm_weight,
    )
    return PreparedStage(
        "classifier",
        output_dir,
        trainer,
        tokenizer,
        guard,
        evaluation,
        method=method,
        save_adapter=save_adapter,
        parameter_counts=parameter_counts(model),
        settings=settings,
        task=spec,
        eval_rows=eval_rows if eval_data is not None else None,
        chance_loss=task_chance_level_loss(spec, train["labels"], names, args.label_smoothing_factor),
    )


def train_task_classifier(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    hub: HubArguments | None = None,
    **kwargs: Any,
) -> StageResult:
    """Trains, evaluates and saves the classifier stage of a task (see [`prepare_task_classifier`] for the
    arguments). A multi-label model's decision threshold is chosen on `eval_data` (the validation rows; 0.5 without
    them) and saved in its config; the folder loads with `tl_nlp.task_predictions.TaskPredictor` and, for every
    task but multiple choice, `pipeline("text-classification")`.

    Returns:
        A [`StageResult`] with the training metrics and, with `eval_data`, the task's metrics (`eval_accuracy` and
        macro/micro F1; `eval_pearson`, `eval_spearman`; `eval_macro_f1`, `eval_micro_f1`, `eval_exact_match`,
        `eval_threshold`).

    Example:

    ```python
    >>> train_task_classifier("runs/minilm", TextData("../shared/data/glue_stsb/train.parquet"), "runs/stsb",
    ...                       eval_data=TextData("../shared/data/glue_stsb/validation.parquet"))  # doctest: +SKIP
    ```
    """
    # The stage owns its folder (a second run on it is refused) and resumes from its last checkpoint on request.
    with stage_folder(output_dir, kwargs.get("training_args")) as checkpoint:
        if isinstance(checkpoint, StageResult):
            return checkpoint
        prepared = prepare_task_classifier(model_name_or_path, train_data, output_dir, **kwargs)
        trainer, spec = prepared.trainer, prepared.task
        is_main = trainer.is_world_process_zero()
        metrics: dict[str, dict] = {"train": prepared.train_classifier(checkpoint, f"{spec.task}: train")}
        model = model_to_save(trainer.model, prepared.output_dir, prepared.save_adapter, is_main)
        if prepared.eval_dataset is not None:
            predictor = TaskPredictor(model, prepared.tokenizer, spec, trainer.args.per_device_eval_batch_size)
            if spec.task == "multi_label":
                threshold = predictor.choose_threshold(prepared.eval_rows, source_name(kwargs["eval_data"]))
                if is_main:
                    print(f"  multi-label threshold chosen on the validation rows (macro-F1): {threshold}")
            metrics["eval"] = predictor.evaluate(prepared.eval_rows, source_name(kwargs["eval_data"]))
            # Into the stage's training record, and from there the model card (the averages; every class is in
            # eval_results.json).
            trainer.log({key: value for key, value in metrics["eval"].items() if key in CARD_METRICS})
            if is_main:
                print_metrics(f"{spec.task}: {len(prepared.eval_dataset)} validation rows", metrics["eval"])
        model.train(False)
        return save_trained_stage(prepared, model, metrics, hub)
