"""Offline accuracy and macro-F1 metrics against values computed by hand."""

import numpy as np
import pytest
from transformers import EvalPrediction

from tl_nlp.metrics import Accuracy, MacroF1, classification_metrics

# Three classes; class 2 is never predicted and class 0 twice wrongly.
PREDICTIONS = [0, 0, 1, 1, 1, 0, 0]
REFERENCES = [0, 1, 1, 1, 2, 2, 0]


def test_accuracy_is_the_share_of_exact_matches():
    assert Accuracy().compute(predictions=PREDICTIONS, references=REFERENCES) == {"accuracy": pytest.approx(4 / 7)}


def test_macro_f1_is_the_mean_of_per_class_f1():
    # class 0: TP 2, predicted 4, actual 2 -> 2*2/(4+2) = 2/3; class 1: TP 2, predicted 3, actual 3 -> 4/6 = 2/3;
    # class 2: no true positive -> 0. Mean: 4/9.
    result = MacroF1().compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result == {"macro_f1": pytest.approx(4 / 9)}


def test_macro_f1_counts_declared_classes_that_never_occur():
    # Binary data, but the model has a third class: its F1 is 0 and pulls the mean down by a third.
    two_classes = MacroF1().compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])["macro_f1"]
    declared = MacroF1().compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], labels=[0, 1, 2])["macro_f1"]
    # class 0: 2*2/(2+3) = 0.8; class 1: 2*1/(2+1) = 2/3
    assert two_classes == pytest.approx((0.8 + 2 / 3) / 2)
    assert declared == pytest.approx((0.8 + 2 / 3) / 3)


def test_compute_metrics_reads_the_argmax_of_the_logits():
    logits = np.eye(3)[PREDICTIONS] * 2.0 - 1.0  # argmax = PREDICTIONS
    metrics = classification_metrics(num_labels=3)(
        EvalPrediction(predictions=(logits, np.zeros(7)), label_ids=np.array(REFERENCES))
    )
    assert metrics == {"accuracy": pytest.approx(4 / 7), "macro_f1": pytest.approx(4 / 9)}


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="no predictions"):
        Accuracy().compute(predictions=[], references=[])
