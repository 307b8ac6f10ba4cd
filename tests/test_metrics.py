"""Offline accuracy and macro-F1 metrics against values computed by hand."""

import numpy as np
import pytest
from test_convert_fastai import NO_FASTAI
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


# ---- metrics per task, against scikit-learn and scipy ---------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from tl_nlp.metrics import (  # noqa: E402
    accuracy_interval,
    choose_threshold,
    classification_report,
    confusion_matrix,
    multi_label_metrics,
    regression_metrics,
    save_confusion_matrix_png,
)

RNG = np.random.default_rng(0)
CLASS_PREDICTIONS = RNG.integers(0, 4, 60).tolist()
CLASS_REFERENCES = RNG.integers(0, 3, 60).tolist()  # class 3 is predicted but never true
SCORES = np.round(RNG.normal(size=40), 1).tolist()  # rounded: ties, which Spearman must rank by their mean
TARGETS = (np.asarray(SCORES) * 0.5 + RNG.normal(size=40)).round(0).tolist()
PROBABILITIES = RNG.random((50, 5)).round(3)
MULTI_HOT = (RNG.random((50, 5)) < 0.3).astype(int)

# scikit-learn and scipy (in the fastai reference venv) on the same inputs.
REFERENCE_SCRIPT = """
import json, sys
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
data = json.loads(sys.stdin.read())
p, r = data["class_predictions"], data["class_references"]
per_class = precision_recall_fscore_support(r, p, labels=[0, 1, 2, 3], zero_division=0)
macro = precision_recall_fscore_support(r, p, labels=[0, 1, 2, 3], average="macro", zero_division=0)
micro = precision_recall_fscore_support(r, p, labels=[0, 1, 2, 3], average="micro", zero_division=0)
probabilities, multi_hot = np.array(data["probabilities"]), np.array(data["multi_hot"])
predicted = (probabilities >= 0.4).astype(int)
print(json.dumps({
    "accuracy": accuracy_score(r, p),
    "per_class": [list(map(float, values)) for values in per_class[:3]],
    "macro": list(map(float, macro[:3])), "micro": list(map(float, micro[:3])),
    "confusion": confusion_matrix(r, p, labels=[0, 1, 2, 3]).tolist(),
    "pearson": float(pearsonr(data["scores"], data["targets"])[0]),
    "spearman": float(spearmanr(data["scores"], data["targets"])[0]),
    "multi_micro_f1": f1_score(multi_hot, predicted, average="micro", zero_division=0),
    "multi_macro_f1": f1_score(multi_hot, predicted, average="macro", zero_division=0),
    "exact_match": accuracy_score(multi_hot, predicted),
}))
"""


