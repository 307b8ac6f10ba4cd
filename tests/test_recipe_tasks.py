"""Tasks through the recipe and the CLI: `train_classifier` infers the task from real RTE / STS-B / COPA /
GoEmotions rows and trains it (BERT-, GPT-style and AWD-LSTM checkpoints), `tl-nlp predict` answers JSON lines,
`tl-nlp evaluate` writes the task's metrics and the confusion matrix, and bad rows stop with one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from tl_nlp.cli import main
from tl_nlp.data.task_encoding import add_task_tokens
from tl_nlp.recipe import TextData
from tl_nlp.recipe.classifier import train_classifier
from tl_nlp.recipe.config import TaskArguments
from tl_nlp.recipe.task import prepare_task_classifier
from tl_nlp.reference_data import NO_REFERENCE_DATA
from tl_nlp.tasks import task_of_config

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import save_tiny_gpt2  # noqa: E402
from test_tasks import DATA, TEXTS, save_tiny_awd_lstm, save_tiny_pair_bert  # noqa: E402

TRAINING = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "report_to": [], "use_cpu": True, "seed": 0}


def real_rows(folder: str, split: str, path: Path, rows: int = 24) -> Path:
    """The first rows of a real dataset, written as a parquet file (as a user's file would be)."""
    if DATA is None:
        pytest.skip(NO_REFERENCE_DATA)
    source = DATA / folder / f"{split}.parquet"
    dataset = datasets.load_dataset("parquet", data_files=str(source), split="train").select(range(rows))
    dataset.to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipe_task_bases")
    return {
        "encoder": save_tiny_pair_bert(root / "bert"),
        "decoder": save_tiny_gpt2(root / "gpt2", TEXTS),
        "awd_lstm": save_tiny_awd_lstm(root / "awd_lstm"),
    }


def run(capsys, argv):
    capsys.readouterr()  # what came before (writing the test files) is not the command's
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_predict_reads_both_orders_alike(capsys, tmp_path: Path, model: Path, first: dict) -> None:
    """`tl-nlp predict` on a pair and the same pair the other way round (`first` names the first text's key, its
    second key `sentence2` or `text_pair` following it): the same score."""
    second = "sentence2" if "sentence1" in first else "text_pair"
    rows = tmp_path / "rows.jsonl"
    pairs = [{"text": "A man is sleeping.", "text_pair": "A dog runs."}, {**first, second: "A man is sleeping."}]
    rows.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    status, out, err = run(capsys, ["predict", "--model_name_or_path", model, "--input_file", rows])
    assert status == 0, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert answers[0]["score"] == pytest.approx(answers[1]["score"], abs=1e-5)


def test_train_classifier_infers_similarity_and_saves_a_model_that_reads_both_orders(bases, tmp_path, capsys):
    train = real_rows("glue_stsb", "train", tmp_path / "train.parquet")
    valid = real_rows("glue_stsb", "validation", tmp_path / "valid.parquet", rows=16)
    result = train_classifier(
        str(bases["decoder"]),
        TextData(str(train)),
        tmp_path / "sts",
        eval_data=TextData(str(valid)),
        training_args=TRAINING,
    )
    out = capsys.readouterr().out
    assert "task: regression (sentence1 + sentence2 -> label, both orders summed) (inferred from the data" in out
    assert {"eval_pearson", "eval_spearman", "eval_mse"} <= set(result.metrics)
    card_record = json.loads((tmp_path / "sts" / "ulmfit_training_record.json").read_text())
    assert "pearson" in card_record["stages"][-1]["metrics"]
    # tl-nlp predict: JSON lines with generic names; the same score for both orders of a pair.
    assert_predict_reads_both_orders_alike(capsys, tmp_path, tmp_path / "sts", {"sentence1": "A dog runs."})


def test_cli_trains_copa_with_awd_lstm_and_evaluate_writes_metrics_and_the_confusion_matrix(bases, tmp_path, capsys):
    train = real_rows("super_glue_copa", "train", tmp_path / "train.parquet")
    # Validation rows: the Hub's COPA test split carries no labels (-1), so only validation has gold labels everywhere.
    test = real_rows("super_glue_copa", "validation", tmp_path / "test.parquet", rows=16)
    status, out, err = run(
        capsys,
        [
            "train-classifier", "--model_name_or_path", bases["awd_lstm"], "--train_file", train,
            "--output_dir", tmp_path / "copa", "--num_train_epochs", 1, "--per_device_train_batch_size", 4,
            "--use_cpu", "--seed", 0,
        ],
    )  # fmt: skip
    assert status == 0, err
    assert "task: multiple_choice (premise + choice1 + choice2 -> label)" in out
    png, metrics_file = tmp_path / "cm.png", tmp_path / "test_results.json"
    status, out, err = run(
        capsys,
        [
            "evaluate", "--model_name_or_path", tmp_path / "copa", "--test_file", test,
            "--output_file", metrics_file, "--confusion_matrix_file", png,
        ],
    )  # fmt: skip
    assert status == 0, err
    metrics = json.loads(metrics_file.read_text())
    assert metrics["eval_samples"] == 16 and 0 <= metrics["eval_accuracy"] <= 1
    assert {"eval_f1_choice 0", "eval_macro_f1"} <= set(metrics) and png.read_bytes()[:4] == b"\x89PNG"
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "The man broke his toe.", "choices": ["He dropped a hammer.", "He sang."]}))
    status, out, err = run(capsys, ["predict", "--model_name_or_path", tmp_path / "copa", "--input_file", rows])
    answer = json.loads(out)
    assert status == 0 and answer["label"] in (0, 1) and answer["choice"] in ("He dropped a hammer.", "He sang.")


