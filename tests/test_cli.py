"""The `tl-nlp` command line: subcommands, config files, JSON lines out, one-line errors."""

import io
import json

import pytest
import torch

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification
from tl_nlp.cli import main
from tl_nlp.data import train_ulmfit_tokenizer

TEXTS = ["This movie was great, really great!", "Awful film. I hated it.", "The cat sat on the mat."] * 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tokenizer = train_ulmfit_tokenizer(TEXTS, min_frequency=1)
    config = AWDLSTMConfig(
        vocab_size=len(tokenizer),
        embedding_size=8,
        hidden_size=12,
        num_hidden_layers=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(0)
    for name, model_class in (("classifier", AWDLSTMForSequenceClassification), ("lm", AWDLSTMForCausalLM)):
        model_class(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def run(capsys, argv, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_predict_writes_one_json_line_per_text_with_label_names(folders, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("A great film.\n\nAn awful film.\n", encoding="utf-8")
    status, out, _ = run(
        capsys, ["predict", "--model_name_or_path", str(folders / "classifier"), "--input_file", str(texts)]
    )
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["text"] for row in rows] == ["A great film.", "An awful film."]  # the blank line is skipped
    for row in rows:
        assert set(row["scores"]) == {"negative", "positive"}
        assert sum(row["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(row["scores"], key=row["scores"].get)
        assert row["score"] == row["scores"][row["label"]]


def test_predict_reads_stdin_and_a_yaml_config_that_flags_override(folders, tmp_path, capsys, monkeypatch):
    config = tmp_path / "predict.yaml"
    config.write_text(f"model_name_or_path: {folders / 'classifier'}\nbatch_size: 0\n", encoding="utf-8")
    status, _, err = run(capsys, ["predict", "--config", str(config)], stdin="Great.\n", monkeypatch=monkeypatch)
    assert status == 2 and "batch_size must be >= 1, got 0" in err  # the file's value is validated
    output = tmp_path / "out" / "predictions.jsonl"
    status, _, _ = run(
        capsys,
        ["predict", "--config", str(config), "--batch_size", "2", "--output_file", str(output)],
        stdin="Great.\nBad.\n",
        monkeypatch=monkeypatch,
    )
    assert status == 0
    assert [json.loads(line)["text"] for line in output.read_text().splitlines()] == ["Great.", "Bad."]


def test_generate_is_repeatable_with_a_seed(folders, capsys):
    argv = ["generate", "--model_name_or_path", str(folders / "lm"), "--prompt", "the movie", "--max_new_tokens", "4"]
    first = run(capsys, argv + ["--seed", "3"])
    second = run(capsys, argv + ["--seed", "3"])
    assert first[0] == 0 and first[1] == second[1]
    generated = json.loads(first[1].splitlines()[0])["generated_text"]
    assert generated.startswith("the movie") and len(generated) > len("the movie")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--model_name_or_path", "/no/such/folder"], "is not a saved model folder"),
        (
            ["predict", "--model_name_or_path", "x", "--config", "/no/such.yaml"],
            "config file /no/such.yaml does not exist",
        ),
        (["generate", "--model_name_or_path", "x", "--temperature", "0"], "temperature must be > 0"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys):
    status, _, err = run(capsys, argv)
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_config_file_errors_name_the_file_and_the_option(folders, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model_name_or_path: x\nbatch_sise: 4\n", encoding="utf-8")
    status, _, err = run(capsys, ["predict", "--config", str(config)])
    assert status == 2 and f"{config}: unknown option(s) batch_sise" in err
    config.write_text("[not a mapping]\n", encoding="utf-8")
    assert "must hold a mapping" in run(capsys, ["predict", "--config", str(config)])[2]


def test_input_file_errors_name_the_file_and_line(folders, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    argv = ["predict", "--model_name_or_path", str(folders / "classifier"), "--input_file", str(bad)]
    status, _, err = run(capsys, argv)
    assert status == 2 and f"{bad}, line 2: not valid UTF-8" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    argv[-1] = str(empty)
    assert "no text to process" in run(capsys, argv)[2]


def test_usage_version_and_unknown_commands(capsys):
    status, out, _ = run(capsys, [])
    assert status == 0 and "predict" in out and "convert-fastai" in out
    assert run(capsys, ["--version"])[1].startswith("tl-nlp ")
    status, _, err = run(capsys, ["frobnicate"])
    assert status == 2 and "unknown command 'frobnicate'" in err


def test_predict_answers_in_input_order_whatever_the_batching(folders, tmp_path, capsys):
    texts = ["Short.", "A much longer review that goes on and on about the film and its actors.", "Mid length one."]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    argv = [
        "predict",
        "--model_name_or_path",
        str(folders / "classifier"),
        "--input_file",
        str(tmp_path / "texts.txt"),
    ]
    batched = [json.loads(line) for line in run(capsys, argv + ["--batch_size", "3"])[1].splitlines()]
    single = [json.loads(line) for line in run(capsys, argv + ["--batch_size", "1"])[1].splitlines()]
    assert [row["text"] for row in batched] == texts
    for a, b in zip(batched, single, strict=True):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-6)


def test_push_dry_run_writes_the_upload_folder_with_a_card(folders, tmp_path, capsys):
    record = tmp_path / "record.yaml"
    record.write_text(
        "stages:\n"
        "  - name: classifier fine-tuning\n"
        "    objective: classification\n"
        "    dataset: stanfordnlp/imdb\n"
        "    num_train_epochs: 2\n"
        "    learning_rate: 0.01\n"
        "    discriminative_lr_decay: 2.6\n"
        "    use_stlr: true\n"
        "    gradual_unfreezing: true\n"
        "    metrics: {accuracy: 0.5}\n",
        encoding="utf-8",
    )
    dry_run = tmp_path / "upload"
    argv = ["push", "--model_dir", str(folders / "classifier"), "--repo_id", "someone/tiny-ulmfit"]
    status, out, err = run(capsys, argv + ["--training_record", str(record), "--dry_run_dir", str(dry_run)])
    assert status == 0, err
    assert f"wrote the folder that would be uploaded to {dry_run}" in out
    assert (dry_run / "README.md").is_file() and (dry_run / "model.safetensors").is_file()
    status, _, err = run(capsys, argv + ["--training_record", str(tmp_path / "missing.yaml"), "--dry_run_dir", "x"])
    assert status == 2 and "missing.yaml does not exist" in err and len(err.strip().splitlines()) == 1


# ---- the recipe commands -------------------------------------------------------------------------------------------

RECIPE_CONFIGS = [
    "ulmfit_awd_lstm_tiny.yaml",
    "ulmfit_awd_lstm_cpu_demo.yaml",
    "bert_classifier.yaml",
    "gpt2_classifier.yaml",
]


@pytest.mark.parametrize("name", RECIPE_CONFIGS)
def test_example_configs_parse_into_the_ulmfit_options(name):
    from pathlib import Path

    from tl_nlp.cli.recipe import parse_recipe_command
    from tl_nlp.config_files import read_mapping_file

    path = Path(__file__).parent.parent / "examples" / "configs" / name
    recipe, data, model, _, training, _ = parse_recipe_command("ulmfit", ["--config", str(path)])
    values = read_mapping_file(path, "config")
    assert training.output_dir == values["output_dir"] and training.learning_rate == values["learning_rate"]
    assert data.class_names == ["negative", "positive"] and data.train_file == values["train_file"]
    assert recipe.finetune_learning_rate == values["finetune_learning_rate"]
    assert model.model_name_or_path == values.get("model_name_or_path")
    assert training.report_to == [] and training.save_strategy == "no"  # the command's defaults, not Trainer's


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """`tl-nlp ulmfit --config FILE` in a new process (as a user runs it), tiny AWD-LSTM, the three stages."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    from recipe_fixtures import write_corpora

    root = tmp_path_factory.mktemp("recipe_cli")
    data = write_corpora(root / "data")
    config = {
        "pretrain_file": str(data["general"]),
        "pretrain_validation_file": str(data["general"]),
        "pretrain_learning_rate": 1e-2,
        "finetune_file": str(data["train"]),
        "finetune_validation_file": str(data["test"]),
        "lm_batch_size": 4,
        "train_file": str(data["train"]),
        "validation_file": str(data["test"]),
        "class_names": ["neg", "pos"],
        "min_frequency": 1,
        "embedding_size": 16,
        "hidden_size": 24,
        "num_hidden_layers": 2,
        "bptt": 10,
        "output_dir": str(root / "run"),
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
    }
    config_file = root / "recipe.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    repo = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tl_nlp",
            "ulmfit",
            "--config",
            str(config_file),
            "--pretrain_epochs",
            "0.5",
            "--dataset_name",
            "me/reviews",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, data, result


def test_ulmfit_command_runs_the_three_stages_from_a_config(recipe_run):
    root, _, result = recipe_run
    run = root / "run"
    summary = json.loads((run / "recipe_results.json").read_text())
    assert set(summary) == {"pretrain", "finetune", "classifier"}
    for stage, folder in (("pretrain", "lm_pretrained"), ("finetune", "lm_finetuned"), ("classifier", "classifier")):
        assert json.loads((run / folder / "all_results.json").read_text()) == pytest.approx(summary[stage])
    # The flag overrode the stage-1 epochs; the config's rate reached stage 1 and the classifier kept its own.
    assert summary["pretrain"]["epoch"] == pytest.approx(0.5, abs=0.05)
    assert json.loads((run / "lm_pretrained" / "training_args.json").read_text())["learning_rate"] == 1e-2
    assert json.loads((run / "classifier" / "training_args.json").read_text())["learning_rate"] == 1e-2
    assert summary["pretrain"]["eval_perplexity"] < summary["pretrain"]["eval_perplexity_before"]
    assert "eval_perplexity" in result.stdout and "eval_accuracy" in result.stdout  # printed, not only saved


def test_ulmfit_records_each_stage_with_its_own_data(recipe_run):
    """--dataset_name names the classifier's data; stages 1 and 2 are recorded with theirs (the general corpus is not
    called the reviews)."""
    root, _, _ = recipe_run
    record = json.loads((root / "run" / "classifier" / "ulmfit_training_record.json").read_text())
    assert [stage["dataset"] for stage in record["stages"]] == [
        "local file data/general.txt",
        "local file data/train.csv",
        "me/reviews",
    ]
    # The stage defaults, and what the config file set, are told apart in the record.
    assert record["stages"][0]["settings"]["learning_rate"] == "set by you"  # pretrain_learning_rate in the file
    assert record["stages"][1]["settings"]["learning_rate"] == "default"
    assert record["stages"][1]["learning_rate"] == pytest.approx(2e-3)  # the AWD-LSTM fine-tuning rate


def test_evaluate_and_lr_find_commands_on_the_recipe_folders(recipe_run, capsys, tmp_path):
    root, data, _ = recipe_run
    summary = json.loads((root / "run" / "recipe_results.json").read_text())
    status, out, _ = run(
        capsys,
        [
            "evaluate",
            "--model_name_or_path",
            str(root / "run" / "classifier"),
            "--test_file",
            str(data["test"]),
            "--output_file",
            str(tmp_path / "eval.json"),
        ],
    )
    assert status == 0
    metrics = json.loads(out.splitlines()[-1])
    assert metrics["eval_accuracy"] == pytest.approx(summary["classifier"]["eval_accuracy"])
    assert json.loads((tmp_path / "eval.json").read_text()) == metrics
    status, out, _ = run(
        capsys,
        [
            "lr-find",
            "--model_name_or_path",
            str(root / "run" / "lm_finetuned"),
            "--train_file",
            str(data["train"]),
            "--class_names",
            "neg",
            "pos",
            "--num_steps",
            "12",
            "--output_dir",
            str(tmp_path / "lr"),
            "--per_device_train_batch_size",
            "8",
        ],
    )
    assert status == 0 and "suggested learning rates" in out
    curve = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert len(curve["learning_rates"]) == len(curve["losses"]) <= 12 and curve["learning_rates"][0] == pytest.approx(
        1e-7
    )
    assert (tmp_path / "lr" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"


def test_recipe_errors_are_one_line_with_exit_status_2(recipe_run, capsys, tmp_path):
    root, data, _ = recipe_run
    lm = str(root / "run" / "lm_finetuned")
    unknown = tmp_path / "unknown_model"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    base = ["train-classifier", "--train_file", str(data["train"]), "--output_dir", str(tmp_path / "out")]
    cases = {
        "does not exist": ["--model_name_or_path", str(tmp_path / "nowhere")],
        "unknown model type": ["--model_name_or_path", str(unknown)],
        "no text column 'review'": ["--model_name_or_path", lm, "--text_column", "review"],
        "label 'pos' is not one of ['neg', 'neutral']": [
            "--model_name_or_path",
            lm,
            "--class_names",
            "neg",
            "neutral",
        ],
    }
    for expected, extra in cases.items():
        status, _, err = run(capsys, base + extra)
        assert status == 2, expected
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    status, _, err = run(capsys, ["ulmfit", "--train_file", str(data["train"])])
    assert status == 2 and "needs --pretrain_file" in err
