"""Reliability probes: bad, careless and hostile inputs against the `tl-nlp` commands and the recipe API, each
classified by what a user would get.

Outcomes:
- `ok`: the probe was valid and the command did what it should (checked, not just exit status 0);
- `clear-error`: refused with a non-zero exit status (CLI) or a `ValueError`/`TypeError` (API) whose message is one
  line, and no Python traceback;
- `traceback`: an exception escaped (CLI), or an exception a user cannot act on (API: anything but a one-line
  `ValueError`/`TypeError`/`OSError` naming the problem);
- `silently-wrong`: exit status 0 for input that should have been refused, a result that is not what was asked,
  or code from a model folder that ran without `--trust_remote_code`;
- `lost-model`: a model that existed before the probe is gone or damaged, or a folder holds a mix of two saves.

Each probe runs in this process (`tl_nlp.cli.main(argv)` with its output captured) except those that need several
processes (two writers, kills), which start `python -m tl_nlp`. Models are tiny AWD-LSTMs trained by the probes'
own fixtures, so the whole set takes minutes on a CPU.

    python benchmarks/probe_reliability.py --output benchmarks/results/probe_reliability.json

Prints one line per probe and the counts; `--output` writes every probe's outcome and message as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from recipe_fixtures import write_corpora  # noqa: E402  (the recipe tests' tiny corpora)

OUTCOMES = ("ok", "clear-error", "traceback", "silently-wrong", "lost-model")
TINY_MODEL = ["--embedding_size", "16", "--hidden_size", "24", "--num_hidden_layers", "2", "--min_frequency", "1"]
FAST = ["--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "2"]


@dataclass
class Outcome:
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    exception: BaseException | None = None
    value: object = None


@dataclass
class Probe:
    """One probe: `run` returns an `Outcome`; `expect` is `"error"` (bad input) or `"ok"`; `check(outcome)` returns
    a worse outcome name (`"silently-wrong"`, `"lost-model"`) or None, and runs whatever the exit status."""

    name: str
    group: str
    run: Callable[[], Outcome]
    expect: str = "error"
    check: Callable[[Outcome], str | None] | None = None
    result: str = ""
    message: str = ""


@dataclass
class Fixtures:
    root: Path
    data: dict[str, Path] = field(default_factory=dict)
    lm: Path | None = None
    classifier: Path | None = None


# ---- running ---------------------------------------------------------------------------------------------------


def run_cli(argv: list[str], stdin: str = "") -> Outcome:
    """`tl-nlp argv` in this process; an exception that escapes `main` is what a user would see as a traceback."""
    from tl_nlp.cli import main

    outcome = Outcome()
    stdout, stderr = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                outcome.exit_status = main([str(part) for part in argv])
            except SystemExit as exit_:
                outcome.exit_status = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException as error:  # noqa: BLE001 - a probe records whatever escapes
                outcome.exception = error
                traceback.print_exc(file=stderr)
    finally:
        sys.stdin = old_stdin
        _end_distributed()
    outcome.stdout, outcome.stderr = stdout.getvalue(), stderr.getvalue()
    return outcome


def run_api(call: Callable[[], object]) -> Outcome:
    outcome = Outcome()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            outcome.value = call()
            outcome.exit_status = 0
        except BaseException as error:  # noqa: BLE001
            outcome.exception = error
    outcome.stderr = stderr.getvalue()
    return outcome


def run_process(argv: list[str], timeout: float = 600, **kwargs) -> Outcome:
    """`python -m tl_nlp argv` in its own process group (killed as a whole at the timeout)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tl_nlp", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return Outcome(exit_status=process.returncode, stdout=stdout, stderr=stderr)


def _end_distributed() -> None:
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def error_line(outcome: Outcome) -> str:
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if outcome.exception is not None:
        return f"{type(outcome.exception).__name__}: {str(outcome.exception).splitlines()[0] if str(outcome.exception) else ''}"
    errors = [
        line for line in lines if " error: " in line or line.startswith(("tl-nlp", "usage:")) or "stopped" in line
    ]
    return (errors or lines or [""])[-1][:300]


API_ERRORS = (ValueError, TypeError, OSError)


def classify(probe: Probe, outcome: Outcome) -> tuple[str, str]:
    message = error_line(outcome)
    if "Traceback (most recent call last)" in outcome.stderr and outcome.exception is None:
        # A traceback printed by the command itself (a subprocess probe).
        return "traceback", message
    if outcome.exception is not None:
        text = str(outcome.exception)
        user_error = isinstance(outcome.exception, API_ERRORS) and text and "\n" not in text.strip()
        if not (probe.group.startswith("api") and user_error):
            return "traceback", message
    worse = probe.check(outcome) if probe.check is not None else None
    if worse is not None:
        return worse, message or worse
    failed = outcome.exception is not None or outcome.exit_status not in (0, None)
    if not failed:
        return ("ok", "") if probe.expect == "ok" else ("silently-wrong", "accepted: " + outcome.stdout[-200:])
    if probe.expect == "ok":
        # A valid request refused is not silent, but it is not fine either: reported as a clear error.
        return "clear-error", "refused a valid request: " + message
    return "clear-error", message


# ---- fixtures --------------------------------------------------------------------------------------------------