def test_multi_label_go_emotions_threshold_is_chosen_on_validation_and_saved(bases, tmp_path):
    train = real_rows("go_emotions", "train", tmp_path / "train.parquet", rows=32)
    valid = real_rows("go_emotions", "validation", tmp_path / "valid.parquet", rows=16)
    result = train_classifier(
        str(bases["encoder"]), TextData(str(train)), tmp_path / "emotions", eval_data=TextData(str(valid)),
        training_args=TRAINING,
    )  # fmt: skip
    from transformers import AutoConfig

    spec = task_of_config(AutoConfig.from_pretrained(tmp_path / "emotions"))
    assert spec.task == "multi_label" and spec.threshold == result.metrics["eval_threshold"]
    assert AutoConfig.from_pretrained(tmp_path / "emotions").id2label[27] == "neutral"


@pytest.mark.parametrize("folder, method", [("go_emotions", "full"), ("go_emotions", "lora"), ("glue_stsb", "full")])
def test_task_stage_starts_the_head_from_the_training_labels(bases, tmp_path, folder, method):
    train = real_rows(folder, "train", tmp_path / "train.parquet", rows=32)
    prepared = prepare_task_classifier(
        str(bases["encoder"]), TextData(str(train)), tmp_path / "task", training_args=TRAINING, method=method
    )
    rows = datasets.load_dataset("parquet", data_files=str(train), split="train")
    if folder == "go_emotions":
        # The rates counted from the file's label lists (28 classes), a label in no row at half a row's rate; the
        # head's sigmoids start there.
        expected = torch.tensor([[label in row for label in range(28)] for row in rows["labels"]]).double().mean(0)
        expected = torch.log(expected.clamp(min=0.5 / 32) / (1 - expected.clamp(min=0.5 / 32)))
    else:  # STS-B scores: the prediction starts at their mean
        expected = torch.tensor(rows["label"], dtype=torch.float64).mean().reshape(1)
    # BERT's output layer, `classifier` (LoRA trains it in full, as peft's `modules_to_save` copy).
    (bias,) = [
        parameter
        for name, parameter in prepared.trainer.model.named_parameters()
        if "classifier" in name and name.endswith("bias") and parameter.requires_grad
    ]
    torch.testing.assert_close(bias.detach().double(), expected, rtol=0, atol=1e-5)


def test_pair_task_without_its_second_column_is_one_line(bases, tmp_path, capsys):
    train = real_rows("glue_rte", "train", tmp_path / "train.parquet")
    status, out, err = run(
        capsys,
        [
            "train-classifier", "--model_name_or_path", bases["encoder"], "--train_file", train,
            "--text_column", "sentence1", "--task", "text_pair", "--text_pair_column", "hypothesis",
            "--output_dir", tmp_path / "rte", "--use_cpu",
        ],
    )  # fmt: skip
    assert status == 2
    last = err.strip().splitlines()[-1]  # after the datasets progress bars
    assert "train.parquet: task 'text_pair' needs the second text column 'hypothesis', which is not there" in last
    assert "Traceback" not in err


def test_rte_with_bert_explicit_task_options_through_the_api(bases, tmp_path):
    train = real_rows("glue_rte", "train", tmp_path / "train.parquet")
    result = train_classifier(
        str(bases["encoder"]), TextData(str(train), text_column="sentence1"), tmp_path / "rte",
        eval_data=TextData(str(train), text_column="sentence1"),
        task=TaskArguments(task="text_pair", text_pair_column="sentence2"), training_args=TRAINING,
    )  # fmt: skip
    assert {"eval_accuracy", "eval_f1_entailment", "eval_f1_not_entailment", "eval_micro_f1"} <= set(result.metrics)


