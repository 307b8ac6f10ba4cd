"""Worker for tests/test_ddp_techniques.py, run on 2 CPU processes (gloo) by `accelerate launch`.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/ddp_ulmfit_worker.py OUT_DIR

Each rank writes OUT_DIR/rank{N}.json with:
- `unfreezing`: after every optimizer step of a gradually unfrozen ULMFiTTrainer run, the largest difference between
  the ranks' parameters, which layer groups differ from their initial weights, and which groups' parameters require
  a gradient (frozen groups left out of the backward); `unfreezing_without_unused_detection`: the same run with
  `ddp_find_unused_parameters=False`, where frozen gradients are computed and dropped instead; `lora_unfreezing`: the
  first run with the model wrapped in LoRA adapters (`ulmfit_lora_model`), which peft freezes before DDP wraps it:
  only the adapters and the head are counted there;
- `loss`: the training loss that ULMFiTTrainer and transformers' Trainer report with the learning rate at 0, and the
  true mean cross-entropy over the same examples;
- `naive_divergence`: the control experiment, plain DDP wrapping a model whose first layer was frozen by
  `requires_grad=False` and unfrozen afterwards: how far that layer drifts apart between the ranks.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ulmfit_tiny_models import classification_dataset, snapshot, tiny_bert  # noqa: E402

from tl_nlp.training import ULMFiTTrainer, ULMFiTTrainingArguments, layer_groups  # noqa: E402
from tl_nlp.training.lora import ulmfit_lora_model  # noqa: E402

COMMON = dict(report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, per_device_train_batch_size=4)


class RankSyncRecorder(TrainerCallback):
    """After every optimizer step: max |rank 0 - rank 1| over all parameters, and the groups that moved so far.

    A group is counted by the parameters that were trainable before training (with LoRA: its adapters; a group
    with none, such as BERT's embeddings under LoRA, never counts as changed or in the backward).
    """

    def __init__(self, model):
        self.initial = snapshot(model)
        trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        self.groups = [[name for name in group.parameter_names if name in trainable] for group in layer_groups(model)]
        self.steps = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        current = snapshot(model)
        changed = [
            index
            for index, group in enumerate(self.groups)
            if any(not torch.equal(current[name], self.initial[name]) for name in group)
        ]
        difference = max((other - gathered[0]).abs().max().item() for other in gathered[1:])
        parameters = dict(model.named_parameters())
        in_backward = [
            index
            for index, group in enumerate(self.groups)
            if group and all(parameters[name].requires_grad for name in group)
        ]
        self.steps.append(
            {
                "step": state.global_step,
                "max_rank_difference": difference,
                "changed_groups": changed,
                "groups_in_backward": in_backward,
            }
        )


def unfreezing_run(out_dir, find_unused_parameters=None, lora=False):
    torch.manual_seed(0)  # the same initial weights on both ranks; DistributedSampler gives them different data
    model = ulmfit_lora_model(tiny_bert()) if lora else tiny_bert()
    args = ULMFiTTrainingArguments(
        output_dir=out_dir,
        max_steps=8,
        learning_rate=1e-2,
        weight_decay=0.1,
        unfreeze_every_n_steps=2,
        unfreezing_schedule="partial",
        logging_steps=1,
        ddp_find_unused_parameters=find_unused_parameters,
        **COMMON,
    )
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset(size=64))
    recorder = RankSyncRecorder(model)
    trainer.add_callback(recorder)
    trainer.train()
    return {"freeze_method": trainer.unfreezing_callback.freeze_method_in_use, "steps": recorder.steps}


def loss_runs(out_dir):
    dataset = classification_dataset(size=32)
    results = {}
    for name in ("ulmfit", "plain"):
        torch.manual_seed(0)
        model = tiny_bert(dropout=0.0)
        # Learning rate 0: the weights never move, so each step's loss is the mean over that step's examples and
        # the run's training loss is the mean over the whole dataset (2 ranks x 4 examples x 4 steps = 32).
        if name == "ulmfit":
            args = ULMFiTTrainingArguments(
                output_dir=out_dir, max_steps=4, learning_rate=0.0, logging_steps=4, **COMMON
            )
            trainer = ULMFiTTrainer(model=model, args=args, train_dataset=dataset)
        else:
            args = TrainingArguments(output_dir=out_dir, max_steps=4, learning_rate=0.0, logging_steps=4, **COMMON)
            trainer = Trainer(model=model, args=args, train_dataset=dataset)
        results[name] = trainer.train().training_loss
    model.eval()
    with torch.no_grad():
        output = model(input_ids=torch.tensor(dataset["input_ids"]), labels=torch.tensor(dataset["labels"]))
    results["true_mean"] = output.loss.item()
    return results


def naive_divergence():
    """Plain DDP: a layer frozen with requires_grad=False when DDP wraps the model is never all-reduced later."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    model[0].requires_grad_(False)
    ddp = nn.parallel.DistributedDataParallel(model)
    model[0].requires_grad_(True)  # "unfreeze" after wrapping
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(dist.get_rank())  # each rank its own data, as with a sampler
    for _ in range(3):
        inputs = torch.randn(8, 4, generator=generator)
        ddp(inputs).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    weight = model[0].weight.detach().flatten()
    gathered = [torch.empty_like(weight) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, weight)
    return (gathered[1] - gathered[0]).abs().max().item()


def main():
    out_dir = sys.argv[1]
    results = {"unfreezing": unfreezing_run(out_dir), "loss": loss_runs(out_dir)}
    results["unfreezing_without_unused_detection"] = unfreezing_run(out_dir, find_unused_parameters=False)
    results["lora_unfreezing"] = unfreezing_run(out_dir, lora=True)
    results["naive_divergence"] = naive_divergence()
    rank = dist.get_rank()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)
    dist.barrier()
    dist.destroy_process_group()  # gloo can abort at interpreter exit otherwise


if __name__ == "__main__":
    main()
