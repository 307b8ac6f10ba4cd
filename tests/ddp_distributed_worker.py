"""Worker for tests/test_distributed.py, run on 2 CPU processes (gloo) by `accelerate launch`:

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/ddp_distributed_worker.py OUT_DIR

The run builders below are shared with the test, which runs the single-process references with the same global
batch. Each rank writes OUT_DIR/rank{N}.json; rank 0 also writes the final weights of each run as
OUT_DIR/<run>.safetensors:
- `classifier_sortish`: `ClassificationTrainer` (sortish batches from the `length` column, discriminative LRs,
  STLR, gradual unfreezing) on a tiny BERT, 2 x 4 examples per step;
- `bert_random`: `ULMFiTTrainer` on a tiny BERT with Trainer's random sampler, 2 x 4 examples per step;
- `eval`: `ClassificationTrainer.evaluate` on 13 examples (not a multiple of 2 x 4), with the sorted sampler
  (`length` column) and with Trainer's sequential one;
- `lm`: a tiny AWD-LSTM fine-tuned with `LanguageModelTrainer` on streams (state carried), then evaluated on
  validation streams whose tokens do not fill the rows evenly;
- `resume`: an uninterrupted 8-step run and the same run stopped after the checkpoint at step 3 and resumed from it.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from accelerate import PartialState
from datasets import Dataset
from safetensors.torch import save_file
from transformers import BertForSequenceClassification, TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ulmfit_tiny_models import VOCAB, classification_dataset, tiny_bert  # noqa: E402

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, ULMFiTTrainer, ULMFiTTrainingArguments  # noqa: E402
from tl_nlp.data import LanguageModelStreams  # noqa: E402
from tl_nlp.training.classification_trainer import ClassificationTrainer  # noqa: E402
from tl_nlp.training.lm_trainer import LanguageModelTrainer  # noqa: E402

GLOBAL_BATCH = 8
COMMON = dict(report_to=[], use_cpu=True, disable_tqdm=True, dataloader_pin_memory=False, save_strategy="no")
LM_LENGTHS = [9, 31, 4, 17, 26, 12, 40, 8, 21, 6]
VALID_LENGTHS = [13, 7, 22, 5, 11]  # 58 tokens: 57 targets do not fill 2 processes x 2 rows evenly


def variable_length_dataset(size: int, seed: int) -> Dataset:
    """Texts of 3 to 16 tokens with a `length` column (as `tl_nlp.data.tokenize_dataset` writes)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 17, (size,), generator=generator).tolist()
    rows = [torch.randint(2, VOCAB, (length,), generator=generator) for length in lengths]
    labels = [int((row == 5).sum() > (row == 6).sum()) for row in rows]
    return Dataset.from_dict({"input_ids": [row.tolist() for row in rows], "labels": labels, "length": lengths})