def write_data(root: Path) -> dict[str, Path]:
    """The recipe tests' tiny corpora (`tests/recipe_fixtures.py`: train.csv with neg/pos labels, test.jsonl,
    general.txt) plus a texts file and the bad files the probes feed the commands."""
    corpora = write_corpora(root)
    with open(corpora["train"], encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows += [json.loads(line) for line in corpora["test"].read_text(encoding="utf-8").splitlines()]
    paths = {"train.csv": corpora["train"], "test.jsonl": corpora["test"], "general.txt": corpora["general"]}

    def write(name: str, text: str | bytes) -> Path:
        path = root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        paths[name] = path
        return path

    write("texts.txt", "a great film\nan awful film\n")
    # Bad files.
    write("empty.csv", "")
    write("header_only.csv", "text,label\n")
    write("tabs.csv", "text\tlabel\n" + "".join(f"{row['text']}\t{row['label']}\n" for row in rows[:20]))
    write("broken.jsonl", "".join(json.dumps(row) + "\n" for row in rows[:5]) + '{"text": "x", label: 1}\n')
    write("list_row.jsonl", json.dumps(rows[0]) + "\n[1, 2]\n")
    write("null_text.jsonl", "".join(json.dumps(row) + "\n" for row in rows[:5]) + '{"text": null, "label": "neg"}\n')
    write("number_text.jsonl", "".join(json.dumps(row) + "\n" for row in rows[:5]) + '{"text": 42, "label": "neg"}\n')
    write(
        "blank_text.jsonl", "".join(json.dumps(row) + "\n" for row in rows[:5]) + '{"text": "   ", "label": "neg"}\n'
    )
    write("one_class.csv", "text,label\n" + "".join(f'"{row["text"]}",neg\n' for row in rows[:20]))
    write("int_one_class.csv", "text,label\n" + "".join(f'"{row["text"]}",0\n' for row in rows[:20]))
    write(
        "other_label.jsonl",
        "".join(json.dumps(row) + "\n" for row in rows[60:70]) + '{"text": "odd", "label": "meh"}\n',
    )
    write("no_label.csv", "text\n" + "".join(f'"{row["text"]}"\n' for row in rows[:20]))
    write("ragged.csv", "text,label\nfine,neg\nbad, really,pos\n")
    write("latin1.csv", b"text,label\n" + "caf\u00e9 bad,neg\n".encode("latin-1") + b"good,pos\n")
    write("tiny.txt", "one two\n")
    write("notes.md", "# not data\n")
    write("blank_lines.txt", "\n\n   \n")
    write("config_string_classes.yaml", "class_names: negative\n")
    write("config_seed_null.yaml", "seed: null\n")
    write("config_unknown.yaml", "learning_rat: 0.01\n")
    write("config_list.yaml", "- a\n- b\n")
    write("config_broken.yaml", "a: [1, 2\n")
    write("config_float_batch.yaml", "per_device_eval_batch_size: 8.5\n")
    write("config_nan_lr.yaml", "learning_rate: .nan\n")
    # YAML values of the wrong type, which argparse passes on unconverted.
    write("config_int_switch.yaml", "gradual_unfreezing: 3\n")
    write("config_bool_seed.yaml", "seed: true\n")
    write("config_list_rate.yaml", "learning_rate: [0.001]\n")
    write("config_scalar_fractions.yaml", "unfreeze_at_fractions: 0.5\n")
    return paths


def lm_argv(fixtures: Fixtures, output_dir: Path, *extra: str) -> list[str]:
    return ["pretrain-lm", "--train_file", fixtures.data["general.txt"], "--output_dir", output_dir, "--max_steps", "4",
            "--per_device_train_batch_size", "4", "--bptt", "10", "--vocab_size", "200", *TINY_MODEL, *FAST, *extra]  # fmt: skip


def classifier_argv(fixtures: Fixtures, output_dir: Path, *extra: str, train: str = "train.csv") -> list[str]:
    return ["train-classifier", "--model_name_or_path", fixtures.lm, "--train_file", fixtures.data[train],
            "--output_dir", output_dir, "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
            *FAST, *extra]  # fmt: skip


def build_fixtures(root: Path) -> Fixtures:
    fixtures = Fixtures(root=root, data=write_data(root / "data"))
    fixtures.lm = root / "models" / "lm"
    outcome = run_cli(lm_argv(fixtures, fixtures.lm))
    if outcome.exit_status != 0:
        raise SystemExit(f"fixture language model failed: {outcome.stderr[-3000:]}")
    fixtures.classifier = root / "models" / "classifier"
    outcome = run_cli(classifier_argv(fixtures, fixtures.classifier, "--class_names", "neg", "pos"))
    if outcome.exit_status != 0:
        raise SystemExit(f"fixture classifier failed: {outcome.stderr[-3000:]}")
    return fixtures


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "checkpoint-*"))
    return target


def weights_digest(folder: Path) -> str | None:
    import hashlib

    path = folder / "model.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def loads_as(folder: Path, kind: str) -> bool:
    """Whether `folder` holds a complete model of `kind` (read directly, so that the probe set also runs against
    versions of tl_nlp without `tl_nlp.model_folders`)."""
    from safetensors import safe_open

    suffixes = ("ForSequenceClassification",) if kind == "classifier" else ("ForCausalLM", "LMHeadModel")
    try:
        config = json.loads((folder / "config.json").read_text())
        with safe_open(str(folder / "model.safetensors"), "pt") as weights:
            weights.keys()
    except Exception:  # noqa: BLE001 - any failure means the folder does not load
        return False
    return any(name.endswith(suffixes) for name in config.get("architectures") or [])


# ---- probes ----------------------------------------------------------------------------------------------------


