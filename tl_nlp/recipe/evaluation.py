"""Using a trained classifier: accuracy and macro-F1 on labelled texts, labels and probabilities for new texts, from
one classifier folder or the mean-probability ensemble of several (ULMFiT's forward + backward models)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from ..data import check_texts, encode_labels, ensemble_predict
from ..metrics import Accuracy, MacroF1
from ..models.context import context_length
from ..task_predictions import TaskPredictor
from ..tasks import TaskSpec, task_of_config
from .config import check_truncation_side
from .data import DataLike, RecipeError, TextData, as_dataset, columns_of, load_rows, source_name
from .loading import check_model_path, load_config, load_tokenizer

# A transformer classifier's longest input when neither the user nor the saved tokenizer says otherwise.
DEFAULT_MAX_LENGTH = 512


def classification_tokenizer(tokenizer, config, max_length: int | None = None):
    """How a classifier reads a text: cut at `max_length` tokens (default: the tokenizer's `model_max_length`, which
    the classifier stage saves as the length it trained with). Without either, AWD-LSTM reads documents of any length
    (BPT3C) and a transformer its first 512 tokens; a transformer never reads past its context length."""
    if max_length is None:
        saved = getattr(tokenizer, "model_max_length", None)
        # transformers marks "no limit" with a huge model_max_length.
        max_length = saved if saved is not None and saved < 1_000_000 else None
    if config.model_type == "awd_lstm":
        return (
            tokenizer if max_length is None else functools.partial(tokenizer, truncation=True, max_length=max_length)
        )
    max_length = max_length or DEFAULT_MAX_LENGTH
    return functools.partial(
        tokenizer, truncation=True, max_length=min(max_length, context_length(config) or max_length)
    )


def set_truncation(
    tokenizer,
    config,
    max_length: int | None,
    truncation_side: str,
    inference_max_length: int | None = None,
) -> int | None:
    """Sets how a new classifier reads a text on its tokenizer, which the stage saves, so that evaluation, `predict`
    and `pipeline(..., truncation=True)` read what the stage chose: `model_max_length` (`inference_max_length`,
    default `max_length`, default 512, never past the model's context) and `truncation_side` (`"right"` keeps a
    text's beginning, `"left"` its end).

    Returns the length training reads (`max_length`, default 512, at most the context), or None for a model that reads
    whole documents (AWD-LSTM with BPT3C and no `max_length`): its tokenizer stays as it is, and cutting from the
    left or reading a length at inference mean nothing there, so they are refused rather than ignored.
    """
    check_truncation_side(truncation_side)
    if inference_max_length is not None and inference_max_length < 1:
        raise RecipeError(f"inference_max_length must be >= 1 (or not given), got {inference_max_length}")
    if config.model_type == "awd_lstm" and max_length is None:
        refused = [f"truncation_side={truncation_side!r}"] if truncation_side != "right" else []
        if inference_max_length is not None:
            refused.append(f"inference_max_length={inference_max_length}")
        if refused:
            raise RecipeError(
                f"{', '.join(refused)}: an AWD-LSTM classifier reads whole documents (BPT3C) and cuts nothing; give "
                "max_length too, or drop them"
            )
        return None
    limit = context_length(config) or math.inf
    training_length = min(max_length or DEFAULT_MAX_LENGTH, limit)
    tokenizer.model_max_length = min(inference_max_length or training_length, limit)
    tokenizer.truncation_side = truncation_side
    # save_pretrained writes the init keywords (and model_max_length): without this the side would not be saved.
    tokenizer.init_kwargs["truncation_side"] = truncation_side
    return training_length


def load_classifiers(
    model_name_or_path: str | Path | Sequence[str | Path],
    trust_remote_code: bool = False,
    device: str | None = None,
    max_length: int | None = None,
) -> list[tuple[Any, Any]]:
    """`(model, encode)` pairs, in evaluation mode on `device`, for one classifier folder (or Hub id) or several."""
    paths = [model_name_or_path] if isinstance(model_name_or_path, str | Path) else list(model_name_or_path)
    if not paths:
        raise RecipeError("no classifier given")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifiers = []
    for path in paths:
        config = load_config(str(path), trust_remote_code, kind="classifier")
        tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, RuntimeError) as error:  # weights that do not fit the config, among others
            raise RecipeError(f"cannot load the classifier {path}: {str(error).strip().splitlines()[0]}") from None
        classifiers.append((model.to(device).eval(), classification_tokenizer(tokenizer, config, max_length)))
    labels = [dict(model.config.id2label) for model, _ in classifiers]
    if any(other != labels[0] for other in labels[1:]):
        # Averaging probabilities of classifiers with other classes (or another order) would mix up the labels.
        raise RecipeError(
            f"the classifiers of an ensemble must have the same classes in the same order, got {labels[0]} and "
            f"{next(other for other in labels[1:] if other != labels[0])}"
        )
    return classifiers


def as_text_list(texts: str | Sequence[str]) -> list[str]:
    """`texts` as a list, checked: one string is one text (as in `pipeline()`), not a list of characters; an empty
    list, or a text that is missing, not a string or blank, is a `TextDataError` naming its position."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise RecipeError("no texts to classify: pass a list of strings")
    check_texts(texts, "text", "texts")
    return texts


def predict_probabilities(
    model_name_or_path: str | Sequence[str],
    texts: Sequence[str],
    batch_size: int = 32,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Class probabilities of `texts` (`(len(texts), num_labels)`) and the labels, from one classifier folder or
    the mean over several (a forward + backward ensemble: each reads the texts with its own tokenizer)."""
    texts = as_text_list(texts)
    classifiers = load_classifiers(model_name_or_path, trust_remote_code, device, max_length)
    probabilities = ensemble_predict(classifiers, texts, batch_size=batch_size)
    id2label = {int(index): name for index, name in classifiers[0][0].config.id2label.items()}
    return probabilities, id2label


def predict(
    model_name_or_path: str | Sequence[str],
    texts: Sequence[str],
    batch_size: int = 32,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
) -> list[dict[str, Any]]:
    """Labels and probabilities for `texts`, from a classifier folder or an ensemble of them.

    Returns:
        One `{"text", "label", "score", "scores": {label: probability}}` per text, in input order.

    Example:

    ```python
    >>> predict(["runs/demo/classifier", "runs/demo/backward/classifier"], ["A wonderful film."])  # doctest: +SKIP
    [{'text': 'A wonderful film.', 'label': 'positive', 'score': 0.93, 'scores': {...}}]
    ```
    """
    texts = as_text_list(texts)
    probabilities, id2label = predict_probabilities(
        model_name_or_path, texts, batch_size, device, trust_remote_code, max_length
    )
    results = []
    for text, row in zip(texts, probabilities, strict=True):
        best = int(row.argmax())
        scores = {id2label[index]: float(value) for index, value in enumerate(row)}
        results.append({"text": text, "label": id2label[best], "score": float(row[best]), "scores": scores})
    return results


def classifier_metrics(classifiers: list[tuple[Any, Any]], data: DataLike, batch_size: int = 32) -> dict[str, float]:
    """`{"eval_accuracy", "eval_macro_f1", "eval_samples"}` of loaded classifiers (see [`load_classifiers`]) on
    labelled texts; labels are ids or names of the first classifier's `id2label`."""
    text_column, label_column = columns_of(data)
    dataset = as_dataset(data)
    name = source_name(data)
    if text_column not in dataset.column_names:
        raise RecipeError(f"{name}: no text column {text_column!r}; the columns are {dataset.column_names}")
    id2label = {int(index): label for index, label in classifiers[0][0].config.id2label.items()}
    names = [id2label[index] for index in range(len(id2label))]
    dataset, _, _ = encode_labels(dataset, label_column, names, source=name)
    # A missing, non-string or blank text would be scored as if it were a review (or crash the tokenizer).
    check_texts(dataset[text_column], text_column, name)
    predicted = ensemble_predict(classifiers, dataset[text_column], batch_size=batch_size).argmax(-1)
    references = np.asarray(dataset["labels"])
    return {
        "eval_accuracy": Accuracy().compute(predictions=predicted, references=references)["accuracy"],
        "eval_macro_f1": MacroF1().compute(predictions=predicted, references=references, labels=range(len(names)))[
            "macro_f1"
        ],
        "eval_samples": len(references),
    }


def evaluate_classifier(
    model_name_or_path: str | Sequence[str],
    data: DataLike,
    batch_size: int = 32,
    output_file: str | Path | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
    confusion_matrix_file: str | Path | None = None,
) -> dict[str, float]:
    """Accuracy and macro-F1 of a classifier (or the mean-probability ensemble of several) on labelled texts; a
    folder trained for another task (pairs, regression, multi-label, multiple choice: `config.tl_nlp_task`) is
    scored with that task's metrics by `tl_nlp.task_predictions.TaskPredictor`.

    Args:
        model_name_or_path: a classifier folder or Hub id, or several (forward + backward).
        data: labelled texts; labels are ids or names of the classifier's `id2label`.
        output_file: also write the metrics there as JSON (e.g. `eval_results.json`).
        max_length: longest transformer input in tokens (default: the length the classifier was trained with).
        confusion_matrix_file: one classifier of classes or choices: also write its confusion matrix as a PNG.

    Returns:
        `{"eval_accuracy", "eval_macro_f1", "eval_samples"}`.
    """
    single = isinstance(model_name_or_path, str | Path) or len(model_name_or_path) == 1
    if single and (confusion_matrix_file is not None or _has_task(model_name_or_path, trust_remote_code)):
        metrics = task_metrics(model_name_or_path, data, batch_size, device, trust_remote_code, confusion_matrix_file)
    else:
        classifiers = load_classifiers(model_name_or_path, trust_remote_code, device, max_length)
        metrics = classifier_metrics(classifiers, data, batch_size)
    if output_file is not None:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(output_file).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _has_task(model_name_or_path: str | Sequence[str], trust_remote_code: bool) -> bool:
    path = model_name_or_path if isinstance(model_name_or_path, str | Path) else model_name_or_path[0]
    return task_of_config(load_config(str(path), trust_remote_code)) is not None


def task_metrics(
    model_name_or_path: str | Sequence[str],
    data: DataLike,
    batch_size: int = 32,
    device: str | None = None,
    trust_remote_code: bool = False,
    confusion_matrix_file: str | Path | None = None,
) -> dict[str, float]:
    """The task's metrics of one model folder (see `TaskPredictor.evaluate`), with the confusion matrix PNG."""
    path = str(model_name_or_path if isinstance(model_name_or_path, str | Path) else model_name_or_path[0])
    check_model_path(path)
    predictor = TaskPredictor.from_pretrained(path, batch_size, device, trust_remote_code)
    if predictor.spec.task == "single_text" and isinstance(data, TextData):
        # A plain classifier: the columns the data names.
        predictor.spec = TaskSpec("single_text", text_column=data.text_column, label_column=data.label_column)
    if confusion_matrix_file is not None and predictor.spec.task in ("regression", "multi_label"):
        raise RecipeError(
            f"a confusion matrix is for classes and choices; this model's task is {predictor.spec.task!r}"
        )
    return predictor.evaluate(load_rows(data), source_name(data), confusion_matrix_file)
