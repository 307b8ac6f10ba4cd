"""Starting a test worker in 2 CPU processes (gloo) and reading what each rank wrote: the multi-process tests share
these so that every launch has the same environment and a timeout (a hang is a failure, not a stuck suite)."""

import json
import os
import shutil
import socket
import sys
from pathlib import Path

from process_groups import TIMEOUT_SECONDS, run_in_process_group


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch_command(worker: str) -> list[str]:
    """`accelerate launch` of `worker` on 2 CPU processes: `--cpu --num_processes 2` would start one process, so the
    command asks for `--multi_gpu` and the environment (`run_two_processes`) sets ACCELERATE_USE_CPU."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    return [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()), worker,
    ]  # fmt: skip


def torchrun_command(worker: str) -> list[str]:
    """torch's own launcher, for workers that set up the process group themselves."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), worker]  # fmt: skip


def run_two_processes(command: list[str], out_dir: Path, *args: str) -> list[dict]:
    """Runs `command` (from the builders above) with `out_dir` and `args` appended, one torch thread per process,
    and returns the JSON each rank wrote to `out_dir/rank{N}.json`. At the timeout the launcher and both workers are
    killed (their process group), not the launcher alone."""
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = run_in_process_group([*command, str(out_dir), *args], timeout=TIMEOUT_SECONDS, env=environment)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return [json.loads((Path(out_dir) / f"rank{rank}.json").read_text()) for rank in range(2)]