def test_a_task_stage_trains_at_the_lr_finders_rate_when_asked(bases, tmp_path, capsys):
    # A pair task trains in its own stage: learning_rate_from_lr_find must reach it, not be ignored.
    train = real_rows("glue_rte", "train", tmp_path / "train.parquet")
    training = {**TRAINING, "learning_rate_from_lr_find": True, "max_steps": 2}
    result = train_classifier(str(bases["encoder"]), TextData(str(train)), tmp_path / "rte", training_args=training)
    record = json.loads((result.output_dir / "ulmfit_training_record.json").read_text())
    assert "LR finder on every layer group: valley" in capsys.readouterr().out
    assert record["stages"][-1]["learning_rate"] != 2e-4  # the suggestion, not the default


@pytest.mark.parametrize("family", ["encoder", "decoder"])
def test_a_pair_task_stage_takes_the_reading_options_and_saves_them_for_predict(bases, tmp_path, family):
    """The reference is transformers' own pair truncation (longest first) with `truncation_side="left"` on the
    checkpoint's tokenizer (GPT's start, delimiter and extract tokens added, for the decoder)."""
    train = real_rows("glue_rte", "train", tmp_path / "train.parquet", rows=8)
    prepared = prepare_task_classifier(
        str(bases[family]), TextData(str(train)), tmp_path / "rte", eval_data=TextData(str(train)),
        max_length=12, truncation_side="left", inference_max_length=20, training_args=TRAINING,
    )  # fmt: skip
    reference = AutoTokenizer.from_pretrained(str(bases[family]), truncation_side="left")
    if family == "decoder":
        add_task_tokens(reference)
    rows = datasets.load_dataset("parquet", data_files=str(train), split="train")
    first, second = list(rows["sentence1"]), list(rows["sentence2"])
    expected = reference(first, second, truncation=True, max_length=12)["input_ids"]
    assert prepared.trainer.train_dataset["input_ids"] == expected
    reference.truncation_side = "right"
    assert reference(first, second, truncation=True, max_length=12)["input_ids"] != expected  # the side matters
    reference.truncation_side = "left"
    longer = reference(first, second, truncation=True, max_length=20)["input_ids"]
    assert prepared.eval_dataset["input_ids"] == longer  # evaluated as the saved model will read
    assert max(len(ids) for ids in longer) > 12  # the two readings differ on these rows
    prepared.tokenizer.save_pretrained(tmp_path / "saved")
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert (saved.truncation_side, saved.model_max_length) == ("left", 20)


