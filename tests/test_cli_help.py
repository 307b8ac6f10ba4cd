"""`tl-nlp --help` answers without importing torch or transformers; a command's --help opens with what it does and
an example, mentions --config, groups its options and lists the usual training options (--help-all: all)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tl_nlp.cli import main
from tl_nlp.cli.recipe import RECIPE_COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_help_imports_neither_torch_nor_transformers():
    script = (
        "import json, sys\nfrom tl_nlp.cli import main\nmain(['--help'])\n"
        "print(json.dumps([name for name in ('torch', 'transformers', 'datasets') if name in sys.modules]))"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                               timeout=120)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
    assert "--config FILE" in completed.stdout and "train-classifier" in completed.stdout


def command_help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    assert stopped.value.code == 0
    return capsys.readouterr().out


def test_command_help_opens_with_what_it_does_and_an_example_and_groups_the_options(capsys, tmp_path):
    short = command_help(capsys, "train-classifier", "--help")
    lines = short.splitlines()
    assert lines[0] == "usage: tl-nlp train-classifier [--config FILE] [OPTIONS]"
    assert lines[2].startswith("ULMFiT stage 3: train a classifier on top of a language model")
    assert "example:\n  tl-nlp train-classifier --model_name_or_path" in short
    assert "--config FILE" in short
    for heading in ("data:", "model:", "transfer method:", "Hub upload:", "training (ULMFiTTrainingArguments"):
        assert f"\n{heading}" in short, heading
    assert "--discriminative_lr_decay" in short and "--logging_steps" not in short
    # It was 816; the unfreezing schedule and the LR-finder options added a dozen lines, how a text is cut
    # (inference_max_length, truncation_side) a few more, --no_gradual_unfreezing two.
    assert len(lines) < 225
    assert "more training options" in short and "tl-nlp train-classifier --help-all" in short
    full = command_help(capsys, "train-classifier", "--help-all")
    classes = RECIPE_COMMANDS["train-classifier"][0]
    for field in (field for cls in classes for field in dataclasses.fields(cls) if field.init):
        assert f"--{field.name} " in full or f"--{field.name}\n" in full or f"--{field.name}," in full, field.name
    # The defaults shown are the command's and the config file's.
    output_dir = short.split("--output_dir OUTPUT_DIR", 1)[1].split("\n  --", 1)[0]
    assert "runs/classifier" in " ".join(output_dir.split())
    (tmp_path / "run.yaml").write_text("num_train_epochs: 7\n")
    from_file = command_help(capsys, "train-classifier", "--config", str(tmp_path / "run.yaml"), "--help")
    epochs = from_file.split("--num_train_epochs NUM_TRAIN_EPOCHS", 1)[1].split("\n  --", 1)[0]
    assert "(default: 7)" in " ".join(epochs.split())


@pytest.mark.parametrize("command", ["predict", "generate", "push", "zero-shot", "convert-fastai", "pretrain-lm",
                                     "finetune-lm", "ulmfit", "evaluate", "lr-find"])  # fmt: skip
def test_every_command_opens_with_a_description_and_an_example(capsys, command):
    text = command_help(capsys, command, "--help")
    assert text.splitlines()[2] and not text.splitlines()[2].startswith("options")
    assert "example:\n  " in text and "--config FILE" in text
