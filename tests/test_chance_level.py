"""The chance level of a classifier's training loss: against torch's and transformers' own losses minimised over
constant predictions, and through the recipe: a run that did not learn says so (printed, in the training record and
the model card), one that learnt does not."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers.trainer_pt_utils import LabelSmoother

from tl_nlp.cli import main
from tl_nlp.recipe import TextData
from tl_nlp.recipe.classifier import train_classifier
from tl_nlp.training.chance_level import chance_level_loss, final_training_loss, not_learnt_message
from tl_nlp.training.model_card import stage_paragraph
from tl_nlp.training.training_record import read_training_record

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import BAD, GOOD, save_tiny_bert, write_corpora  # noqa: E402
from test_recipe_tasks import real_rows  # noqa: E402
from test_tasks import save_tiny_awd_lstm, save_tiny_pair_bert  # noqa: E402


def lowest_constant_loss(loss_of, width: int) -> float:
    """The lowest value of `loss_of(constant)` over constant predictions (`width` outputs per row), by L-BFGS."""
    constant = torch.zeros(width, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([constant], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = loss_of(constant)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(loss_of(constant.detach()))


def test_single_label_chance_level_is_cross_entropys_lowest_value_at_a_constant_prediction():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 4, 4, 4, 4])  # class 3 never occurs
    best = lowest_constant_loss(
        lambda logits: torch.nn.functional.cross_entropy(logits.expand(len(labels), 5), labels), 5
    )
    assert chance_level_loss(labels.tolist(), "single_label_classification") == pytest.approx(best, abs=1e-6)
    assert chance_level_loss([1, 1, 0, 1], "single_label_classification") == pytest.approx(
        -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    )


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_with_label_smoothing_it_is_the_lowest_value_of_transformers_label_smoother(smoothing):
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])
    smoother = LabelSmoother(epsilon=smoothing)

    def smoothed(logits):
        return smoother({"logits": logits.expand(len(labels), 4)}, labels)

    best = lowest_constant_loss(smoothed, 4)
    assert chance_level_loss(labels.tolist(), "single_label_classification", 4, smoothing) == pytest.approx(
        best, abs=1e-6
    )
    # torch's own label smoothing is the same loss
    torch_best = lowest_constant_loss(
        lambda logits: torch.nn.functional.cross_entropy(
            logits.expand(len(labels), 4), labels, label_smoothing=smoothing
        ),
        4,
    )
    assert torch_best == pytest.approx(best, abs=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        chance_level_loss(labels.tolist(), "single_label_classification", label_smoothing=smoothing)


@pytest.mark.parametrize("soft", [False, True])
def test_multi_label_chance_level_is_binary_cross_entropys_lowest_value(soft):
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 6)) < [0.02, 0.1, 0.3, 0.5, 0.8, 0.0]).astype(float)
    if soft:
        labels = labels * 0.8 + 0.1
    targets = torch.tensor(labels)
    best = lowest_constant_loss(
        lambda logits: torch.nn.functional.binary_cross_entropy_with_logits(logits.expand(40, 6), targets), 6
    )
    # A label never on (the last column) has its lowest loss at an infinite negative logit: L-BFGS gets close.
    assert chance_level_loss(labels, "multi_label_classification") == pytest.approx(best, abs=1e-4)


@pytest.mark.parametrize("width", [1, 3])
def test_regression_chance_level_is_mean_squared_errors_lowest_value(width):
    targets = torch.tensor(np.random.default_rng(1).normal(2.5, 1.3, (30, width)))
    best = lowest_constant_loss(lambda value: torch.nn.functional.mse_loss(value.expand(30, width), targets), width)
    assert chance_level_loss(targets.numpy(), "regression") == pytest.approx(best, abs=1e-8)
    assert chance_level_loss(targets.numpy(), "regression", label_smoothing=0.1) is None  # LabelSmoother does not fit
    assert chance_level_loss([], "regression") is None


def test_the_end_of_the_run_is_its_last_tenth_and_the_classification_loss_wins_over_the_total():
    history = [{"loss": 0.69, "step": step} for step in range(10, 100, 10)] + [{"loss": 0.30, "step": 100}]
    assert final_training_loss(history, 100) == pytest.approx(0.30)  # steps above 90
    assert final_training_loss(history, 200) == pytest.approx(0.30)  # none in the last tenth: the last logged
    assert final_training_loss([{"train_loss": 0.5, "step": 100}], 100) is None  # a run's mean is not its end
    auxiliary = [{"loss": 3.0, "classification_loss": 0.69, "lm_loss": 4.6, "step": 100}]
    assert final_training_loss(auxiliary, 100) == pytest.approx(0.69)
    evaluation = [{"loss": 0.2, "step": 95}, {"eval_loss": 0.69, "step": 100}]
    assert final_training_loss(evaluation, 100) == pytest.approx(0.2)
    chance = -np.log(0.5)
    message = not_learnt_message([{"loss": 0.6931, "step": 100}], 100, chance)
    assert "did not learn" in message and message.endswith("a lower learning rate, or gradual unfreezing.")
    gradual = not_learnt_message([{"loss": 0.6931, "step": 100}], 100, chance, unfroze_gradually=True)
    assert gradual.endswith("train again with another seed, a lower learning rate.")
    assert not_learnt_message([{"loss": 0.66, "step": 100}], 100, chance) is None  # 4.8% below: it learnt a little
    assert not_learnt_message([], 100, chance) is None
    assert not_learnt_message([{"loss": 0.7, "step": 100}], 100, None) is None


def read_stage(folder: Path) -> tuple[dict, dict]:
    """A saved stage's `all_results.json` and the last stage of its training record."""
    results = json.loads((folder / "all_results.json").read_text())
    record = json.loads((folder / "ulmfit_training_record.json").read_text())
    return results, record["stages"][-1]


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny BERT, and 64 one-word reviews (a word of praise is positive) that it learns at 1e-2 in 80 steps."""
    root = tmp_path_factory.mktemp("chance_data")
    corpora = write_corpora(root)
    model = save_tiny_bert(root / "bert", corpora["general"].read_text().splitlines())
    rng = random.Random(0)
    rows = [{"text": rng.choice(GOOD if i % 2 else BAD), "label": "pos" if i % 2 else "neg"} for i in range(64)]
    datasets.Dataset.from_list(rows).to_csv(root / "words.csv")
    return model, root / "words.csv"


TRAINING = {"num_train_epochs": 10, "per_device_train_batch_size": 8, "logging_steps": 2, "report_to": [], "seed": 0}


def test_a_classifier_that_did_not_learn_says_so_and_one_that_learnt_does_not(words, tmp_path, capsys):
    model, reviews = words
    # At a rate too small to move anything the head stays near its start: the loss of the label rates (balanced
    # classes: ln 2) or above.
    stuck = train_classifier(
        str(model), TextData(str(reviews)), tmp_path / "stuck", training_args={**TRAINING, "learning_rate": 1e-9}
    )
    printed = capsys.readouterr().out
    results, stage = read_stage(stuck.output_dir)
    assert results["train_chance_level_loss"] == pytest.approx(np.log(2), abs=1e-6)  # 32 neg, 32 pos
    assert results["train_loss"] >= 0.98 * np.log(2)
    assert f"warning: {stuck.output_dir}: the training loss ended at" in printed
    assert "did not learn from its inputs" in stage["notes"]
    # The model card is written from the record: the stage's paragraph carries the warning.
    record = read_training_record(stuck.output_dir / "ulmfit_training_record.json")
    assert "Warning: the training loss ended at" in stage_paragraph(record.stages[-1])

    learnt = train_classifier(
        str(model), TextData(str(reviews)), tmp_path / "learnt", training_args={**TRAINING, "learning_rate": 1e-2}
    )
    printed = capsys.readouterr().out
    results, stage = read_stage(learnt.output_dir)
    assert stage["metrics"]["train_loss"] < 0.5 * results["train_chance_level_loss"]  # the last logged loss
    assert "warning" not in printed
    assert not stage.get("notes")


def test_a_regression_task_that_did_not_learn_says_so(tmp_path, capsys):
    # STS-B as a regression: the head starts at the mean score, the chance level (the scores' variance).
    train = real_rows("glue_stsb", "train", tmp_path / "train.parquet", rows=32)
    model = save_tiny_pair_bert(tmp_path / "bert")
    training = {**TRAINING, "num_train_epochs": 2, "learning_rate": 1e-9}
    result = train_classifier(str(model), TextData(str(train)), tmp_path / "stsb", training_args=training)
    scores = np.asarray(datasets.load_dataset("parquet", data_files=str(train), split="train")["label"])
    results, stage = read_stage(result.output_dir)
    assert results["train_chance_level_loss"] == pytest.approx(scores.var(), rel=1e-5)
    assert "did not learn from its inputs" in stage["notes"]
    assert "warning:" in capsys.readouterr().out


def test_the_cli_warns_for_multiple_choice_whose_chance_level_is_over_the_choices(tmp_path, capsys):
    # COPA through `tl-nlp train-classifier` with an AWD-LSTM: the softmax runs over the 2 choices of each question.
    train = real_rows("super_glue_copa", "train", tmp_path / "train.parquet", rows=24)
    model = save_tiny_awd_lstm(tmp_path / "awd_lstm")
    capsys.readouterr()
    status = main(
        [
            "train-classifier", "--model_name_or_path", str(model), "--train_file", str(train),
            "--output_dir", str(tmp_path / "copa"), "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
            "--logging_steps", "2", "--learning_rate", "1e-9", "--use_cpu", "--seed", "0",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    answers = np.asarray(datasets.load_dataset("parquet", data_files=str(train), split="train")["label"])
    rates = np.bincount(answers, minlength=2) / len(answers)
    results, stage = read_stage(tmp_path / "copa")
    assert results["train_chance_level_loss"] == pytest.approx(-(rates * np.log(rates)).sum(), abs=1e-6)
    assert f"warning: {tmp_path / 'copa'}: the training loss ended at" in out
    assert "did not learn from its inputs" in stage["notes"]
