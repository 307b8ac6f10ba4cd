"""Language-model streams under DDP: 2 processes (gloo on CPU) training through `LanguageModelTrainer`.

Every token of an epoch must be a target exactly once across the two ranks, each rank's rows must continue the text
window after window, the state must start from zeros only at each epoch start, and DDP must keep the ranks' weights
identical. The worker (`ddp_lm_streams_worker.py`) records what each rank read.
"""

import os
import sys

import numpy as np
import pytest

from tl_nlp.data import LanguageModelStreams
from tl_nlp.data.lm_data import IGNORE_INDEX

sys.path.insert(0, os.path.dirname(__file__))
from ddp_lm_streams_worker import DOCUMENTS, STREAM_ARGS  # noqa: E402
from two_processes import run_two_processes, torchrun_command  # noqa: E402


@pytest.mark.slow
def test_two_processes_read_every_token_once_in_order(tmp_path):
    worker = os.path.join(os.path.dirname(__file__), "ddp_lm_streams_worker.py")
    ranks = run_two_processes(torchrun_command(worker), tmp_path)
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)

    reference = LanguageModelStreams(DOCUMENTS, process_index=0, num_processes=2, **STREAM_ARGS)
    for epoch in range(2):
        reference.set_epoch(epoch)
        stream = reference._epoch_stream()
        rows = []
        for rank in ranks:
            windows = [window for window in rank["windows"] if window["epoch"] == epoch]
            assert len(windows) == len(reference)
            assert [window["zero_state"] for window in windows] == [True] + [False] * (len(windows) - 1)
            inputs = np.concatenate([np.array(window["input_ids"]) for window in windows], axis=1)
            targets = np.concatenate([np.array(window["shift_labels"]) for window in windows], axis=1)
            # Within a row the inputs continue the text, across window edges too: each target is the next input.
            real = targets[:, 1:] != IGNORE_INDEX
            assert np.array_equal(inputs[:, 1:][real], targets[:, :-1][real])
            rows.append(targets)
        # Rank 0's rows then rank 1's, read left to right, are the epoch's stream: every token once, in order.
        every_target = np.concatenate(rows, axis=0)
        assert np.array_equal(every_target[every_target != IGNORE_INDEX], stream[1:])
