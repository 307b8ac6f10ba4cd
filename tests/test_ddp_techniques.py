"""Gradual unfreezing and the logged loss under DDP: 2 CPU processes (gloo) launched by `accelerate launch`."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from two_processes import accelerate_launch_command, run_two_processes  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_ulmfit_worker.py")
# As in tests/test_unfreezing.py: 4 groups, one more unfrozen every 2 steps.
EXPECTED_CHANGED = [[3], [3], [2, 3], [2, 3], [1, 2, 3], [1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    return run_two_processes(accelerate_launch_command(WORKER), out_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    "run, method",
    [
        # transformers' Trainer wraps models with find_unused_parameters=True: frozen groups leave the graph.
        ("unfreezing", "requires_grad"),
        # Without unused-parameter detection DDP needs every gradient: computed, all-reduced, then dropped.
        ("unfreezing_without_unused_detection", "drop_grads"),
    ],
)
def test_parameters_are_identical_on_every_rank_after_every_unfreezing_step(ddp_results, run, method):
    for rank_results in ddp_results:
        unfreezing = rank_results[run]
        assert unfreezing["freeze_method"] == method  # chosen automatically from the DDP wrapper
        assert [step["max_rank_difference"] for step in unfreezing["steps"]] == [0.0] * 8  # bit-identical ranks
        # Frozen groups bit-identical to their initial weights while frozen, and training once unfrozen,
        # exactly as on one process.
        assert [step["changed_groups"] for step in unfreezing["steps"]] == EXPECTED_CHANGED
        in_backward = [step["groups_in_backward"] for step in unfreezing["steps"]]
        if method == "requires_grad":  # frozen groups cost no backward: only the trainable ones need a gradient
            assert in_backward == EXPECTED_CHANGED
        else:
            assert in_backward == [[0, 1, 2, 3]] * 8


@pytest.mark.slow
def test_lora_adapters_unfreeze_in_sync_on_every_rank(ddp_results):
    # peft freezes the base weights before DDP wraps the model, and the unfreezing callback freezes the adapters of
    # the lower groups after it: every adapter must still be all-reduced once its group is unfrozen. BERT's
    # embeddings (group 0) have no adapter under LoRA, so nothing in group 0 trains.
    for rank_results in ddp_results:
        unfreezing = rank_results["lora_unfreezing"]
        assert unfreezing["freeze_method"] == "requires_grad"
        assert [step["max_rank_difference"] for step in unfreezing["steps"]] == [0.0] * 8
        expected = [[group for group in groups if group != 0] for groups in EXPECTED_CHANGED]
        assert [step["changed_groups"] for step in unfreezing["steps"]] == expected
        assert [step["groups_in_backward"] for step in unfreezing["steps"]] == expected


@pytest.mark.slow
def test_the_hazard_is_real_for_plain_ddp(ddp_results):
    # The control experiment: with plain DDP, a layer frozen by requires_grad=False when DDP wrapped the model and
    # unfrozen afterwards is never all-reduced, and the ranks drift apart. The test above would catch that.
    assert all(rank_results["naive_divergence"] > 1e-4 for rank_results in ddp_results)


@pytest.mark.slow
def test_logged_training_loss_is_the_true_mean(ddp_results):
    loss = ddp_results[0]["loss"]
    assert loss["ulmfit"] == pytest.approx(loss["true_mean"], rel=1e-5)
    # transformers' Trainer passes num_items_in_batch to BERT (its forward takes **kwargs) and multiplies the loss
    # by the number of processes: twice the true mean on 2 processes. ULMFiTTrainer does not.
    assert loss["plain"] == pytest.approx(2 * loss["true_mean"], rel=1e-5)
