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
