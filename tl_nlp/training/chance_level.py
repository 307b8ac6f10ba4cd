"""Whether a classifier learnt anything: its training loss against the loss of the best constant prediction.

A fine-tuning run on a small labelled set can fail without an error: the model settles on the label rates, whatever
the text says, and its training loss stays where it started (Mosbach et al. 2021, "On the Stability of Fine-tuning
BERT", count such runs on RTE, MRPC and CoLA; Dodge et al. 2020 restart them with another seed). The saved folder then
looks like any other. The yardstick is the loss of the best prediction that ignores its input, for the loss the model
trains with ([`chance_level_loss`]); [`not_learnt_message`] compares the end of the logged training loss with it.
Neither transformers' `Trainer` nor fastai says anything in this case.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# A run is called "not learnt" when its training loss ends within this share of the chance level. The logged loss of
# a model stuck at the label rates sits at the chance level, up to the sampling noise of the rows in the last logs;
# a run on RTE's 2,490 pairs that learnt, if little, ended 3.8% below it (BENCHMARKS.md).
CHANCE_LEVEL_TOLERANCE = 0.02
# The end of the run: the losses logged in its last tenth of optimizer steps (at least the last one logged).
FINAL_FRACTION = 0.1


def _entropy(rates: np.ndarray) -> float:
    rates = rates[rates > 0]
    return float(-(rates * np.log(rates)).sum())


def chance_level_loss(
    labels: Any, problem_type: str, num_classes: int | None = None, label_smoothing: float = 0.0
) -> float | None:
    """The training loss of the best constant prediction for these labels: what a model that ignores its input can
    reach at best, for the loss transformers' heads train with.

    - `"single_label_classification"` (and multiple choice: the index of the right choice): cross-entropy, at best
      the entropy of the class rates (with label smoothing `e`, of `(1 - e) * rates + e / num_classes`, the mean
      smoothed target, as transformers' `LabelSmoother` and torch's `label_smoothing` smooth);
    - `"multi_label_classification"`: binary cross-entropy averaged over rows and labels, at best the mean of each
      label's binary entropy at its rate (soft targets too);
    - `"regression"`: mean squared error, at best the variance of the targets (the mean of each column's).

    Args:
        labels: the training rows' labels: class ids, multi-hot (or soft) rows, or float targets.
        problem_type: one of the three above.
        num_classes: the number of classes (or choices); needed with label smoothing only.
        label_smoothing: `TrainingArguments.label_smoothing_factor`.

    Returns:
        The loss in nats (MSE for regression), or None when there is no label, or label smoothing is set for a
        problem type that `LabelSmoother` does not fit (multi-label, regression).

    Example:

    ```python
    >>> round(chance_level_loss([0, 1, 1, 1], "single_label_classification"), 4)  # entropy of (1/4, 3/4)
    0.5623
    ```
    """
    values = np.asarray(labels, dtype=np.float64)
    if values.size == 0:
        return None
    if problem_type == "single_label_classification":
        ids = values.astype(np.int64).reshape(-1)
        size = max(int(ids.max()) + 1, num_classes or 0)
        rates = np.bincount(ids, minlength=size) / len(ids)
        if label_smoothing:
            if not num_classes:
                raise ValueError("label smoothing spreads over every class: chance_level_loss needs num_classes")
            rates = (1 - label_smoothing) * rates + label_smoothing / num_classes
        return _entropy(rates)
    if label_smoothing:
        return None
    if problem_type == "multi_label_classification":
        rates = values.reshape(len(values), -1).mean(0)
        return float(np.mean([_entropy(np.array([rate, 1 - rate])) for rate in rates]))
    if problem_type == "regression":
        return float(values.reshape(len(values), -1).var(0).mean())
    raise ValueError(
        f"problem_type must be single_label_classification, multi_label_classification or regression, got "
        f"{problem_type!r}"
    )


def logged_training_losses(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """`(step, loss)` of each finite training loss in `TrainerState.log_history`: the classification loss alone where
    the auxiliary LM loss was added to it (`classification_loss`), else `loss`."""
    logged = []
    for entry in log_history:
        loss = entry.get("classification_loss", entry.get("loss"))
        if "loss" in entry and isinstance(loss, (int, float)) and math.isfinite(loss):
            logged.append((entry.get("step", 0), float(loss)))
    return logged


def final_training_loss(log_history: list[dict[str, Any]], max_steps: int) -> float | None:
    """The mean training loss logged in the last tenth of the run's steps (the last one logged when none is), from
    `TrainerState.log_history` (`logged_training_losses`). None when no training loss was logged."""
    logged = logged_training_losses(log_history)
    if not logged:
        return None
    final = [loss for step, loss in logged if step > (1 - FINAL_FRACTION) * max_steps] or [logged[-1][1]]
    return float(np.mean(final))


def not_learnt_message(
    log_history: list[dict[str, Any]],
    max_steps: int,
    chance_loss: float | None,
    tolerance: float = CHANCE_LEVEL_TOLERANCE,
    unfroze_gradually: bool = False,
) -> str | None:
    """One line saying that the run did not learn (its training loss ended within `tolerance` of `chance_loss`), with
    what to try (gradual unfreezing only where the run did not unfreeze gradually), or None when it did learn, or when
    either loss is unknown."""
    final = final_training_loss(log_history, max_steps)
    if final is None or chance_loss is None or chance_loss <= 0 or final < (1 - tolerance) * chance_loss:
        return None
    return (
        f"the training loss ended at {final:.4g}, against {chance_loss:.4g} for always predicting the training "
        f"labels' rates (less than {tolerance:.0%} below it): the classifier did not learn from its inputs. "
        "Fine-tuning on few labels fails like this now and then; train again with another seed, a lower learning "
        + ("rate." if unfroze_gradually else "rate, or gradual unfreezing.")
    )
