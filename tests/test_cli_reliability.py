"""The commands lose nothing and run nothing they were not asked to: used folders refused unless overwritten (then
emptied) or resumed, a killed stage resumed to the uninterrupted weights, no model-folder code without
--trust_remote_code, the wrong kind of folder refused by name, and settings that transformers would misuse refused
in one line with exit status 2."""

import json
import os
import signal
import sys
import time

import pytest
import torch
from process_groups import kill_process_group
from recipe_fixtures import write_corpora
from safetensors.torch import load_file

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification
from tl_nlp.cli import main
from tl_nlp.data import train_ulmfit_tokenizer
from tl_nlp.recipe import evaluate_classifier, predict

TEXTS = ["This movie was great, really great!", "Awful film. I hated it.", "The cat sat on the mat."] * 4
FAST = ["--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "2"]
TINY = ["--embedding_size", "16", "--hidden_size", "24", "--num_hidden_layers", "2", "--min_frequency", "1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    tokenizer = train_ulmfit_tokenizer(TEXTS, min_frequency=1)
    config = AWDLSTMConfig(
        vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2,
        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    for name, model_class in (("classifier", AWDLSTMForSequenceClassification), ("lm", AWDLSTMForCausalLM)):
        model_class(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    (root / "texts.txt").write_text("a great film\nan awful film\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_corpora(tmp_path_factory.mktemp("data"))


def run(capsys, argv):
    status = main([str(part) for part in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line(status, err, expected):
    assert status == 2, err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err


def classifier_command(folders, corpora, output_dir, *extra):
    return ["train-classifier", "--model_name_or_path", folders / "lm", "--train_file", corpora["train"],
            "--output_dir", output_dir, "--num_train_epochs", "1", "--per_device_train_batch_size", "8", *FAST,
            *extra]  # fmt: skip


def test_a_used_folder_is_refused_and_overwrite_replaces_every_result(folders, corpora, tmp_path, capsys):
    output = tmp_path / "clas"
    assert run(capsys, classifier_command(folders, corpora, output, "--validation_file", corpora["test"]))[0] == 0
    weights = (output / "model.safetensors").read_bytes()
    assert "eval_accuracy" in json.loads((output / "all_results.json").read_text())
    status, _, err = run(capsys, classifier_command(folders, corpora, output))
    assert_one_line(status, err, "already holds an earlier run")
    assert (output / "model.safetensors").read_bytes() == weights  # the earlier model is untouched
    # Retrained without a validation file: the old eval_accuracy must not survive into the new results.
    assert run(capsys, classifier_command(folders, corpora, output, "--overwrite_output_dir"))[0] == 0
    assert "eval_accuracy" not in json.loads((output / "all_results.json").read_text())
    assert not list(output.glob(".tl_nlp*"))  # no lock or staging folder left behind


def test_two_writers_on_one_folder_the_second_is_refused_naming_the_first(folders, corpora, tmp_path, capsys):
    import subprocess

    output = tmp_path / "clas"
    command = [sys.executable, "-c", "import sys, time; from tl_nlp.training.output_folders import OutputFolderLock;"
               "lock = OutputFolderLock(sys.argv[1], enabled=True).acquire(); print('locked', flush=True); "
               "time.sleep(120)", str(output)]  # fmt: skip
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        status, _, err = run(capsys, classifier_command(folders, corpora, output))
        assert_one_line(status, err, f"is in use by another run (pid {holder.pid} on ")
    finally:
        kill_process_group(holder)


def weights_of(folder):
    return {
        name: tensor for name, tensor in load_file(folder / "model.safetensors").items() if tensor.is_floating_point()
    }


@pytest.mark.slow
def test_a_killed_stage_resumes_from_its_last_checkpoint_to_the_uninterrupted_weights(corpora, tmp_path, capsys):
    import subprocess

    command = ["pretrain-lm", "--train_file", corpora["general"], "--per_device_train_batch_size", "4", "--bptt", "10",
               "--max_steps", "40", "--vocab_size", "200", *TINY, *FAST]  # fmt: skip
    killed = tmp_path / "killed"
    checkpointed = [*command, "--output_dir", killed, "--save_strategy", "steps", "--save_steps", "2"]
    # One thread, as in this process (conftest): float sums in another order would differ in the last bits.
    process = subprocess.Popen([sys.executable, "-m", "tl_nlp", *map(str, checkpointed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (killed / "checkpoint-6" / "trainer_state.json").exists():
            assert process.poll() is None and time.time() < deadline, process.stderr.read()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        kill_process_group(process)
    first_checkpoint = (killed / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns
    assert run(capsys, [*checkpointed, "--resume_from_checkpoint", "last"])[0] == 0
    assert (killed / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns == first_checkpoint  # not restarted
    assert run(capsys, [*command, "--output_dir", tmp_path / "reference"])[0] == 0
    resumed, reference = weights_of(killed), weights_of(tmp_path / "reference")
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)
    # The stage has finished: resuming again keeps it as it is.
    status, out, _ = run(capsys, [*checkpointed, "--resume_from_checkpoint", "last", "--save_strategy", "no"])
    assert status == 0 and weights_of(killed).keys() == reference.keys()


def test_resuming_with_other_settings_than_the_checkpoints_is_refused_naming_them(folders, corpora, tmp_path, capsys):
    # The AWD-LSTM classifier unfreezes gradually by default; a run resumed with it off (as after a change of
    # default) would not end where the uninterrupted one did.
    command = [*classifier_command(folders, corpora, tmp_path / "clas"), "--save_strategy", "steps", "--save_steps", 2]
    assert run(capsys, command)[0] == 0
    status, _, err = run(
        capsys, [*command, "--resume_from_checkpoint", "last", "--no_gradual_unfreezing", "--weight_decay", "0.1"]
    )
    # Found once the model is loaded (its family decides the defaults): after transformers' loading bar, one line.
    *before, last = err.rstrip("\n").split("\n")
    assert status == 2 and "Traceback" not in err and all("Loading weights" in line for line in before), err
    assert "it was trained with gradual_unfreezing True (now False); weight_decay 0.01 (now 0.1)" in last
    assert "resume it with --gradual_unfreezing true --weight_decay 0.01, or start afresh" in last
    assert run(capsys, [*command, "--resume_from_checkpoint", "last"])[0] == 0  # the same settings resume
    # A changed peak rate would not be used (the checkpoint's scheduler brings back the old one): refused too.
    status, _, err = run(capsys, [*command, "--resume_from_checkpoint", "last", "--learning_rate", "0.5"])
    assert status == 2 and "it was trained with learning_rate 0.01 (now 0.5)" in err.rstrip("\n").split("\n")[-1]


def test_a_run_at_the_lr_finders_rate_resumes_at_the_rate_it_found(folders, corpora, tmp_path, capsys):
    command = [*classifier_command(folders, corpora, tmp_path / "clas"), "--learning_rate_from_lr_find", "true",
               "--save_strategy", "steps", "--save_steps", 2]  # fmt: skip
    status, out, err = run(capsys, command)
    assert status == 0, err
    found = json.loads((tmp_path / "clas" / "ulmfit_training_record.json").read_text())["stages"][-1]["learning_rate"]
    assert "LR finder on head: valley" in out and found != 1e-2
    status, out, err = run(capsys, [*command, "--resume_from_checkpoint", "last"])
    assert status == 0, err
    assert f"at the rate found before, {found:.2e}" in out and "LR finder on" not in out  # no second sweep


def test_resume_errors_are_one_line(folders, corpora, tmp_path, capsys):
    status, _, err = run(
        capsys, classifier_command(folders, corpora, tmp_path / "a", "--resume_from_checkpoint", "last")
    )
    assert_one_line(status, err, "holds no checkpoint-* folder")
    status, _, err = run(
        capsys, classifier_command(folders, corpora, tmp_path / "b", "--resume_from_checkpoint", folders / "lm")
    )
    assert_one_line(status, err, "not a complete Trainer checkpoint")


def folder_with_its_own_code(source, target):
    import shutil

    shutil.copytree(source, target)
    marker = target / "code_ran"
    (target / "modeling_probe.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\nclass ProbeConfig(PretrainedConfig):\n    model_type = 'probe'\n"
    )
    config = json.loads((target / "config.json").read_text())
    config.update(model_type="probe", auto_map={"AutoConfig": "modeling_probe.ProbeConfig"})
    (target / "config.json").write_text(json.dumps(config))
    return marker


@pytest.mark.parametrize(
    ("command", "source", "extra"),
    [
        ("predict", "classifier", ["--input_file", "texts.txt"]),
        ("generate", "lm", ["--prompt", "the cat", "--max_new_tokens", "2"]),
        ("zero-shot", "lm", ["--labels", "great", "awful", "--input_file", "texts.txt"]),
        ("evaluate", "classifier", ["--test_file", "test"]),
    ],
)
def test_no_code_from_a_model_folder_runs_without_trust_remote_code(folders, corpora, tmp_path, capsys, command,
                                                                     source, extra):  # fmt: skip
    marker = folder_with_its_own_code(folders / source, tmp_path / "model")
    extra = [str(folders / "texts.txt") if part == "texts.txt" else corpora["test"] if part == "test" else part
             for part in extra]  # fmt: skip
    status, _, err = run(capsys, [command, "--model_name_or_path", tmp_path / "model", *extra])
    assert_one_line(status, err, "pass --trust_remote_code")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["predict", "--model_name_or_path", "{lm}", "--input_file", "{texts}"], "a language model (AWDLSTMForCausalLM), not a classifier"),
        (["generate", "--model_name_or_path", "{classifier}", "--prompt", "the"], "not a language model"),
        (["zero-shot", "--model_name_or_path", "{classifier}", "--labels", "a", "b", "--input_file", "{texts}"],
         "not a language model"),
        (["evaluate", "--model_name_or_path", "{lm}", "--test_file", "{test}"], "not a classifier"),
        (["finetune-lm", "--model_name_or_path", "{classifier}", "--train_file", "{general}", "--output_dir", "{out}"],
         "this stage starts from a language model"),
    ],
)  # fmt: skip
def test_the_wrong_kind_of_folder_is_refused_by_name(folders, corpora, tmp_path, capsys, argv, expected):
    values = {"lm": folders / "lm", "classifier": folders / "classifier", "texts": folders / "texts.txt",
              "test": corpora["test"], "general": corpora["general"], "out": tmp_path / "out"}  # fmt: skip
    status, _, err = run(capsys, [part.format(**values) for part in argv])
    assert_one_line(status, err, expected)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("class_names: negative\n", "class_names must be a list such as [negative, positive], got the single string"),
        ("seed: null\n", "seed must be a whole number of at least 0, got null"),
        ("learning_rate: .nan\n", "learning_rate must be > 0"),
        ("weight_decay: -1\n", "weight_decay must be a number at least 0, got -1"),
        ("per_device_eval_batch_size: 8.5\n", "per_device_eval_batch_size: expected a whole number, got 8.5"),
        ("per_device_eval_batch_size: 0\n", "per_device_eval_batch_size must be a whole number of at least 1"),
        ("gradient_accumulation_steps: 0\n", "gradient_accumulation_steps must be a whole number"),
        # YAML booleans, numbers and lists reach the options unconverted: each must fit the option's type.
        ("gradual_unfreezing: 3\n", "settings.yaml: gradual_unfreezing: expected true or false, got 3"),
        ("use_cpu: 1\n", "settings.yaml: use_cpu: expected true or false, got 1"),
        ("seed: true\n", "settings.yaml: seed: expected a whole number, got True"),
        ("seed: 4.5\n", "settings.yaml: seed: expected a whole number, got 4.5"),
        ("learning_rate: [0.001]\n", "settings.yaml: learning_rate: expected a number, got [0.001]"),
        ("unfreeze_at_fractions: 0.5\n", "settings.yaml: unfreeze_at_fractions: expected a list, got 0.5"),
        ("unfreeze_at_fractions: [0.2, yes]\n", "unfreeze_at_fractions: item 1: expected a number, got True"),
    ],
)
def test_settings_transformers_would_misuse_are_refused_naming_the_field(folders, corpora, tmp_path, capsys,
                                                                         yaml_text, expected):  # fmt: skip
    config = tmp_path / "settings.yaml"
    config.write_text(yaml_text)
    status, _, err = run(capsys, [*classifier_command(folders, corpora, tmp_path / "out"), "--config", config])
    assert_one_line(status, err, expected)
    assert not (tmp_path / "out").exists()


def test_texts_are_checked_before_they_are_scored(folders, tmp_path):
    from datasets import Dataset

    from tl_nlp.data import TextDataError

    assert len(predict(str(folders / "classifier"), "a great film")) == 1  # one string is one text
    with pytest.raises(TextDataError, match="row 0, column 'text' is empty or whitespace only"):
        evaluate_classifier(str(folders / "classifier"), Dataset.from_dict({"text": ["  ", "ok"], "label": [0, 1]}))
    with pytest.raises(TextDataError, match=r"texts: row 1, column 'text' is missing \(None\)"):
        predict(str(folders / "classifier"), ["fine", None])