@pytest.fixture(scope="module")
def reference() -> dict:
    python = os.environ.get("TL_NLP_FASTAI_PYTHON") or str(
        Path(__file__).resolve().parents[1] / ".fastai-venv/bin/python"
    )
    if not Path(python).is_file():
        pytest.skip(f"scikit-learn and scipy are read from the fastai reference environment; {NO_FASTAI}")
    data = {
        "class_predictions": CLASS_PREDICTIONS,
        "class_references": CLASS_REFERENCES,
        "scores": SCORES,
        "targets": TARGETS,
        "probabilities": PROBABILITIES.tolist(),
        "multi_hot": MULTI_HOT.tolist(),
    }
    result = subprocess.run(
        [python, "-c", REFERENCE_SCRIPT], input=json.dumps(data), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_classification_report_matches_scikit_learn(reference):
    report = classification_report(CLASS_PREDICTIONS, CLASS_REFERENCES, num_labels=4, label_names=list("abcd"))
    assert report["accuracy"] == pytest.approx(reference["accuracy"])
    for index, name in enumerate("abcd"):
        for kind, values in zip(("precision", "recall", "f1"), reference["per_class"], strict=True):
            assert report[f"{kind}_{name}"] == pytest.approx(values[index]), (kind, name)
    for average in ("macro", "micro"):
        for kind, value in zip(("precision", "recall", "f1"), reference[average], strict=True):
            assert report[f"{average}_{kind}"] == pytest.approx(value), (average, kind)
    assert confusion_matrix(CLASS_PREDICTIONS, CLASS_REFERENCES, 4).tolist() == reference["confusion"]


def test_regression_metrics_match_scipy_with_ties(reference):
    metrics = regression_metrics(SCORES, TARGETS)
    assert metrics["pearson"] == pytest.approx(reference["pearson"])
    assert metrics["spearman"] == pytest.approx(reference["spearman"])
    assert metrics["mse"] == pytest.approx(float(np.mean((np.asarray(SCORES) - np.asarray(TARGETS)) ** 2)))


def test_multi_label_metrics_match_scikit_learn(reference):
    metrics = multi_label_metrics(PROBABILITIES, MULTI_HOT, threshold=0.4)
    assert metrics["micro_f1"] == pytest.approx(reference["multi_micro_f1"])
    assert metrics["macro_f1"] == pytest.approx(reference["multi_macro_f1"])
    assert metrics["exact_match"] == pytest.approx(reference["exact_match"])


def test_threshold_is_the_best_on_the_given_data():
    # Positives score 0.2-0.3, negatives below 0.15: 0.5 finds nothing, 0.2 separates them perfectly.
    references = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probabilities = np.where(references == 1, 0.25, 0.1)
    assert multi_label_metrics(probabilities, references, 0.5)["macro_f1"] == 0.0
    threshold = choose_threshold(probabilities, references)
    assert 0.1 < threshold <= 0.25
    assert multi_label_metrics(probabilities, references, threshold)["exact_match"] == 1.0
    with pytest.raises(ValueError, match="criterion must be"):
        choose_threshold(probabilities, references, criterion="accuracy")


def test_accuracy_interval_is_wilsons():
    # Wilson's 95% interval for 60/100 (z = 1.95996): 0.5020 to 0.6906 (Newcombe 1998, method 3).
    low, high = accuracy_interval(60, 100)
    assert (round(low, 4), round(high, 4)) == (0.502, 0.6906)
    assert accuracy_interval(0, 10)[0] == 0.0 and accuracy_interval(10, 10)[1] == pytest.approx(1.0)


def test_confusion_matrix_png_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = save_confusion_matrix_png(
        confusion_matrix(CLASS_PREDICTIONS, CLASS_REFERENCES, 4), str(tmp_path / "cm.png"), list("abcd")
    )
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("task", ["text_pair", "multiple_choice", "regression", "multi_label"])
def test_task_compute_metrics_reads_the_trainer_outputs(task):
    from tl_nlp.metrics import task_compute_metrics

    if task == "regression":
        prediction = EvalPrediction(predictions=np.asarray(SCORES)[:, None], label_ids=np.asarray(TARGETS))
        expected = regression_metrics(SCORES, TARGETS)
    elif task == "multi_label":
        clipped = np.clip(PROBABILITIES, 1e-6, 1 - 1e-6)  # 0.0 occurs; its logit would be -inf
        logits = np.log(clipped / (1 - clipped))
        prediction = EvalPrediction(predictions=logits, label_ids=MULTI_HOT)
        expected = multi_label_metrics(PROBABILITIES, MULTI_HOT, 0.4)
    else:
        logits = np.eye(4)[CLASS_PREDICTIONS]
        prediction = EvalPrediction(predictions=(logits, np.zeros(60)), label_ids=np.asarray(CLASS_REFERENCES))
        expected = classification_report(CLASS_PREDICTIONS, CLASS_REFERENCES, 4)
    metrics = task_compute_metrics(task, num_labels=4, threshold=0.4)(prediction)
    assert metrics and all(metrics[key] == pytest.approx(expected[key]) for key in metrics)
