"""Classification metrics as `evaluate.Metric` classes that work offline (`evaluate.load` needs the Hub).

[`Accuracy`] and [`MacroF1`] compute what the Hub's `accuracy` and `f1` (`average="macro"`) metrics compute, and
[`classification_metrics`] builds the `compute_metrics` function a `Trainer` takes:

```python
>>> from tl_nlp.metrics import Accuracy, MacroF1
>>> Accuracy().compute(predictions=[0, 1, 1], references=[0, 1, 0])
{'accuracy': 0.6666666666666666}
>>> MacroF1().compute(predictions=[0, 1, 1], references=[0, 1, 0])
{'macro_f1': 0.6666666666666666}
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import datasets
import evaluate
import numpy as np
from transformers import EvalPrediction

_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to their reference label."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Fraction of predicted labels equal to the reference labels.",
            citation="",
            inputs_description="predictions, references: integer class ids of the same length.",
            features=_FEATURES,
        )

    def _compute(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if len(references) == 0:
            raise ValueError("Accuracy: no predictions to score.")
        return {"accuracy": float((predictions == references).mean())}


class MacroF1(evaluate.Metric):
    """Unweighted mean over classes of the F1 score (2 * precision * recall / (precision + recall)).

    The classes are those in `labels` when given to `compute`, else every class seen in the predictions or the
    references; a class with no true positive scores F1 = 0 (as scikit-learn's `zero_division=0`).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Macro-averaged F1: the mean of the per-class F1 scores.",
            citation="",
            inputs_description="predictions, references: integer class ids; labels (optional): the class ids.",
            features=_FEATURES,
        )

    def _compute(
        self, predictions: Sequence[int], references: Sequence[int], labels: Sequence[int] | None = None
    ) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if len(references) == 0:
            raise ValueError("MacroF1: no predictions to score.")
        classes = np.unique(np.concatenate([predictions, references])) if labels is None else np.asarray(labels)
        scores = []
        for label in classes:
            true_positives = int(((predictions == label) & (references == label)).sum())
            predicted = int((predictions == label).sum())
            actual = int((references == label).sum())
            # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + actual); 0 when the class never shows up right.
            scores.append(2 * true_positives / (predicted + actual) if true_positives else 0.0)
        return {"macro_f1": float(np.mean(scores))}