def test_cli_trains_a_similarity_task_with_lora_and_saves_the_merged_model_and_the_adapter(bases, tmp_path, capsys):
    train = real_rows("glue_stsb", "train", tmp_path / "train.parquet")
    status, out, err = run(
        capsys,
        [
            "train-classifier", "--model_name_or_path", bases["decoder"], "--train_file", train,
            "--output_dir", tmp_path / "sts", "--method", "lora", "--lora_r", 2, "--lora_save_adapter",
            "--num_train_epochs", 1, "--per_device_train_batch_size", 8, "--use_cpu", "--seed", 0,
        ],
    )  # fmt: skip
    assert status == 0, err
    assert "both orders summed" in out
    record = json.loads((tmp_path / "sts" / "ulmfit_training_record.json").read_text())
    stage = record["stages"][-1]
    # LoRA's default top rate, and only the adapters, the score head and GPT's 3 new token rows trained.
    assert stage["learning_rate"] == pytest.approx(1e-3) and stage["settings"]["learning_rate"] == "default"
    counts = json.loads((tmp_path / "sts" / "all_results.json").read_text())
    assert 0 < counts["trainable_parameters"] < counts["total_parameters"] / 2
    trained = f"{counts['trainable_parameters']:,} of {counts['total_parameters']:,} parameters"
    assert f"Trained with LoRA: the adapters and the new head, {trained}" in stage["notes"]
    from tl_nlp.training.model_card import stage_paragraph
    from tl_nlp.training.training_record import ULMFiTStage

    assert trained in stage_paragraph(ULMFiTStage(**stage))  # the model card's paragraph on the stage says so
    adapter_config = json.loads((tmp_path / "sts" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["modules_to_save"] == ["score"] and len(adapter_config["trainable_token_indices"]) == 3
    from transformers import AutoConfig

    assert task_of_config(AutoConfig.from_pretrained(tmp_path / "sts")).symmetric_pair  # a plain, merged folder
    assert_predict_reads_both_orders_alike(capsys, tmp_path, tmp_path / "sts", {"text": "A dog runs."})


@pytest.mark.parametrize(
    "folder, method, model_class",
    [("glue_rte", "full", "BertForSequenceClassification"), ("super_glue_copa", "lora", "BertForMultipleChoice")],
)
def test_lr_find_sweeps_the_task_model_train_classifier_trains(
    bases, tmp_path, capsys, monkeypatch, folder, method, model_class
):
    """On pair or multiple-choice rows, lr-find sweeps the model `train-classifier` trains on them (the task inferred
    from the data; with `--method lora`, LoRA-wrapped), not a single-text classifier of one column."""
    import tl_nlp.cli.recipe as cli_recipe

    swept = []
    real = cli_recipe.find_learning_rate

    def recording(trainer, finder=None):
        model = trainer.model
        is_lora = hasattr(model, "peft_config")
        swept.append((type(model.get_base_model() if is_lora else model).__name__, trainer.train_dataset))
        assert is_lora == (method == "lora")
        return real(trainer, finder)

    monkeypatch.setattr(cli_recipe, "find_learning_rate", recording)
    train = real_rows(folder, "train", tmp_path / "train.parquet")
    argv = [
        "lr-find",
        "--model_name_or_path",
        bases["encoder"],
        "--train_file",
        train,
        "--output_dir",
        tmp_path / "lr",
    ]
    status, out, err = run(capsys, [*argv, "--num_steps", 8, "--per_device_train_batch_size", 4, "--method", method])
    assert status == 0, err
    assert "(inferred from the data" in out and swept[0][0] == model_class
    encoded = swept[0][1][0]["input_ids"]
    tokenizer = AutoTokenizer.from_pretrained(bases["encoder"])
    rows = datasets.load_dataset("parquet", data_files=str(train), split="train")
    if folder == "glue_rte":  # both sentences, in BERT's pair encoding
        assert encoded == tokenizer(rows[0]["sentence1"], rows[0]["sentence2"])["input_ids"]
    else:  # one sequence per choice
        assert encoded[1] == tokenizer(rows[0]["premise"], rows[0]["choice2"])["input_ids"]
    assert json.loads((tmp_path / "lr" / "lr_find.json").read_text())["losses"]


def test_lr_find_takes_the_classifier_task_and_its_columns(bases, tmp_path, capsys, monkeypatch):
    """Columns the inference cannot read (COPA renamed): lr-find takes train-classifier's task options, with
    `--classifier_task` for its `--task` (which names the stage here)."""
    import tl_nlp.cli.recipe as cli_recipe

    swept = []
    real = cli_recipe.find_learning_rate

    def recording(trainer, finder=None):
        swept.append(trainer)
        return real(trainer, finder)

    monkeypatch.setattr(cli_recipe, "find_learning_rate", recording)
    rows = datasets.load_dataset("parquet", data_files=str(real_rows("super_glue_copa", "train", tmp_path / "c.pq")))
    rows = rows["train"].rename_columns({"premise": "context", "choice1": "a", "choice2": "b"})
    rows.to_parquet(str(tmp_path / "renamed.parquet"))
    argv = ["lr-find", "--model_name_or_path", bases["encoder"], "--train_file", tmp_path / "renamed.parquet",
            "--output_dir", tmp_path / "lr", "--num_steps", 6, "--per_device_train_batch_size", 4]  # fmt: skip
    status, out, err = run(capsys, argv)
    # One line: there is no text column to infer the task from.
    assert status != 0 and err.count("error:") == 1 and "Traceback" not in err and not swept, err
    options = ["--classifier_task", "multiple_choice", "--text_column", "context", "--choice_columns", "a", "b"]
    status, out, err = run(capsys, [*argv, "--task", "finetune", *options])  # a language model has no such columns
    assert status != 0 and "--classifier_task, --choice_columns: for --task classifier only" in err and not swept
    status, out, err = run(capsys, [*argv, *options])
    assert status == 0, err
    (trainer,) = swept
    assert type(trainer.model).__name__ == "BertForMultipleChoice"
    tokenizer = AutoTokenizer.from_pretrained(bases["encoder"])
    assert trainer.train_dataset[0]["input_ids"][1] == tokenizer(rows[0]["context"], rows[0]["b"])["input_ids"]