def pad_batch(features: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pads `input_ids` with 0 and builds the attention mask (DataCollatorWithPadding without a tokenizer)."""
    longest = max(len(feature["input_ids"]) for feature in features)
    input_ids = torch.zeros(len(features), longest, dtype=torch.long)
    attention_mask = torch.zeros(len(features), longest, dtype=torch.long)
    for row, feature in enumerate(features):
        input_ids[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
        attention_mask[row, : len(feature["input_ids"])] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([f["labels"] for f in features]),
    }


def accuracy(eval_prediction) -> dict[str, float]:
    predictions = np.argmax(eval_prediction.predictions, axis=-1)
    return {"accuracy": float((predictions == eval_prediction.label_ids).mean()), "count": len(predictions)}


def classifier_trainer(output_dir: str, num_processes: int, sortish: bool) -> ULMFiTTrainer:
    """12 steps of 8 examples (2 epochs of 48), one more layer group every 3 steps, STLR, decay 2.6."""
    torch.manual_seed(0)
    args = ULMFiTTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=2,
        per_device_train_batch_size=GLOBAL_BATCH // num_processes,
        learning_rate=1e-2,
        weight_decay=0.1,
        unfreeze_every_n_steps=3,
        unfreezing_schedule="partial",
        seed=3,
        **COMMON,
    )
    if sortish:
        return ClassificationTrainer(
            model=tiny_bert(dropout=0.0),
            args=args,
            train_dataset=variable_length_dataset(48, seed=1),
            data_collator=pad_batch,
        )
    return ULMFiTTrainer(model=tiny_bert(dropout=0.0), args=args, train_dataset=classification_dataset(size=48))


def evaluation_metrics(output_dir: str) -> dict[str, dict[str, float]]:
    """`evaluate()` of a seeded tiny BERT on 13 examples, 4 per device, with and without the `length` column."""
    torch.manual_seed(1)
    model = tiny_bert(dropout=0.0)
    args = ULMFiTTrainingArguments(output_dir=output_dir, per_device_eval_batch_size=4, **COMMON)
    dataset = variable_length_dataset(13, seed=2)
    trainer = ClassificationTrainer(model=model, args=args, data_collator=pad_batch, compute_metrics=accuracy)
    return {
        "sorted": trainer.evaluate(dataset),
        "sequential": trainer.evaluate(dataset.remove_columns("length")),
    }


def lm_documents(lengths: list[int], first_token: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(first_token)
    return [[2] + torch.randint(4, VOCAB, (length - 1,), generator=generator).tolist() for length in lengths]


def lm_model() -> AWDLSTMForCausalLM:
    torch.manual_seed(0)
    # No dropout: each process would draw its own masks, and the single-process reference others.
    config = AWDLSTMConfig(
        vocab_size=VOCAB,
        embedding_size=8,
        hidden_size=12,
        num_hidden_layers=2,
        input_dropout=0.0,
        hidden_dropout=0.0,
        embedding_dropout=0.0,
        weight_dropout=0.0,
        output_dropout=0.0,
    )
    return AWDLSTMForCausalLM(config)


def lm_run(output_dir: str, num_processes: int) -> tuple[AWDLSTMForCausalLM, dict[str, float]]:
    """One epoch of LM fine-tuning on streams (4 rows in all, state carried, variable BPTT, AR/TAR, gradual
    unfreezing), then, under DDP, evaluation on validation streams whose tokens do not fill the rows evenly.
    Returns the model and the metrics, with the logged training losses."""
    args = ULMFiTTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=1,
        learning_rate=1e-2,
        unfreeze_every_n_steps=2,
        unfreezing_schedule="partial",
        logging_steps=1,  # logged losses are gathered over the ranks (train()'s own total is not: see the test)
        **COMMON,
    )
    processes = {} if num_processes > 1 else {"process_index": 0, "num_processes": 1}
    documents = lm_documents(LM_LENGTHS, 10)
    train = LanguageModelStreams(
        documents, batch_size=4 // num_processes, bptt=5, variable_bptt=True, seed=4, **processes
    )
    valid = None
    if num_processes > 1:
        valid = LanguageModelStreams(lm_documents(VALID_LENGTHS, 20), batch_size=2, bptt=5, shuffle=False)
    trainer = LanguageModelTrainer(model=lm_model(), args=args, train_dataset=train, eval_dataset=valid)
    trainer.train()
    metrics = trainer.evaluate() if valid is not None else {}
    return trainer.model, {
        **metrics,
        "logged_losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
    }


class WriteCountingBert(BertForSequenceClassification):
    """Counts how many times this process writes the weights (`save_pretrained` as the main process)."""

    weight_writes = 0

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        self.weight_writes += int(is_main_process)
        return super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)


class StopAfter(TrainerCallback):
    """Interrupts training after optimizer step `step` (after that step's checkpoint is written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class RecordStageOnResume(TrainerCallback):
    """The number of trainable layer groups when training (re)starts."""

    def __init__(self, trainer: ULMFiTTrainer):
        self.trainer = trainer
        self.groups_at_start: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.groups_at_start = self.trainer.unfreezing_callback.num_trainable_groups


def resume_trainer(output_dir: str, **overrides) -> ULMFiTTrainer:
    """8 steps of 2 x 4 examples, one more layer group every 2 steps, dropout on (so the RNG state matters)."""
    torch.manual_seed(0)
    args = ULMFiTTrainingArguments(
        output_dir=output_dir,
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        unfreeze_every_n_steps=2,
        unfreezing_schedule="partial",
        **{**COMMON, **overrides},
    )
    model = WriteCountingBert(tiny_bert(dropout=0.1).config)
    return ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset(size=64))


def resume_runs(out_dir: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    uninterrupted = resume_trainer(os.path.join(out_dir, "uninterrupted"))
    uninterrupted.train()
    checkpoints = os.path.join(out_dir, "interrupted")
    interrupted = resume_trainer(checkpoints, save_strategy="steps", save_steps=3)
    interrupted.add_callback(StopAfter(3))
    interrupted.train()
    checkpoint = os.path.join(checkpoints, "checkpoint-3")
    dist.barrier()  # rank 1 lists the checkpoint only once rank 0 has written it
    resumed = resume_trainer(checkpoints, save_strategy="steps", save_steps=3)
    recorder = RecordStageOnResume(resumed)
    resumed.add_callback(recorder)
    resumed.train(resume_from_checkpoint=checkpoint)
    record = {
        "weight_writes": interrupted.model.weight_writes,
        "checkpoint_files": sorted(os.listdir(checkpoint)),
        "groups_after_resume": recorder.groups_at_start,
        "groups_at_end_of_stage_1": interrupted.unfreezing_callback.num_trainable_groups,
        "resumed_global_step": resumed.state.global_step,
    }
    return weights(uninterrupted.model), weights(resumed.model), record


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone().contiguous() for name, parameter in model.named_parameters()}


def max_rank_difference(tensors: dict[str, torch.Tensor]) -> float:
    flat = torch.cat([tensor.flatten() for tensor in tensors.values()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return max((other - gathered[0]).abs().max().item() for other in gathered[1:])


def main() -> None:
    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    PartialState()  # starts the gloo process group that the launcher set up
    rank = dist.get_rank()
    results: dict = {"world_size": dist.get_world_size()}
    final: dict[str, dict[str, torch.Tensor]] = {}
    for name, sortish in (("classifier_sortish", True), ("bert_random", False)):
        trainer = classifier_trainer(os.path.join(out_dir, name), num_processes=2, sortish=sortish)
        if sortish:
            first_batch = next(iter(trainer.get_train_dataloader()))
            results["sortish_first_batch_lengths"] = first_batch["attention_mask"].sum(1).tolist()
        trainer.train()
        final[name] = weights(trainer.model)
    results["eval"] = evaluation_metrics(os.path.join(out_dir, "eval"))
    lm_model_after, results["lm_eval"] = lm_run(os.path.join(out_dir, "lm"), num_processes=2)
    final["lm"] = weights(lm_model_after)
    final["uninterrupted"], final["resumed"], results["resume"] = resume_runs(out_dir)
    results["max_rank_difference"] = {name: max_rank_difference(tensors) for name, tensors in final.items()}
    if rank == 0:
        for name, tensors in final.items():
            save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)
    dist.barrier()
    dist.destroy_process_group()  # gloo can abort at interpreter exit otherwise


if __name__ == "__main__":
    main()
