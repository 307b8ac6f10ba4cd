"""FSDP2 (torch `fully_shard`) with gradual unfreezing and discriminative LRs on 2 CPU processes (gloo).

Frozen and trainable parameters sit in the same sharded units; FSDP2 keeps one DTensor per parameter under its own
name, so the layer groups, the per-group learning rates and the freezing all still apply. Both freeze methods keep
the ranks identical: unlike DDP, FSDP2 reduce-scatters a parameter whose `requires_grad` was switched on after
wrapping (checked with torch 2.13).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from two_processes import run_two_processes, torchrun_command  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsdp2_unfreezing_worker.py")
# 4 groups (embeddings, layer 0, layer 1, head), one more trainable at each of the 4 steps.
EXPECTED_CHANGED = [[3], [2, 3], [1, 2, 3], [0, 1, 2, 3]]


@pytest.mark.slow
def test_fsdp2_shards_keep_layer_groups_frozen_and_ranks_identical(tmp_path):
    for results in run_two_processes(torchrun_command(WORKER), tmp_path):
        assert results["auto"]["freeze_method"] == "drop_grads"  # chosen automatically with 2 processes
        assert results["requires_grad"]["freeze_method"] == "requires_grad"
        for method in ("auto", "requires_grad"):
            assert results[method]["parameter_type"] == "DTensor"  # really sharded
            steps = results[method]["steps"]
            assert [step["changed_groups"] for step in steps] == EXPECTED_CHANGED
            assert [step["max_rank_difference"] for step in steps] == [0.0] * 4
