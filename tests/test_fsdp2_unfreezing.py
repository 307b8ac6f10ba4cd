"""FSDP2 (torch `fully_shard`) with gradual unfreezing and discriminative LRs on 2 CPU processes (gloo).

Frozen and trainable parameters sit in the same sharded units; FSDP2 keeps one DTensor per parameter under its own
name, so the layer groups, the per-group learning rates and the freezing all still apply. Both freeze methods keep
the ranks identical: unlike DDP, FSDP2 reduce-scatters a parameter whose `requires_grad` was switched on after
wrapping (checked with torch 2.13).
"""

import json
import os
import socket
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsdp2_unfreezing_worker.py")
# 4 groups (embeddings, layer 0, layer 1, head), one more trainable at each of the 4 steps.
EXPECTED_CHANGED = [[3], [2, 3], [1, 2, 3], [0, 1, 2, 3]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_fsdp2_shards_keep_layer_groups_frozen_and_ranks_identical(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    command += ["--master_port", str(free_port()), WORKER, str(tmp_path)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert results["auto"]["freeze_method"] == "drop_grads"  # chosen automatically with 2 processes
        assert results["requires_grad"]["freeze_method"] == "requires_grad"
        for method in ("auto", "requires_grad"):
            assert results[method]["parameter_type"] == "DTensor"  # really sharded
            steps = results[method]["steps"]
            assert [step["changed_groups"] for step in steps] == EXPECTED_CHANGED
            assert [step["max_rank_difference"] for step in steps] == [0.0] * 4