def probes(fixtures: Fixtures) -> list[Probe]:
    data, root = fixtures.data, fixtures.root
    work = root / "work"
    work.mkdir(exist_ok=True)
    found: list[Probe] = []

    def add(name, group, run, expect="error", check=None):
        found.append(Probe(name, group, run, expect, check))

    def fresh(name: str) -> Path:
        return work / name

    # -- remote code ------------------------------------------------------------------------------------------
    def folder_with_code(name: str, source: Path) -> tuple[Path, Path]:
        folder = copy_model(source, fresh(name))
        marker = folder / "code_ran"
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = f"probe_{name.replace('-', '_')}"
        module = "modeling_probe"
        (folder / f"{module}.py").write_text(
            f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
            "from transformers import PretrainedConfig\nclass ProbeConfig(PretrainedConfig):\n"
            f"    model_type = {config['model_type']!r}\n"
        )
        config["auto_map"] = {"AutoConfig": f"{module}.ProbeConfig"}
        (folder / "config.json").write_text(json.dumps(config))
        return folder, marker

    for command, source, extra in [
        ("predict", "classifier", ["--input_file", data["texts.txt"]]),
        ("generate", "lm", ["--prompt", "the cat", "--max_new_tokens", "3"]),
        ("zero-shot", "lm", ["--labels", "great", "awful", "--input_file", data["texts.txt"]]),
        ("evaluate", "classifier", ["--test_file", data["test.jsonl"]]),
    ]:
        folder, marker = folder_with_code(f"remote-{command}", getattr(fixtures, source))
        add(f"{command} on a folder with its own code, no --trust_remote_code", "remote-code",
            lambda c=command, f=folder, e=extra: run_cli([c, "--model_name_or_path", f, *e]),
            check=lambda outcome, m=marker: "silently-wrong" if m.exists() else None)  # fmt: skip

    add("predict on an AWD-LSTM classifier folder without remote code", "remote-code",
        lambda: run_cli(["predict", "--model_name_or_path", fixtures.classifier, "--input_file", data["texts.txt"]]),
        expect="ok", check=lambda o: None if o.exit_status != 0 or all(
            json.loads(line)["label"] in ("neg", "pos") for line in o.stdout.splitlines()) else "silently-wrong")  # fmt: skip
    add("generate with an AWD-LSTM language model without remote code", "remote-code",
        lambda: run_cli(["generate", "--model_name_or_path", fixtures.lm, "--prompt", "the cat", "--max_new_tokens", "3",
                         "--seed", "0"]), expect="ok")  # fmt: skip
    add("zero-shot with an AWD-LSTM language model without remote code", "remote-code",
        lambda: run_cli(["zero-shot", "--model_name_or_path", fixtures.lm, "--labels", "great", "awful",
                         "--input_file", data["texts.txt"]]), expect="ok")  # fmt: skip
    add("evaluate an AWD-LSTM classifier without remote code", "remote-code",
        lambda: run_cli(["evaluate", "--model_name_or_path", fixtures.classifier, "--test_file", data["test.jsonl"]]),
        expect="ok")  # fmt: skip

    # -- wrong kind of folder ---------------------------------------------------------------------------------
    add(
        "predict with a language model folder",
        "wrong-folder",
        lambda: run_cli(["predict", "--model_name_or_path", fixtures.lm, "--input_file", data["texts.txt"]]),
    )
    add(
        "evaluate with a language model folder",
        "wrong-folder",
        lambda: run_cli(["evaluate", "--model_name_or_path", fixtures.lm, "--test_file", data["test.jsonl"]]),
    )
    add(
        "generate with a classifier folder",
        "wrong-folder",
        lambda: run_cli(
            ["generate", "--model_name_or_path", fixtures.classifier, "--prompt", "the", "--max_new_tokens", "2"]
        ),
    )
    add("zero-shot with a classifier folder", "wrong-folder",
        lambda: run_cli(["zero-shot", "--model_name_or_path", fixtures.classifier, "--labels", "a", "b",
                         "--input_file", data["texts.txt"]]))  # fmt: skip
    add("finetune-lm from a classifier folder", "wrong-folder",
        lambda: run_cli(["finetune-lm", "--model_name_or_path", fixtures.classifier, "--train_file", data["general.txt"],
                         "--output_dir", fresh("ft-from-clas"), "--max_steps", "2", *FAST]))  # fmt: skip
    add(
        "predict with a data folder",
        "wrong-folder",
        lambda: run_cli(["predict", "--model_name_or_path", root / "data", "--input_file", data["texts.txt"]]),
    )
    add(
        "predict with a file as the model",
        "wrong-folder",
        lambda: run_cli(["predict", "--model_name_or_path", data["train.csv"], "--input_file", data["texts.txt"]]),
    )
    add(
        "predict with a missing folder",
        "wrong-folder",
        lambda: run_cli(["predict", "--model_name_or_path", "./no/such/folder", "--input_file", data["texts.txt"]]),
    )
    add("predict with an empty folder", "wrong-folder",
        lambda: run_cli(["predict", "--model_name_or_path", fresh("empty-model").mkdir() or fresh("empty-model"),
                         "--input_file", data["texts.txt"]]))  # fmt: skip

    # -- damaged model folders ----------------------------------------------------------------------------------
    def damaged(name: str, damage: Callable[[Path], None]) -> Path:
        folder = copy_model(fixtures.classifier, fresh(name))
        damage(folder)
        return folder

    damages = {
        "empty model.safetensors": lambda f: (f / "model.safetensors").write_bytes(b""),
        "truncated model.safetensors": lambda f: (f / "model.safetensors").write_bytes(
            (f / "model.safetensors").read_bytes()[:-100]),
        "no model.safetensors": lambda f: (f / "model.safetensors").unlink(),
        "no config.json": lambda f: (f / "config.json").unlink(),
        "config.json not JSON": lambda f: (f / "config.json").write_text("{oops"),
        "pickled weights only": lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"),
        "tokenizer larger than the vocabulary": lambda f: _grow_tokenizer(f),
        "no tokenizer": lambda f: [(f / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")
                                   if (f / name).exists()],
    }  # fmt: skip
    for index, (what, damage) in enumerate(damages.items()):
        folder = damaged(f"damaged-{index}", damage)
        add(
            f"predict with {what}",
            "damaged-folder",
            lambda f=folder: run_cli(["predict", "--model_name_or_path", f, "--input_file", data["texts.txt"]]),
        )
        if index < 4:
            add(
                f"evaluate with {what}",
                "damaged-folder",
                lambda f=folder: run_cli(["evaluate", "--model_name_or_path", f, "--test_file", data["test.jsonl"]]),
            )
            add(f"train-classifier from a language model with {what.replace('tokenizer', 'its tokenizer')}",
                "damaged-folder", lambda i=index, d=damage: run_cli(
                    ["train-classifier", "--model_name_or_path", _damaged_lm(fixtures, fresh(f"damaged-lm-{i}"), d),
                     "--train_file", data["train.csv"], "--output_dir", fresh(f"from-damaged-{i}"), *FAST]))  # fmt: skip

    # -- data files -------------------------------------------------------------------------------------------
    for name in ["empty.csv", "header_only.csv", "tabs.csv", "broken.jsonl", "list_row.jsonl", "null_text.jsonl",
                 "number_text.jsonl", "blank_text.jsonl", "one_class.csv", "int_one_class.csv", "no_label.csv",
                 "ragged.csv", "latin1.csv", "notes.md"]:  # fmt: skip
        add(
            f"train-classifier on {name}",
            "data",
            lambda n=name: run_cli(classifier_argv(fixtures, fresh(f"clas-{n}"), train=n)),
        )
    for name in ["empty.csv", "broken.jsonl", "null_text.jsonl", "number_text.jsonl", "blank_text.jsonl",
                 "other_label.jsonl", "no_label.csv", "tabs.csv"]:  # fmt: skip
        add(
            f"evaluate on {name}",
            "data",
            lambda n=name: run_cli(["evaluate", "--model_name_or_path", fixtures.classifier, "--test_file", data[n]]),
        )
    for name in ["empty.csv", "tiny.txt", "blank_lines.txt", "broken.jsonl", "notes.md"]:
        add(f"pretrain-lm on {name}", "data", lambda n=name: run_cli(
            ["pretrain-lm", "--train_file", data[n], "--output_dir", fresh(f"lm-{n}"), "--max_steps", "2",
             "--per_device_train_batch_size", "4", *TINY_MODEL, *FAST]))  # fmt: skip
    add("train-classifier with a missing file", "data",
        lambda: run_cli(classifier_argv(fixtures, fresh("clas-missing"), train="train.csv")[:4] + [
            "--train_file", root / "data" / "nope.csv", "--output_dir", fresh("clas-missing")]))  # fmt: skip
    add("train-classifier with a folder as the file", "data", lambda: run_cli(
        ["train-classifier", "--model_name_or_path", fixtures.lm, "--train_file", root / "data",
         "--output_dir", fresh("clas-dir"), *FAST]))  # fmt: skip
    add(
        "train-classifier with a missing text column",
        "data",
        lambda: run_cli(classifier_argv(fixtures, fresh("clas-col"), "--text_column", "review")),
    )
    add(
        "train-classifier with a missing label column",
        "data",
        lambda: run_cli(classifier_argv(fixtures, fresh("clas-lcol"), "--label_column", "stars")),
    )
    add(
        "predict with an empty input file",
        "data",
        lambda: run_cli(
            ["predict", "--model_name_or_path", fixtures.classifier, "--input_file", data["blank_lines.txt"]]
        ),
    )
    add(
        "predict with a non-UTF-8 input file",
        "data",
        lambda: run_cli(["predict", "--model_name_or_path", fixtures.classifier, "--input_file", data["latin1.csv"]]),
    )
    add(
        "predict with nothing on standard input",
        "data",
        lambda: run_cli(["predict", "--model_name_or_path", fixtures.classifier], stdin=""),
    )
    add("pretrain-lm with more streams than tokens", "data", lambda: run_cli(
        ["pretrain-lm", "--train_file", data["tiny.txt"], "--output_dir", fresh("lm-streams"), "--max_steps", "2",
         "--per_device_train_batch_size", "64", *TINY_MODEL, *FAST]))  # fmt: skip
    add("evaluate API with None texts", "api-data", lambda: run_api(lambda: _api_evaluate(fixtures, [None, "good"])))
    add("evaluate API with a number as text", "api-data", lambda: run_api(lambda: _api_evaluate(fixtures, [3, 4])))
    add(
        "evaluate API with whitespace-only texts",
        "api-data",
        lambda: run_api(lambda: _api_evaluate(fixtures, ["   ", "good"])),
    )
    add("predict API with an empty list", "api-data", lambda: run_api(lambda: _api_predict(fixtures, [])))
    add("predict API with None", "api-data", lambda: run_api(lambda: _api_predict(fixtures, [None])))
    add(
        "predict API with a string instead of a list",
        "api-data",
        lambda: run_api(lambda: _api_predict(fixtures, "a great film")),
        expect="ok",
        check=lambda o: "silently-wrong" if o.exit_status == 0 and len(o.value) != 1 else None,
    )

    # -- settings ---------------------------------------------------------------------------------------------
    settings = {
        "num_train_epochs 0": ["--num_train_epochs", "0"],
        "num_train_epochs -1": ["--num_train_epochs", "-1"],
        "num_train_epochs nan": ["--num_train_epochs", "nan"],
        "learning_rate 0": ["--learning_rate", "0"],
        "learning_rate -0.01": ["--learning_rate", "-0.01"],
        "learning_rate nan": ["--learning_rate", "nan"],
        "learning_rate inf": ["--learning_rate", "inf"],
        "batch size 8.5": ["--per_device_train_batch_size", "8.5"],
        "batch size 0": ["--per_device_train_batch_size", "0"],
        "batch size -4": ["--per_device_train_batch_size", "-4"],
        "max_steps -5 with 0 epochs": ["--max_steps", "-5", "--num_train_epochs", "0"],
        "class_names as one string": ["--class_names", "negative"],
        "class_names with one class": ["--class_names", "neg"],
        "class_names repeated": ["--class_names", "neg", "neg"],
        "class_names missing a label": ["--class_names", "neg", "other"],
        "discriminative_lr_decay 0": ["--discriminative_lr_decay", "0"],
        "stlr_cut_frac 1.5": ["--stlr_cut_frac", "1.5"],
        "weight_decay -1": ["--weight_decay", "-1"],
        "gradient_accumulation_steps 0": ["--gradient_accumulation_steps", "0"],
        "misspelt flag": ["--learnig_rate", "0.1"],
        "seed text": ["--seed", "abc"],
        "YAML class_names: negative": ["--config", data["config_string_classes.yaml"]],
        "YAML seed: null": ["--config", data["config_seed_null.yaml"]],
        "YAML unknown key": ["--config", data["config_unknown.yaml"]],
        "YAML list instead of mapping": ["--config", data["config_list.yaml"]],
        "YAML syntax error": ["--config", data["config_broken.yaml"]],
        "YAML float batch size": ["--config", data["config_float_batch.yaml"]],
        "YAML learning_rate .nan": ["--config", data["config_nan_lr.yaml"]],
        "YAML gradual_unfreezing: 3": ["--config", data["config_int_switch.yaml"]],
        "YAML seed: true": ["--config", data["config_bool_seed.yaml"]],
        "YAML learning_rate as a list": ["--config", data["config_list_rate.yaml"]],
        "YAML unfreeze_at_fractions as a number": ["--config", data["config_scalar_fractions.yaml"]],
        "missing config file": ["--config", root / "nope.yaml"],
    }
    for index, (what, flags) in enumerate(settings.items()):
        add(
            f"train-classifier with {what}",
            "settings",
            lambda i=index, f=flags: run_cli(classifier_argv(fixtures, fresh(f"settings-{i}"), *f)),
        )
    add(
        "train-classifier with one class and no class_names",
        "settings",
        lambda: run_cli(classifier_argv(fixtures, fresh("one-class"), train="one_class.csv")),
        check=lambda o: "silently-wrong" if o.exit_status == 0 else None,
    )
    for what, flags in {"bptt 0": ["--bptt", "0"], "vocab_size 5": ["--vocab_size", "5"],
                        "min_frequency 0": ["--min_frequency", "0"], "learning_rate nan": ["--learning_rate", "nan"],
                        "num_train_epochs 0": ["--num_train_epochs", "0", "--max_steps", "-1"]}.items():  # fmt: skip
        add(
            f"pretrain-lm with {what}",
            "settings",
            lambda w=what, f=flags: run_cli([*lm_argv(fixtures, fresh("lm-settings-" + w.replace(" ", "-"))), *f]),
        )
    for what, flags in {"batch_size 0": ["--batch_size", "0"], "batch_size 1.5": ["--batch_size", "1.5"]}.items():
        add(
            f"predict with {what}",
            "settings",
            lambda f=flags: run_cli(
                ["predict", "--model_name_or_path", fixtures.classifier, "--input_file", data["texts.txt"], *f]
            ),
        )
    for what, flags in {"max_new_tokens 0": ["--max_new_tokens", "0"], "temperature 0": ["--temperature", "0"],
                        "top_p 2": ["--top_p", "2"], "temperature nan": ["--temperature", "nan"]}.items():  # fmt: skip
        add(
            f"generate with {what}",
            "settings",
            lambda f=flags: run_cli(["generate", "--model_name_or_path", fixtures.lm, "--prompt", "the", *f]),
        )
    add(
        "zero-shot with one label",
        "settings",
        lambda: run_cli(
            ["zero-shot", "--model_name_or_path", fixtures.lm, "--labels", "great", "--input_file", data["texts.txt"]]
        ),
    )
    add("zero-shot with a template without {text}", "settings", lambda: run_cli(
        ["zero-shot", "--model_name_or_path", fixtures.lm, "--labels", "a", "b", "--template", "It was",
         "--input_file", data["texts.txt"]]))  # fmt: skip
    add("unknown command", "settings", lambda: run_cli(["trian"]))
    add(
        "predict with an unknown device",
        "settings",
        lambda: run_cli(
            [
                "predict",
                "--model_name_or_path",
                fixtures.classifier,
                "--input_file",
                data["texts.txt"],
                "--device",
                "gpu9",
            ]
        ),
    )

    # -- output folders ---------------------------------------------------------------------------------------
    def used_folder(name: str) -> tuple[Path, str]:
        folder = copy_model(fixtures.classifier, fresh(name))
        (folder / "all_results.json").write_text(json.dumps({"eval_accuracy": 0.987, "old_metric": 1.0}))
        return folder, weights_digest(folder)

    folder, digest = used_folder("used")
    add("train-classifier into a used folder", "output-folder",
        lambda: run_cli(classifier_argv(fixtures, folder)),
        check=lambda o, f=folder, d=digest: "lost-model" if weights_digest(f) != d else None)  # fmt: skip
    overwritten, _ = used_folder("overwritten")
    add("train-classifier --overwrite_output_dir into a used folder", "output-folder",
        lambda: run_cli(classifier_argv(fixtures, overwritten, "--overwrite_output_dir")), expect="ok",
        check=lambda o, f=overwritten: "silently-wrong" if o.exit_status == 0 and "old_metric" in
        (f / "all_results.json").read_text() else None)  # fmt: skip
    lm_used = copy_model(fixtures.lm, fresh("lm-used"))
    lm_digest = weights_digest(lm_used)
    add(
        "pretrain-lm into a used folder",
        "output-folder",
        lambda: run_cli(lm_argv(fixtures, lm_used)),
        check=lambda o: "lost-model" if weights_digest(lm_used) != lm_digest else None,
    )
    add(
        "train-classifier with output_dir a file",
        "output-folder",
        lambda: run_cli(classifier_argv(fixtures, data["texts.txt"])),
    )
    add("train-classifier --overwrite_output_dir on the current folder", "output-folder",
        lambda: _in_folder(root / "data", lambda: run_cli(classifier_argv(fixtures, Path("."), "--overwrite_output_dir"))),
        check=lambda o: "lost-model" if not data["train.csv"].exists() else None)  # fmt: skip
    add(
        "train-classifier into the language model's own folder",
        "output-folder",
        lambda: run_cli(classifier_argv(fixtures, fixtures.lm)),
        check=lambda o: "lost-model" if not loads_as(fixtures.lm, "language model") else None,
    )
    add("predict into an output file in a missing folder", "output-folder", lambda: run_cli(
        ["predict", "--model_name_or_path", fixtures.classifier, "--input_file", data["texts.txt"],
         "--output_file", fresh("out") / "deep" / "predictions.jsonl"]), expect="ok")  # fmt: skip
    add(
        "two writers on one output folder",
        "output-folder",
        lambda: _two_writers(fixtures, fresh("two-writers")),
        check=_two_writers_check(fresh("two-writers")),
    )
    add("a model folder left by a save killed midway", "output-folder", lambda: _killed_save(fixtures, fresh("killed-save")),
        check=_killed_save_check(fresh("killed-save"), fixtures))  # fmt: skip

    # -- resume -----------------------------------------------------------------------------------------------
    add(
        "--resume_from_checkpoint last with no checkpoint",
        "resume",
        lambda: run_cli(classifier_argv(fixtures, fresh("resume-none"), "--resume_from_checkpoint", "last")),
    )
    add(
        "--resume_from_checkpoint with a missing path",
        "resume",
        lambda: run_cli(
            classifier_argv(fixtures, fresh("resume-missing"), "--resume_from_checkpoint", root / "no-checkpoint")
        ),
    )
    add(
        "--resume_from_checkpoint with a model folder, not a checkpoint",
        "resume",
        lambda: run_cli(
            classifier_argv(fixtures, fresh("resume-model"), "--resume_from_checkpoint", fixtures.classifier)
        ),
    )
    add(
        "--resume_from_checkpoint last with gradual unfreezing turned off since the checkpoint",
        "resume",
        lambda: _resume_with_other_settings(fixtures, fresh("resume-settings")),
    )
    add(
        "--resume_from_checkpoint last with another --learning_rate than the checkpoint's",
        "resume",
        lambda: _resume_with_other_settings(fixtures, fresh("resume-rate"), "--learning_rate", "0.5"),
    )
    add(
        "train-classifier at a rate too small to learn anything",
        "settings",
        lambda: run_cli(classifier_argv(fixtures, fresh("not-learnt"), "--learning_rate", "1e-9")),
        expect="ok",
        check=lambda o: None if "did not learn from its inputs" in o.stdout else "silently-wrong",
    )
    for command, signal_name in [("train-classifier", "SIGKILL"), ("train-classifier", "SIGTERM"),
                                 ("pretrain-lm", "SIGKILL"), ("pretrain-lm", "SIGTERM")]:  # fmt: skip
        name = f"resume-{command}-{signal_name}"
        add(f"{command} killed by {signal_name} mid-run, resumed with --resume_from_checkpoint last", "resume",
            lambda c=command, s=signal_name, n=name: _kill_and_resume(fixtures, c, s, fresh(n)), expect="ok",
            check=lambda o: o.value if isinstance(o.value, str) else None)  # fmt: skip

    # -- more commands: ulmfit, finetune-lm, lr-find, push, convert-fastai ----------------------------------------
    ulmfit_root = fresh("ulmfit")
    ulmfit_argv = ["ulmfit", "--pretrain_file", data["general.txt"], "--train_file", data["train.csv"],
                   "--output_dir", ulmfit_root, "--pretrain_epochs", "1", "--finetune_epochs", "1",
                   "--num_train_epochs", "1", "--lm_batch_size", "4", "--bptt", "10", "--vocab_size", "200",
                   "--class_names", "neg", "pos", *TINY_MODEL, *FAST]  # fmt: skip
    add("ulmfit, the three stages", "commands", lambda: run_cli(ulmfit_argv), expect="ok",
        check=lambda o: None if o.exit_status != 0 or loads_as(ulmfit_root / "classifier", "classifier")
        else "lost-model")  # fmt: skip
    add(
        "ulmfit again into the same folder",
        "commands",
        lambda: run_cli(ulmfit_argv),
        check=lambda o: "lost-model" if not loads_as(ulmfit_root / "classifier", "classifier") else None,
    )
    add("ulmfit --resume_from_checkpoint last after it finished (every stage kept)", "commands",
        lambda: _keeps_weights(ulmfit_root / "classifier", lambda: run_cli([*ulmfit_argv, "--resume_from_checkpoint",
                                                                            "last"])), expect="ok",
        check=lambda o: o.value if isinstance(o.value, str) else None)  # fmt: skip
    add("ulmfit with class_names as one YAML string", "commands",
        lambda: run_cli([*ulmfit_argv[:-len(TINY_MODEL) - len(FAST) - 3], *TINY_MODEL, *FAST, "--config",
                         data["config_string_classes.yaml"]]))  # fmt: skip
    add(
        "ulmfit with no pretrain file or model",
        "commands",
        lambda: run_cli(["ulmfit", "--train_file", data["train.csv"], "--output_dir", fresh("ulmfit-nothing")]),
    )
    add(
        "finetune-lm without a model",
        "commands",
        lambda: run_cli(["finetune-lm", "--train_file", data["general.txt"], "--output_dir", fresh("ft-none"), *FAST]),
    )
    add("finetune-lm from the language model", "commands", lambda: run_cli(
        ["finetune-lm", "--model_name_or_path", fixtures.lm, "--train_file", data["general.txt"], "--output_dir",
         fresh("ft-ok"), "--max_steps", "2", "--per_device_train_batch_size", "4", *FAST]), expect="ok")  # fmt: skip
    add("finetune-lm with a validation file of blank lines", "commands", lambda: run_cli(
        ["finetune-lm", "--model_name_or_path", fixtures.lm, "--train_file", data["general.txt"], "--validation_file",
         data["blank_lines.txt"], "--output_dir", fresh("ft-blank"), "--max_steps", "2", *FAST]))  # fmt: skip
    add("lr-find with end_lr below start_lr", "commands", lambda: run_cli(
        ["lr-find", "--model_name_or_path", fixtures.lm, "--train_file", data["train.csv"], "--start_lr", "1",
         "--end_lr", "0.1", "--output_dir", fresh("lrf-bad")]))  # fmt: skip
    add("lr-find with 2 steps", "commands", lambda: run_cli(
        ["lr-find", "--model_name_or_path", fixtures.lm, "--train_file", data["train.csv"], "--num_steps", "2",
         "--output_dir", fresh("lrf-short")]))  # fmt: skip
    add("lr-find on a language model with the classifier task", "commands", lambda: run_cli(
        ["lr-find", "--model_name_or_path", fixtures.classifier, "--task", "pretrain", "--train_file",
         data["general.txt"], "--output_dir", fresh("lrf-kind"), "--num_steps", "6"]))  # fmt: skip
    add(
        "push --dry_run_dir of a damaged folder",
        "commands",
        lambda: run_cli(
            ["push", "--model_dir", fresh("damaged-0"), "--repo_id", "me/x", "--dry_run_dir", fresh("push-out")]
        ),
    )
    add(
        "push --dry_run_dir of a folder that is not a model",
        "commands",
        lambda: run_cli(
            ["push", "--model_dir", root / "data", "--repo_id", "me/x", "--dry_run_dir", fresh("push-out2")]
        ),
    )
    add(
        "convert-fastai with missing files",
        "commands",
        lambda: run_cli(
            ["convert-fastai", "--weights", root / "no.pth", "--vocab", root / "no.pkl", "--output_dir", fresh("conv")]
        ),
    )
    add("convert-fastai with a text file as weights", "commands", lambda: run_cli(
        ["convert-fastai", "--weights", data["texts.txt"], "--vocab", data["texts.txt"], "--output_dir",
         fresh("conv2")]))  # fmt: skip
    add("train-classifier with --overwrite_output_dir and --resume_from_checkpoint last", "commands",
        lambda: run_cli(classifier_argv(fixtures, fresh("both"), "--overwrite_output_dir", "--resume_from_checkpoint",
                                        "last")))  # fmt: skip
    add(
        "train-classifier with a validation label outside the classes",
        "commands",
        lambda: run_cli(classifier_argv(fixtures, fresh("val-label"), "--validation_file", data["other_label.jsonl"])),
    )
    add(
        "train-classifier with --max_train_examples 0",
        "commands",
        lambda: run_cli(classifier_argv(fixtures, fresh("max0"), "--max_train_examples", "0")),
    )
    add("evaluate with --max_examples 0", "commands", lambda: run_cli(
        ["evaluate", "--model_name_or_path", fixtures.classifier, "--test_file", data["test.jsonl"], "--max_examples",
         "0"]))  # fmt: skip
    add("evaluate with two classifiers of different classes", "commands", lambda: run_cli(
        ["evaluate", "--model_name_or_path", fixtures.classifier, fresh("regression-head") if _regression_head(
            fixtures, fresh("regression-head")) else "", "--test_file", data["test.jsonl"]]))  # fmt: skip
    add("predict with --batch_size -1", "settings", lambda: run_cli(
        ["predict", "--model_name_or_path", fixtures.classifier, "--input_file", data["texts.txt"], "--batch_size",
         "-1"]))  # fmt: skip
    add(
        "generate with a blank prompt",
        "settings",
        lambda: run_cli(["generate", "--model_name_or_path", fixtures.lm, "--prompt", "   "], stdin=""),
    )

    # -- recipe API ---------------------------------------------------------------------------------------------
    add(
        "API train_classifier into a used folder",
        "api-folders",
        lambda: run_api(lambda: _api_train(fixtures, fixtures.classifier)),
        check=lambda o: "lost-model" if not loads_as(fixtures.classifier, "classifier") else None,
    )
    add(
        "API train_classifier with label_names as one string",
        "api-settings",
        lambda: run_api(lambda: _api_train(fixtures, fresh("api-string"), label_names="neg")),
    )
    add(
        "API train_classifier with a NaN learning rate",
        "api-settings",
        lambda: run_api(lambda: _api_train(fixtures, fresh("api-nan"), training_args={"learning_rate": math.nan})),
    )
    add(
        "API train_classifier with seed None",
        "api-settings",
        lambda: run_api(lambda: _api_train(fixtures, fresh("api-seed"), training_args={"seed": None})),
    )
    add(
        "API train_classifier from a damaged language model",
        "api-folders",
        lambda: run_api(lambda: _api_train(fixtures, fresh("api-damaged"), model=fresh("damaged-lm-1"))),
    )
    add("API train_classifier, resume 'last' with nothing to resume", "api-folders",
        lambda: run_api(lambda: _api_train(fixtures, fresh("api-resume"), training_args={"resume_from_checkpoint":
                                                                                       "last"})))  # fmt: skip
    add(
        "API finetune_language_model from a classifier",
        "api-folders",
        lambda: run_api(lambda: _api_finetune(fixtures, fixtures.classifier, fresh("api-ft"))),
    )
    add(
        "API finetune_language_model into a file",
        "api-folders",
        lambda: run_api(lambda: _api_finetune(fixtures, fixtures.lm, data["texts.txt"])),
    )
    add(
        "API predict with a language model folder",
        "api-folders",
        lambda: run_api(lambda: __import__("tl_nlp.recipe", fromlist=["predict"]).predict(str(fixtures.lm), ["x"])),
    )
    add(
        "API evaluate_classifier with a missing folder",
        "api-folders",
        lambda: run_api(
            lambda: __import__("tl_nlp.recipe", fromlist=["x"]).evaluate_classifier(
                "./missing", str(data["test.jsonl"])
            )
        ),
    )
    add(
        "API train_classifier, the classifier stage",
        "api-folders",
        lambda: run_api(lambda: _api_train(fixtures, fresh("api-ok"))),
        expect="ok",
    )

    # -- non-finite loss --------------------------------------------------------------------------------------
    add("train-classifier at learning rate 1e6 (loss turns NaN)", "loss-guard",
        lambda: run_cli(classifier_argv(fixtures, fresh("nan"), "--learning_rate", "1e6", "--save_steps", "1",
                                        "--save_strategy", "steps")))  # fmt: skip
    return found


def _keeps_weights(folder: Path, call: Callable[[], Outcome]) -> Outcome:
    before = weights_digest(folder)
    outcome = call()
    if outcome.exit_status == 0 and weights_digest(folder) != before:
        outcome.value = "silently-wrong"  # a finished stage trained again
    return outcome


def _regression_head(fixtures: Fixtures, folder: Path) -> bool:
    """A copy of the classifier whose config names three classes: an ensemble of mismatched heads."""
    if not folder.exists():
        copy_model(fixtures.classifier, folder)
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = {"0": "a", "1": "b", "2": "c"}
        config["label2id"] = {"a": 0, "b": 1, "c": 2}
        (folder / "config.json").write_text(json.dumps(config))
    return True


def _api_train(fixtures: Fixtures, output_dir: Path, model: Path | None = None, **kwargs):
    from tl_nlp.recipe import train_classifier

    kwargs.setdefault("training_args", {})
    kwargs["training_args"] = {"num_train_epochs": 1, "report_to": [], "disable_tqdm": True, **kwargs["training_args"]}
    kwargs.setdefault("label_names", ["neg", "pos"])
    return train_classifier(str(model or fixtures.lm), str(fixtures.data["train.csv"]), output_dir, **kwargs)


def _api_finetune(fixtures: Fixtures, model: Path, output_dir: Path):
    from tl_nlp.recipe import finetune_language_model

    return finetune_language_model(str(model), str(fixtures.data["general.txt"]), output_dir,
                                   training_args={"max_steps": 2, "report_to": [], "disable_tqdm": True})  # fmt: skip


def _grow_tokenizer(folder: Path) -> None:
    from transformers import AutoTokenizer

    import tl_nlp  # noqa: F401

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([f"extra{i}" for i in range(500)])
    tokenizer.save_pretrained(folder)


def _damaged_lm(fixtures: Fixtures, target: Path, damage: Callable[[Path], None]) -> Path:
    if not target.exists():
        copy_model(fixtures.lm, target)
        damage(target)
    return target


def _in_folder(folder: Path, call: Callable[[], Outcome]) -> Outcome:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        return call()
    finally:
        os.chdir(previous)


def _api_evaluate(fixtures: Fixtures, texts: list):
    from datasets import Dataset

    from tl_nlp.recipe import evaluate_classifier

    return evaluate_classifier(str(fixtures.classifier), Dataset.from_dict({"text": texts, "label": ["neg", "pos"]}))


def _api_predict(fixtures: Fixtures, texts):
    from tl_nlp.recipe import predict

    return predict(str(fixtures.classifier), texts)


def _two_writers(fixtures: Fixtures, folder: Path) -> Outcome:
    """Two `train-classifier` processes on one output folder, started together: one must be refused."""
    argv = [sys.executable, "-m", "tl_nlp", *map(str, classifier_argv(fixtures, folder, "--num_train_epochs", "30"))]
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for _ in range(2)
    ]
    finished = [process.communicate(timeout=900) for process in processes]
    codes = [process.returncode for process in processes]
    refused = 1 if codes[1] != 0 else 0
    outcome = Outcome(exit_status=codes[refused], stdout=finished[refused][0], stderr=finished[refused][1])
    outcome.value = (codes[1 - refused], finished[1 - refused][1])
    return outcome


