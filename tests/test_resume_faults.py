"""Fault tests: a run killed (SIGTERM or SIGKILL) at a random step resumes from its last complete checkpoint to the
same final weights as an uninterrupted run, for the AWD-LSTM language model (state carried between windows, variable
BPTT) and classifier (sortish batches, dropout, gradual unfreezing), passing over a checkpoint that a kill cut short."""

import json
import random
import signal
import sys
from pathlib import Path

import pytest
from process_groups import run_in_process_group

WORKER = str(Path(__file__).with_name("resume_worker.py"))
# Steps of the worker's runs: 3 epochs of 20 windows (lm) or of 10 batches (classifier).
TOTAL_STEPS = {"lm": 60, "classifier": 30}


def kill_and_resume(tmp_path: Path, kind: str, signal_name: str, kill_at: int) -> dict:
    killed = run_in_process_group(
        [sys.executable, WORKER, str(tmp_path), kind, "--kill_at", str(kill_at), "--signal", signal_name]
    )
    assert killed.returncode == -getattr(signal, signal_name), killed.stderr[-2000:]
    assert not (tmp_path / "run" / f"checkpoint-{kill_at}").exists()
    # What a kill in the middle of Trainer's checkpoint write leaves: weights, no trainer_state.json. Resuming
    # `last` must pass over it.
    cut = tmp_path / "run" / "checkpoint-1000"
    cut.mkdir()
    (cut / "model.safetensors").write_bytes(b"\0" * 100)
    resumed = run_in_process_group([sys.executable, WORKER, str(tmp_path), kind])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "signal_name"), [("lm", "SIGTERM"), ("lm", "SIGKILL"), ("classifier", "SIGKILL")])
def test_a_run_killed_at_a_random_step_resumes_to_the_uninterrupted_weights(tmp_path, kind, signal_name):
    # Any step but the first (nothing saved yet) and one in the middle of an epoch more often than not.
    kill_at = random.Random().randrange(3, TOTAL_STEPS[kind])
    result = kill_and_resume(tmp_path, kind, signal_name, kill_at)
    last_saved = (kill_at - 1) // 2 * 2
    assert result["checkpoint"].endswith(f"checkpoint-{last_saved}"), (kill_at, result)
    assert result["steps"] == result["reference_steps"] == TOTAL_STEPS[kind]
    assert result["max_difference"] == 0.0, f"killed at step {kill_at}: {result}"
