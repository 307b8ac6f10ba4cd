"""Worker for tests/test_fsdp2_unfreezing.py, launched with `torchrun --nproc_per_node 2` (gloo on CPU).

Accelerate enables FSDP only on accelerators (on CPU it silently falls back to plain multi-process training), so
this worker shards a tiny BERT with torch's FSDP2 (`fully_shard`) directly and drives the real
`GradualUnfreezingCallback` and discriminative parameter groups around a plain training loop, once per freeze
method. It writes OUT_DIR/rank{N}.json with, after every optimizer step, the layer groups that moved from their
initial weights and the largest difference between the ranks' full parameters.
"""

import json
import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ulmfit_tiny_models import classification_dataset, tiny_bert  # noqa: E402

from tl_nlp.training import GradualUnfreezingCallback, discriminative_param_groups, layer_groups  # noqa: E402

STEPS = 4
PER_RANK = 4


def full_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.full_tensor().detach().clone() for name, parameter in model.named_parameters()}


def run(freeze_method: str) -> dict:
    torch.manual_seed(0)
    model = tiny_bert(dropout=0.0)
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    groups = layer_groups(model)
    optimizer = torch.optim.AdamW(discriminative_param_groups(model, lr=1e-2, decay=2.6, weight_decay=0.1))
    callback = GradualUnfreezingCallback(every_n_steps=1, freeze_method=freeze_method)
    state = SimpleNamespace(max_steps=STEPS, global_step=0)
    args = SimpleNamespace(gradient_accumulation_steps=1)
    callback.on_train_begin(args, state, None, model=model)
    initial = full_parameters(model)
    dataset = classification_dataset(size=STEPS * PER_RANK * dist.get_world_size())
    steps = []
    for step in range(STEPS):
        state.global_step = step
        callback.on_step_begin(args, state, None)
        start = (step * dist.get_world_size() + dist.get_rank()) * PER_RANK
        batch = dataset[start : start + PER_RANK]
        loss = model(input_ids=torch.tensor(batch["input_ids"]), labels=torch.tensor(batch["labels"])).loss
        loss.backward()
        callback.drop_frozen_gradients()
        optimizer.step()
        optimizer.zero_grad()
        current = full_parameters(model)
        flat = torch.cat([tensor.flatten() for tensor in current.values()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        changed = [
            index
            for index, group in enumerate(groups)
            if any(not torch.equal(current[name], initial[name]) for name in group.parameter_names)
        ]
        difference = max((other - gathered[0]).abs().max().item() for other in gathered[1:])
        steps.append({"changed_groups": changed, "max_rank_difference": difference})
    return {
        "freeze_method": callback.freeze_method_in_use,
        "parameter_type": type(next(model.parameters())).__name__,
        "steps": steps,
    }


def main() -> None:
    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = {method: run(method) for method in ("auto", "requires_grad")}
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as handle:
        json.dump(results, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