def _two_writers_check(folder: Path) -> Callable[[Outcome], str | None]:
    def check(outcome: Outcome) -> str | None:
        first_status, first_err = outcome.value
        if outcome.exit_status == 0 and first_status == 0:
            return "lost-model"  # both "saved" into one folder: one model is gone
        if not loads_as(folder, "classifier"):
            return "lost-model"
        return None

    return check


def _killed_save(fixtures: Fixtures, folder: Path) -> Outcome:
    """A save killed between moving the weights and the config: what `predict` says about the folder."""
    copy_model(fixtures.classifier, folder)
    script = (
        "import os, signal, sys\n"
        "from transformers import AutoModelForSequenceClassification\n"
        "import tl_nlp\n"
        "from tl_nlp.training.output_folders import save_atomically\n"
        "model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1])\n"
        "real = os.replace\n"
        "def replace(a, b):\n"
        "    real(a, b)\n"
        "    if str(b).endswith('model.safetensors'): os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = replace\n"
        "save_atomically(sys.argv[1], lambda f: model.save_pretrained(f))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, timeout=600)
    return run_cli(["predict", "--model_name_or_path", folder, "--input_file", fixtures.data["texts.txt"]])


def _killed_save_check(folder: Path, fixtures: Fixtures) -> Callable[[Outcome], str | None]:
    def check(outcome: Outcome) -> str | None:
        # Exit 0 would mean the folder loaded with a mix of two saves (or the old model with new weights).
        return "lost-model" if outcome.exit_status == 0 else None

    return check


def _resume_with_other_settings(fixtures: Fixtures, folder: Path, *changed: str) -> Outcome:
    """A classifier trained with checkpoints, then resumed with `changed` settings (by default gradual unfreezing off,
    where the AWD-LSTM default is on): the run would not end where the uninterrupted one did (a changed peak rate
    would not even be used: the checkpoint's scheduler keeps the old one)."""
    argv = classifier_argv(fixtures, folder, "--save_strategy", "steps", "--save_steps", "2")
    first = run_cli(argv)
    if first.exit_status != 0:
        return first
    return run_cli([*argv, "--resume_from_checkpoint", "last", *(changed or ["--no_gradual_unfreezing"])])


def _kill_and_resume(fixtures: Fixtures, command: str, signal_name: str, folder: Path) -> Outcome:
    """Starts `command` with a checkpoint every 2 steps, kills it after its second checkpoint, resumes with
    `--resume_from_checkpoint last`, and compares the final weights with an uninterrupted run's."""
    from safetensors.torch import load_file

    if command == "pretrain-lm":
        argv = lm_argv(fixtures, folder, "--save_strategy", "steps", "--save_steps", "2")
        argv[argv.index("--max_steps") + 1] = "40"
        reference_argv = lm_argv(fixtures, folder.with_name(folder.name + "-reference"))
        reference_argv[reference_argv.index("--max_steps") + 1] = "40"
    else:
        argv = classifier_argv(fixtures, folder, "--num_train_epochs", "4", "--save_strategy", "steps",
                               "--save_steps", "2", "--class_names", "neg", "pos")  # fmt: skip
        reference_argv = classifier_argv(fixtures, folder.with_name(folder.name + "-reference"), "--num_train_epochs",
                                         "4", "--class_names", "neg", "pos")  # fmt: skip
    # One thread, as in this process: float sums in another order would differ in the last bits.
    process = subprocess.Popen([sys.executable, "-m", "tl_nlp", *map(str, argv)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if any(path.name == "trainer_state.json" for path in folder.rglob("checkpoint-4/trainer_state.json")):
            break
        time.sleep(0.05)
    os.killpg(process.pid, getattr(signal, signal_name))
    process.communicate()
    # A run that ignores --resume_from_checkpoint starts at step 0 and rewrites the first checkpoint: the final
    # weights would still match (same seed), so the first checkpoint's state file is watched too.
    first_states = {path: path.stat().st_mtime_ns for path in folder.rglob("checkpoint-2/trainer_state.json")}
    resumed = run_cli([*argv, "--resume_from_checkpoint", "last"])
    restarted = [path for path, mtime in first_states.items() if not path.exists() or path.stat().st_mtime_ns != mtime]
    if resumed.exit_status != 0 or resumed.exception is not None:
        return resumed
    reference = run_cli(reference_argv)
    got = load_file(folder / "model.safetensors")
    expected = load_file(folder.with_name(folder.name + "-reference") / "model.safetensors")
    # Floating-point tensors only: BatchNorm's integer `num_batches_tracked` of a new AWD-LSTM head is left
    # uninitialised by from_pretrained (it plays no part in the outputs).
    difference = max(
        float((got[name] - expected[name]).abs().max()) for name in expected if got[name].is_floating_point()
    )
    resumed.value = None if difference == 0 and reference.exit_status == 0 and not restarted else "silently-wrong"
    resumed.stdout += f"\nmax weight difference to an uninterrupted run: {difference}; restarted: {bool(restarted)}"
    return resumed


# ---- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write every probe's outcome here as JSON")
    parser.add_argument("--only", help="run only probes whose name contains this text")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)
    import logging

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("tl_nlp").setLevel(logging.ERROR)
    root = options.keep or Path(tempfile.mkdtemp(prefix="probe_reliability_"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    fixtures = build_fixtures(root)
    selected = [probe for probe in probes(fixtures) if options.only is None or options.only in probe.name]
    counts: Counter = Counter()
    for probe in selected:
        began = time.time()
        try:
            outcome = probe.run()
        except BaseException as error:  # noqa: BLE001 - a probe whose own setup failed
            outcome = Outcome(exception=error, stderr=traceback.format_exc())
        probe.result, probe.message = classify(probe, outcome)
        counts[probe.result] += 1
        print(f"{probe.result:14s} {time.time() - began:6.1f}s [{probe.group}] {probe.name}: {probe.message[:240]}",
              flush=True)  # fmt: skip
    summary = {outcome: counts[outcome] for outcome in OUTCOMES}
    print(
        f"\n{len(selected)} probes in {time.time() - started:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in summary.items())
    )
    if options.output:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps({
            "probes": len(selected), "counts": summary,
            "results": [{"name": p.name, "group": p.group, "expect": p.expect, "outcome": p.result,
                         "message": p.message} for p in selected],
        }, indent=1) + "\n")  # fmt: skip
    if not options.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
