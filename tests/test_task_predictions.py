"""TaskPredictor on saved task folders: answers per task from JSON-like rows (the model's columns or generic names),
metrics equal to the metrics of the model's own outputs, a multi-label threshold chosen and saved, the confusion
matrix PNG, and one line for a row without a field the task needs."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from tl_nlp.data import TextDataError
from tl_nlp.metrics import classification_report, regression_metrics
from tl_nlp.task_predictions import TaskPredictor
from tl_nlp.tasks import TaskSpec, infer_task

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import save_tiny_gpt2  # noqa: E402
from test_task_pipeline import save_task_model  # noqa: E402
from test_tasks import CHOICES, PAIRS, TEXTS, save_tiny_awd_lstm, save_tiny_pair_bert  # noqa: E402


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predictor_bases")
    return {
        "encoder": save_tiny_pair_bert(root / "bert"),
        "decoder": save_tiny_gpt2(root / "gpt2", TEXTS),
        "awd_lstm": save_tiny_awd_lstm(root / "awd_lstm"),
    }


@pytest.mark.parametrize("family", ["encoder", "decoder", "awd_lstm"])
def test_multiple_choice_answers_and_accuracy(bases, tmp_path, family):
    spec, _ = infer_task(CHOICES)
    predictor = TaskPredictor.from_pretrained(str(save_task_model(bases[family], family, spec, tmp_path / "mc")))
    generic = [{"text": row["premise"], "choices": [row["choice1"], row["choice2"]]} for row in CHOICES]
    answers = predictor.predict(generic)
    assert answers == predictor.predict(list(CHOICES))  # generic names or the model's own columns
    predicted = [answer["label"] for answer in answers]
    assert [answer["choice"] for answer in answers] == [CHOICES[i][f"choice{p + 1}"] for i, p in enumerate(predicted)]
    assert all(abs(sum(answer["scores"]) - 1) < 1e-6 for answer in answers)
    png = tmp_path / "confusion.png"
    metrics = predictor.evaluate(CHOICES, confusion_matrix_png=png)
    assert metrics["eval_accuracy"] == np.mean(np.asarray(predicted) == np.asarray(CHOICES["label"]))
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(
        TextDataError, match=r"input: row 1 has no field 'choice2', which task 'multiple_choice' needs"
    ):
        predictor.predict([generic[0], {"premise": "it rained", "choice1": "grass was wet"}])


@pytest.mark.parametrize("family", ["encoder", "decoder"])
def test_similarity_scores_and_correlations(bases, tmp_path, family):
    spec, _ = infer_task(PAIRS)
    predictor = TaskPredictor.from_pretrained(str(save_task_model(bases[family], family, spec, tmp_path / "sts")))
    answers = predictor.predict(
        [{"text": a, "text_pair": b} for a, b in zip(PAIRS["sentence1"], PAIRS["sentence2"], strict=True)]
    )
    scores = [answer["score"] for answer in answers]
    metrics = predictor.evaluate(PAIRS)
    expected = regression_metrics(scores, PAIRS["label"])
    assert metrics["eval_pearson"] == pytest.approx(expected["pearson"], abs=1e-5)
    assert metrics["eval_spearman"] == pytest.approx(expected["spearman"], abs=1e-5)


def test_multi_label_threshold_is_chosen_saved_and_used(bases, tmp_path):
    rows = datasets.Dataset.from_dict({"text": TEXTS[:6], "labels": [["x"], ["x", "y"], [], ["z"], ["y"], ["x"]]})
    spec = TaskSpec("multi_label", label_column="labels")
    folder = save_task_model(bases["decoder"], "decoder", spec, tmp_path / "ml", {0: "x", 1: "y", 2: "z"})
    predictor = TaskPredictor.from_pretrained(str(folder))
    threshold = predictor.choose_threshold(rows)
    predictor.model.save_pretrained(tmp_path / "ml")
    reloaded = TaskPredictor.from_pretrained(str(folder))
    assert reloaded.spec.threshold == threshold
    answers = reloaded.predict([{"text": text} for text in TEXTS[:6]])
    for answer in answers:
        assert answer["labels"] == sorted(
            [name for name, score in answer["scores"].items() if score >= threshold],
            key=lambda n: -answer["scores"][n],
        )
    metrics = reloaded.evaluate(rows)
    assert metrics["eval_threshold"] == threshold and 0 <= metrics["eval_macro_f1"] <= 1


def test_pair_classes_report_every_class(bases, tmp_path):
    rows = PAIRS.remove_columns("label").add_column("label", [1, 0, 0, 1])
    spec = TaskSpec("text_pair", "sentence1", "sentence2")
    names = {0: "entailment", 1: "not_entailment"}
    predictor = TaskPredictor.from_pretrained(
        str(save_task_model(bases["encoder"], "encoder", spec, tmp_path / "p", names))
    )
    answers = predictor.predict(list(rows))
    predicted = [{"entailment": 0, "not_entailment": 1}[answer["label"]] for answer in answers]
    metrics = predictor.evaluate(rows)
    expected = classification_report(predicted, rows["label"], 2, list(names.values()))
    assert {key[5:]: value for key, value in metrics.items() if key != "eval_samples"} == pytest.approx(expected)