def classification_metrics(num_labels: int | None = None) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` function for `Trainer`: accuracy and macro-F1 of the argmax of the logits.

    Args:
        num_labels: the model's number of classes, so that a class absent from an evaluation set still counts
            (with F1 = 0 if it is predicted, as it should); every class seen otherwise.

    Example:

    ```python
    >>> trainer = Trainer(model=model, args=args, compute_metrics=classification_metrics(2))  # doctest: +SKIP
    >>> trainer.evaluate()["eval_macro_f1"]  # doctest: +SKIP
    ```
    """
    accuracy, macro_f1 = Accuracy(), MacroF1()
    labels = list(range(num_labels)) if num_labels is not None else None

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(-1)
        references = np.asarray(prediction.label_ids)
        return {
            **accuracy.compute(predictions=predicted, references=references),
            **macro_f1.compute(predictions=predicted, references=references, labels=labels),
        }

    return compute_metrics


# ---- metrics per task: classes, regression, multi-label, multiple choice ------------------------------------------


def confusion_matrix(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> np.ndarray:
    """`(num_labels, num_labels)` counts: row = reference class, column = predicted class (scikit-learn's layout).

    Example:

    ```python
    >>> confusion_matrix([0, 1, 1], [0, 1, 0], num_labels=2).tolist()
    [[1, 1], [0, 1]]
    ```
    """
    predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    if len(references) == 0:
        raise ValueError("confusion_matrix: no predictions to score.")
    for name, values in (("predictions", predictions), ("references", references)):
        if values.min() < 0 or values.max() >= num_labels:
            raise ValueError(f"confusion_matrix: {name} hold class ids outside 0..{num_labels - 1}.")
    return np.bincount(references * num_labels + predictions, minlength=num_labels**2).reshape(num_labels, num_labels)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # scikit-learn's zero_division=0: a class never predicted has precision 0, a class never present recall 0.
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def _precision_recall_f1(true_positives, predicted, actual) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    true_positives, predicted, actual = (np.asarray(v, dtype=float) for v in (true_positives, predicted, actual))
    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, actual)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + actual): 0 when the class never shows up right.
    f1 = _safe_divide(2 * true_positives, predicted + actual)
    return precision, recall, f1


def _label_names(num_labels: int, label_names: Sequence[str] | None) -> list[str]:
    names = [str(index) for index in range(num_labels)] if label_names is None else [str(n) for n in label_names]
    if len(names) != num_labels:
        raise ValueError(f"label_names has {len(names)} names for {num_labels} classes.")
    return names


def classification_report(
    predictions: Sequence[int],
    references: Sequence[int],
    num_labels: int,
    label_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Accuracy; precision, recall and F1 of every class; their macro (unweighted mean over the `num_labels`
    classes) and micro (pooled counts) averages, as scikit-learn's `precision_recall_fscore_support` computes them
    with `zero_division=0`. For single-label data micro precision, recall and F1 all equal the accuracy; they are
    reported anyway, as the parameter-transfer reference (Houlsby et al. 2019) reports all four.

    Args:
        predictions, references: class ids.
        num_labels: the model's number of classes (a class absent from the data still counts in the macro mean).
        label_names: names for the per-class keys (`f1_<name>`); the ids otherwise.

    Returns:
        `{"accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall", "micro_f1",
        "precision_<name>", "recall_<name>", "f1_<name>", ...}`.

    Example:

    ```python
    >>> report = classification_report([0, 1, 1], [0, 1, 0], num_labels=2, label_names=["neg", "pos"])
    >>> report["accuracy"], report["f1_neg"], report["recall_neg"]
    (0.6666666666666666, 0.6666666666666666, 0.5)
    ```
    """
    matrix = confusion_matrix(predictions, references, num_labels)
    names = _label_names(num_labels, label_names)
    true_positives = np.diag(matrix)
    precision, recall, f1 = _precision_recall_f1(true_positives, matrix.sum(0), matrix.sum(1))
    micro = _precision_recall_f1(true_positives.sum(), matrix.sum(), matrix.sum())
    report = {
        "accuracy": float(true_positives.sum() / matrix.sum()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "micro_f1": float(micro[2]),
    }
    for index, name in enumerate(names):
        report[f"precision_{name}"] = float(precision[index])
        report[f"recall_{name}"] = float(recall[index])
        report[f"f1_{name}"] = float(f1[index])
    return report


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span (what Spearman's coefficient needs)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values, and the mean rank of the run.
    starts = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    run = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    ends = np.concatenate([first[1:], [len(values)]])
    mean_rank = (first + ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[run]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def regression_metrics(predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlations (as scipy's `pearsonr` / `spearmanr`, ties at their mean rank) and the mean
    squared error. A constant prediction has no correlation: NaN, as scipy returns.

    Example:

    ```python
    >>> metrics = regression_metrics([0.1, 0.4, 0.3], [1.0, 3.0, 2.0])
    >>> round(metrics["pearson"], 4), metrics["spearman"]
    (0.982, 1.0)
    ```
    """
    predictions = np.asarray(predictions, dtype=float).reshape(-1)
    references = np.asarray(references, dtype=float).reshape(-1)
    if len(references) < 2 or len(predictions) != len(references):
        raise ValueError(
            f"regression_metrics: need 2 or more predictions, one per reference; got {len(predictions)} "
            f"predictions for {len(references)} references."
        )
    return {
        "pearson": _pearson(predictions, references),
        "spearman": _pearson(_average_ranks(predictions), _average_ranks(references)),
        "mse": float(((predictions - references) ** 2).mean()),
    }


def multi_label_metrics(
    probabilities: np.ndarray,
    references: np.ndarray,
    threshold: float = 0.5,
    label_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Multi-label scores: every label whose probability is at least `threshold` is predicted.

    Args:
        probabilities: `(rows, labels)` sigmoid outputs (or any scores on the threshold's scale).
        references: `(rows, labels)` multi-hot 0/1.
        threshold: the decision threshold (choose it on validation data with [`choose_threshold`]).
        label_names: names for the per-label F1 keys; the ids otherwise.

    Returns:
        `{"micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision", "macro_recall",
        "exact_match" (every label of the row right), "f1_<name>"...}`; macro averages run over every label, as
        scikit-learn's `f1_score(average="macro", zero_division=0)`.
    """
    probabilities, references = np.asarray(probabilities, dtype=float), np.asarray(references)
    if probabilities.ndim != 2 or probabilities.shape != references.shape or len(references) == 0:
        raise ValueError(
            f"multi_label_metrics: probabilities {probabilities.shape} and references {references.shape} must be the "
            "same (rows, labels) shape, with at least one row."
        )
    predicted = probabilities >= threshold
    actual = references.astype(bool)
    true_positives = (predicted & actual).sum(0)
    precision, recall, f1 = _precision_recall_f1(true_positives, predicted.sum(0), actual.sum(0))
    micro = _precision_recall_f1(true_positives.sum(), predicted.sum(), actual.sum())
    metrics = {
        "micro_f1": float(micro[2]),
        "macro_f1": float(f1.mean()),
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "exact_match": float((predicted == actual).all(1).mean()),
        "threshold": float(threshold),
    }
    for index, name in enumerate(_label_names(references.shape[1], label_names)):
        metrics[f"f1_{name}"] = float(f1[index])
    return metrics


# Thresholds tried by `choose_threshold`: 0.05 to 0.95 by 0.05.
THRESHOLD_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))


def choose_threshold(
    probabilities: np.ndarray,
    references: np.ndarray,
    criterion: str = "macro_f1",
    thresholds: Sequence[float] = THRESHOLD_GRID,
) -> float:
    """The one decision threshold, shared by every label, that maximises `criterion` on (validation) data.

    transformers and fastai default to 0.5 (fastai's `accuracy_multi(thresh=0.5)`); with many rare labels (GoEmotions:
    28 labels, most under 2% of rows) sigmoid outputs rarely reach 0.5 and recall collapses, so the threshold is
    chosen on validation data, as GoEmotions' authors did. Ties go to the threshold closest to 0.5.

    Args:
        probabilities, references: as for [`multi_label_metrics`].
        criterion: `"macro_f1"` (the default: every label counts equally, GoEmotions' headline figure), `"micro_f1"`
            or `"exact_match"`.
        thresholds: candidates (default 0.05, 0.10, ..., 0.95).
    """
    if criterion not in ("macro_f1", "micro_f1", "exact_match"):
        raise ValueError(f"criterion must be 'macro_f1', 'micro_f1' or 'exact_match', got {criterion!r}")
    candidates = sorted(thresholds, key=lambda value: abs(value - 0.5))
    scores = [multi_label_metrics(probabilities, references, value)[criterion] for value in candidates]
    return float(candidates[int(np.argmax(scores))])


def save_confusion_matrix_png(
    matrix: np.ndarray, path: str, label_names: Sequence[str] | None = None, title: str = "Confusion matrix"
) -> str:
    """Writes `matrix` (rows: true class, columns: predicted, as [`confusion_matrix`] returns it) as a PNG: counts in
    each cell, colour by the share of the true class (row), so that rare classes read as clearly as common ones.

    Needs matplotlib (`pip install tl_nlp[plot]`); it draws off-screen (Agg) and returns `path`.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import pyplot as plt
    except ImportError as error:
        raise ImportError("writing a confusion-matrix PNG needs matplotlib: pip install 'tl_nlp[plot]'") from error
    matrix = np.asarray(matrix)
    names = _label_names(len(matrix), label_names)
    shares = _safe_divide(matrix.astype(float), matrix.sum(1, keepdims=True).astype(float))
    size = max(4.0, 0.45 * len(names) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(names) <= 30:
        for row in range(len(names)):
            for column in range(len(names)):
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, int(matrix[row, column]), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy measured on `total` examples (`correct` right): the interval to report
    next to a test accuracy (e.g. COPA's 500 questions: 0.60 is 0.556 to 0.642 at 95%). Wilson's interval, unlike
    the normal approximation, stays inside [0, 1] and is accurate near 0 and 1 and for small `total`.

    Example:

    ```python
    >>> [round(bound, 3) for bound in accuracy_interval(300, 500)]
    [0.556, 0.642]
    ```
    """
    if total < 1 or not 0 <= correct <= total:
        raise ValueError(f"accuracy_interval: need 0 <= correct <= total and total >= 1, got {correct}/{total}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half_width = z / (1 + z * z / total) * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    # At 0 or `total` correct the bound is exactly 0 or 1 (the formula gives it up to rounding).
    low = 0.0 if correct == 0 else float(centre - half_width)
    high = 1.0 if correct == total else float(centre + half_width)
    return low, high


def task_compute_metrics(
    task: str, num_labels: int | None = None, threshold: float = 0.5
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` function for `Trainer` for one of `tl_nlp.tasks.TASKS`: accuracy, macro/micro F1 and
    macro precision/recall for classes (`single_text`, `text_pair`) and choices (`multiple_choice`); Pearson,
    Spearman and MSE for `regression`; micro/macro F1 and exact match at `threshold` for `multi_label` (the
    threshold for the final figures is chosen afterwards on validation data, see [`choose_threshold`]).

    Args:
        task: the task's name.
        num_labels: the number of classes (so that an absent class still counts); not needed for regression.
        threshold: the multi-label decision threshold.
    """

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        logits, references = np.asarray(logits, dtype=np.float64), np.asarray(prediction.label_ids)
        if task == "regression":
            return regression_metrics(logits.reshape(-1), references)
        if task == "multi_label":
            metrics = multi_label_metrics(1 / (1 + np.exp(-logits)), references, threshold)
            return {key: value for key, value in metrics.items() if not key.startswith("f1_")}
        classes = num_labels if num_labels is not None and task != "multiple_choice" else logits.shape[-1]
        report = classification_report(logits.argmax(-1), references, classes)
        averages = ("accuracy", "macro_f1", "micro_f1", "macro_precision", "macro_recall")
        return {key: report[key] for key in averages}

    return compute_metrics
