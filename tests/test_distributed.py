"""Distributed correctness on 2 CPU processes (gloo) against one process with the same global batch.

One `accelerate launch` of `ddp_distributed_worker.py` (module-scoped fixture, with a timeout) runs every
distributed check; the single-process references run here, with the same builders.
"""

import os
import sys

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_distributed_worker import (  # noqa: E402
    VALID_LENGTHS,
    classifier_trainer,
    evaluation_metrics,
    lm_documents,
    lm_model,
    lm_run,
    variable_length_dataset,
)
from two_processes import accelerate_launch_command, run_two_processes  # noqa: E402

from tl_nlp.data import LanguageModelStreams  # noqa: E402
from tl_nlp.training.lm_trainer import stream_perplexity  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_distributed_worker.py")


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    return out_dir, run_two_processes(accelerate_launch_command(WORKER), out_dir)


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor], atol: float) -> None:
    assert expected.keys() == actual.keys()
    worst = max((expected[name] - actual[name]).abs().max().item() for name in expected)
    assert worst <= atol, f"largest weight difference {worst:.3g} > {atol}"


@pytest.mark.slow
def test_ranks_hold_identical_weights_at_the_end_of_every_run(distributed):
    _, ranks = distributed
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    for rank in ranks:
        assert set(rank["max_rank_difference"].values()) == {0.0}


@pytest.mark.slow
@pytest.mark.parametrize("name, sortish", [("classifier_sortish", True), ("bert_random", False)])
def test_two_processes_train_the_model_one_process_does_with_the_same_global_batch(
    distributed, tmp_path, name, sortish
):
    # Discriminative LRs, STLR and gradual unfreezing (one more group every 3 of 12 steps): 2 processes x 4 examples
    # end where 1 process x 8 examples ends, up to float summation order.
    out_dir, _ = distributed
    trainer = classifier_trainer(str(tmp_path), num_processes=1, sortish=sortish)
    trainer.train()
    single = {name: parameter.detach() for name, parameter in trainer.model.named_parameters()}
    ddp = load_file(out_dir / f"{name}.safetensors")
    assert_same_weights(single, ddp, atol=2e-6)
    # Not trivially equal: the run moved every layer group away from the initial weights.
    initial = dict(classifier_trainer(str(tmp_path), num_processes=1, sortish=sortish).model.named_parameters())
    assert min((single[n] - initial[n].detach()).abs().max().item() for n in single if "embeddings.word" in n) > 1e-4


@pytest.mark.slow
def test_sortish_batches_under_ddp_are_slices_of_one_global_sortish_batch(distributed):
    # The first global batch of 8 holds the longest text, sorted by decreasing length: rank 0 gets its longer half.
    _, ranks = distributed
    lengths = variable_length_dataset(48, seed=1)["length"]
    first = [rank["sortish_first_batch_lengths"] for rank in ranks]
    assert first[0][0] == max(lengths)
    assert first[0] + first[1] == sorted(first[0] + first[1], reverse=True)


@pytest.mark.slow
def test_evaluation_gathered_across_ranks_equals_one_process(distributed, tmp_path):
    # 13 examples, 4 per device: Accelerate pads rank 1's last batch with repeats of the first examples, and
    # gather_for_metrics must drop them, with the sorted (length) sampler and with Trainer's own.
    _, ranks = distributed
    single = evaluation_metrics(str(tmp_path))
    for order in ("sorted", "sequential"):
        for rank in ranks:
            metrics = rank["eval"][order]
            assert metrics["eval_count"] == 13
            assert metrics["eval_accuracy"] == single[order]["eval_accuracy"]
            assert metrics["eval_loss"] == pytest.approx(single[order]["eval_loss"], rel=1e-6)
    assert single["sorted"]["eval_loss"] == pytest.approx(single["sequential"]["eval_loss"], rel=1e-6)


