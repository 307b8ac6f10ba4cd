"""How frozen groups are kept out of training per wrapper, and the DeepSpeed settings that are refused.

The multi-process behaviour (DDP with and without unused-parameter detection: bit-identical ranks, frozen groups
out of the backward) is pinned in tests/test_ddp_techniques.py; here, what one process can check."""

import json

import pytest
from torch import nn

from tl_nlp.training.distributed_freezing import check_deepspeed_supports_ulmfit, freeze_method_for


def test_one_process_freezes_by_requires_grad():
    assert freeze_method_for(nn.Linear(2, 2)) == "requires_grad"


def test_deepspeed_refuses_gradual_unfreezing():
    # ZeRO keeps its own gradient buffers: dropping p.grad would not stop a frozen group from being updated.
    with pytest.raises(ValueError, match="gradual_unfreezing does not work under DeepSpeed.*DDP or FSDP2"):
        check_deepspeed_supports_ulmfit({"zero_optimization": {"stage": 2}}, gradual_unfreezing=True)


def test_deepspeed_optimizer_block_that_would_discard_the_per_group_rates_is_refused(tmp_path):
    config = {"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    for given in (config, path, str(path)):
        with pytest.raises(ValueError, match="`optimizer` block.*discard the discriminative per-group rates"):
            check_deepspeed_supports_ulmfit(given, gradual_unfreezing=False)
    # Without the block DeepSpeed wraps the optimizer ULMFiTTrainer builds, with its parameter groups.
    check_deepspeed_supports_ulmfit({"zero_optimization": {"stage": 2}}, gradual_unfreezing=False)
