"""Output folders: one writer at a time (named when refused, freed when its holder dies), no silent reuse of a used
folder, resume from the last complete checkpoint, and saves that leave a complete model or none, even when killed."""

import os
import signal
import socket
import sys
import textwrap

import pytest
import torch
from process_groups import run_in_process_group
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification
from ulmfit_tiny_models import tiny_awd_lstm_classifier

from tl_nlp.model_folders import ModelFolderError, check_model_folder
from tl_nlp.training.output_folders import (
    LOCK_FILE,
    OutputFolderError,
    OutputFolderLock,
    prepare_output_folder,
    resolve_checkpoint,
    save_atomically,
)

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from tl_nlp.training.output_folders import OutputFolderLock
    with OutputFolderLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def start_holder(folder, seconds=60):
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_writer_is_refused_with_the_first_ones_pid_host_and_command(tmp_path):
    holder = start_holder(tmp_path / "run")
    try:
        with pytest.raises(OutputFolderError) as refused:
            OutputFolderLock(tmp_path / "run", enabled=True).acquire()
        message = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message
        assert "-c" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL leaves the lock file behind but not the lock: the next run takes it at once.
    assert (tmp_path / "run" / LOCK_FILE).exists()
    with OutputFolderLock(tmp_path / "run", enabled=True):
        pass
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_two_writers_started_together_one_wins(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from tl_nlp.training.output_folders import OutputFolderError, OutputFolderLock
        try:
            with OutputFolderLock(sys.argv[1], enabled=True):
                time.sleep(3)
        except OutputFolderError as error:
            print(error); sys.exit(2)
        """
    )
    import subprocess

    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    codes = sorted(process.wait(timeout=120) for process in processes)
    assert codes == [0, 2]


def test_a_used_folder_is_refused_unless_overwritten_and_then_emptied(tmp_path):
    folder = tmp_path / "run"
    assert prepare_output_folder(folder) is None  # missing: fine
    folder.mkdir()
    assert prepare_output_folder(folder) is None  # empty: fine
    (folder / "all_results.json").write_text('{"eval_accuracy": 0.9}')
    (folder / "checkpoint-5").mkdir()
    with pytest.raises(
        OutputFolderError, match="already holds an earlier run .*all_results.json.*overwrite_output_dir"
    ):
        prepare_output_folder(folder)
    assert prepare_output_folder(folder, overwrite=True) is None
    assert list(folder.iterdir()) == []


def test_overwrite_refuses_the_current_folder_and_git_repositories(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputFolderError, match="current folder"):
        prepare_output_folder(".", overwrite=True)
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    (repository / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    with pytest.raises(OutputFolderError, match="git repository"):
        prepare_output_folder(repository, overwrite=True)
    assert (tmp_path / "file").exists() and (repository / ".git").exists()


def test_resume_last_takes_the_last_complete_checkpoint(tmp_path):
    folder = tmp_path / "run"
    for step, complete in [(2, True), (4, True), (6, False), (10, False)]:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert prepare_output_folder(folder, resume_from_checkpoint="last").endswith("checkpoint-4")
    assert resolve_checkpoint(folder, True).endswith("checkpoint-4")
    with pytest.raises(OutputFolderError, match="not a complete Trainer checkpoint.*checkpoint-4"):
        resolve_checkpoint(folder, str(folder))
    with pytest.raises(OutputFolderError, match="not a complete"):
        resolve_checkpoint(folder, str(folder / "checkpoint-6"))
    with pytest.raises(OutputFolderError, match="would delete .*checkpoint-4"):
        prepare_output_folder(folder, overwrite=True, resume_from_checkpoint="last")
    with pytest.raises(OutputFolderError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path / "elsewhere", "last")


def save_classifier(model):
    return lambda folder: model.save_pretrained(folder)


def test_save_atomically_into_a_new_folder_and_over_an_old_model(tmp_path):
    torch.manual_seed(0)
    first, second = tiny_awd_lstm_classifier(), tiny_awd_lstm_classifier()
    folder = tmp_path / "model"
    save_atomically(folder, save_classifier(first))
    saved = sorted(path.name for path in folder.iterdir())
    assert {"config.json", "model.safetensors"} <= set(saved)
    (folder / "checkpoint-3").mkdir()
    save_atomically(folder, save_classifier(second))
    assert sorted(path.name for path in folder.iterdir()) == sorted([*saved, "checkpoint-3"])
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder)
    for name, tensor in second.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, sys.argv[2])
    from ulmfit_tiny_models import tiny_awd_lstm_classifier
    from tl_nlp.training.output_folders import save_atomically
    torch.manual_seed(1)
    model = tiny_awd_lstm_classifier()

    def write(folder):
        model.save_pretrained(folder)
        if sys.argv[3] == "during_write":
            os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[3] == "during_move":
        real_replace = os.replace
        def replace(source, target):
            real_replace(source, target)
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
    save_atomically(sys.argv[1], write)
    """
)


@pytest.mark.parametrize("moment", ["during_write", "during_move"])
def test_a_save_killed_midway_leaves_the_old_model_or_none(tmp_path, moment):
    torch.manual_seed(0)
    old = tiny_awd_lstm_classifier()
    folder = tmp_path / "model"
    save_atomically(folder, save_classifier(old))
    tests = os.path.dirname(__file__)
    killed = run_in_process_group([sys.executable, "-c", KILLED_SAVE, str(folder), tests, moment], timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if moment == "during_write":
        # Nothing had moved yet: the old model is whole.
        weights = load_file(folder / "model.safetensors")
        assert all(torch.equal(weights[name], tensor) for name, tensor in old.state_dict().items())
        check_model_folder(folder, "classifier")
    else:
        # The new weights moved in, config.json (removed first, moved last) did not: the folder holds no model.
        with pytest.raises(ModelFolderError, match="not a saved model folder .*interrupted"):
            check_model_folder(folder, "classifier")
    # The next save cleans the staging folder the kill left.
    save_atomically(folder, save_classifier(old))
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]
    check_model_folder(folder, "classifier")