@pytest.mark.slow
def test_language_model_streams_train_under_ddp_as_on_one_process_with_all_the_streams(distributed, tmp_path):
    # 2 processes x 2 streams against 1 process x 4 streams: the same rows, the state carried in each. The padded
    # tail of the last row gives the ranks different token counts: the loss must be normalised over both.
    # (Before LanguageModelTrainer counted the `shift_labels` tokens, each rank averaged its own: 1.2e-4 apart.)
    out_dir, ranks = distributed
    model, metrics = lm_run(str(tmp_path), num_processes=1)
    single = {name: parameter.detach() for name, parameter in model.named_parameters()}
    assert_same_weights(single, load_file(out_dir / "lm.safetensors"), atol=2e-6)
    # The logged losses are true token means, not multiplied by the number of processes. (transformers' own
    # `train().training_loss` adds the steps after the last log as seen by each rank alone: log at the last step.)
    assert len(metrics["logged_losses"]) == 9  # 9 windows of about 5 tokens over rows of 44
    for rank in ranks:
        assert rank["lm_eval"]["logged_losses"] == pytest.approx(metrics["logged_losses"], rel=1e-5)


@pytest.mark.slow
def test_language_model_perplexity_under_ddp_counts_every_validation_token_once(distributed):
    # The validation stream's 57 targets fill 2 processes x 2 rows of 15 with 3 padding slots: each rank reads its
    # own rows and the token-weighted loss summed over ranks is the single-process perplexity over 4 rows.
    out_dir, ranks = distributed
    model = lm_model()
    # The decoder is tied to the embedding: `named_parameters` (what the worker saved) lists it once.
    missing, unexpected = model.load_state_dict(load_file(out_dir / "lm.safetensors"), strict=False)
    assert (missing, unexpected) == (["decoder.weight"], [])
    valid = LanguageModelStreams(
        lm_documents(VALID_LENGTHS, 20), batch_size=4, bptt=5, shuffle=False, process_index=0, num_processes=1
    )
    assert (valid.num_tokens - 1) % valid.num_streams != 0
    expected = stream_perplexity(model, valid)
    for rank in ranks:
        assert rank["lm_eval"]["eval_perplexity"] == pytest.approx(expected, rel=1e-5)
        assert rank["lm_eval"]["eval_loss"] == pytest.approx(torch.tensor(expected).log().item(), rel=1e-5)


@pytest.mark.slow
def test_checkpoint_is_written_once_and_a_resumed_run_ends_where_an_uninterrupted_one_does(distributed):
    out_dir, ranks = distributed
    # Only the main process writes the weights; each process writes its own RNG state.
    assert [rank["resume"]["weight_writes"] for rank in ranks] == [1, 0]
    assert ranks[0]["resume"]["checkpoint_files"] == [
        "config.json", "model.safetensors", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth", "scheduler.pt",
        "trainer_state.json", "training_args.bin",
    ]  # fmt: skip
    for rank in ranks:
        # Stopped at step 3 with 2 of 4 groups training (stages begin at steps 2, 4, 6); resumed in that stage.
        assert rank["resume"]["groups_at_end_of_stage_1"] == 2
        assert rank["resume"]["groups_after_resume"] == 2
        assert rank["resume"]["resumed_global_step"] == 8
    uninterrupted = load_file(out_dir / "uninterrupted.safetensors")
    resumed = load_file(out_dir / "resumed.safetensors")
    assert_same_weights(uninterrupted, resumed, atol=1e-6)


def test_language_model_trainer_refuses_streams_split_for_another_number_of_processes(tmp_path):
    # Streams built before the process group existed think they are alone: under 2 processes both would read
    # every row. The trainer compares them with the run's processes (here 1 process, streams cut for 2).
    from tl_nlp import ULMFiTTrainingArguments
    from tl_nlp.training.lm_trainer import LanguageModelTrainer

    streams = LanguageModelStreams(lm_documents(VALID_LENGTHS, 20), batch_size=2, process_index=0, num_processes=2)
    args = ULMFiTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], gradual_unfreezing=False)
    with pytest.raises(ValueError, match="built for process 0 of 2, but this is process 0 of 1"):
        LanguageModelTrainer(model=lm_model(), args=args, train_dataset=streams)
