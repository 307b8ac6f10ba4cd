"""Optimizer-step time of ULMFiTTrainer against transformers' Trainer, unfrozen and frozen, on all-MiniLM-L6-v2.

Four configurations train the real checkpoint on the same SST-2 batches (padded to a fixed length, so every step does
the same work), one process:
- `trainer`: transformers' `Trainer`, every parameter trainable (the reference);
- `ulmfit_unfrozen`: `ULMFiTTrainer` with discriminative rates and STLR, no gradual unfreezing (the per-step
  overhead of our hooks and of 16 optimizer groups instead of 2);
- `ulmfit_frozen`: `ULMFiTTrainer` in its first gradual-unfreezing stage (only the head trains), freezing as it does by
  default (`freeze_method="auto"`): frozen groups get `requires_grad=False`, so no backward runs below the head, on
  one process and under DDP (where transformers' Trainer wraps the model with `find_unused_parameters=True`);
- `ulmfit_frozen_drop_grads`: the same stage with `drop_grads` (full backward, frozen gradients dropped), what DDP
  used before, and still uses without unused-parameter detection.

The configurations run in turn, `--repeats` times, so that load from other processes hits them alike; each step's
wall time is taken from `on_step_begin` to `on_step_end`, the first `--warmup` steps of every run are left out, and
the median per configuration is reported with its ratio to `trainer`.

The only work an unfrozen ULMFiTTrainer step adds is in the optimizer (one pair of groups per layer group) and a few
Python hooks. On a loaded machine the step-time ratio above is noisy, so the optimizer step is also timed alone:
Trainer's AdamW (2 groups) and ULMFiTTrainer's (16 groups) over the same gradients, alternating (and alternating
which goes first), `--optimizer_steps` times each.

    .venv/bin/python benchmarks/bench_frozen_step.py --data_dir ../shared/data --steps 12 --repeats 3

Under DDP on 2 CPU processes (each process times its own steps; the ranks wait for each other at every all-reduce,
so rank 0's times are the step times; the optimizer-only timing is skipped):

    ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 .venv/bin/accelerate launch --multi_gpu --num_processes 2 \
        benchmarks/bench_frozen_step.py --threads 1 --skip_optimizer_steps --json runs/bench_frozen_step/ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sst2_minilm import fetch_checkpoint, read_sst2  # noqa: E402

from tl_nlp.training import GradualUnfreezingCallback, ULMFiTTrainer, ULMFiTTrainingArguments  # noqa: E402

CONFIGURATIONS = ("trainer", "ulmfit_unfrozen", "ulmfit_frozen", "ulmfit_frozen_drop_grads")


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def time_configuration(name: str, model_dir: Path, dataset: Dataset, options) -> tuple[list[float], str | None]:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    common = dict(
        output_dir=str(Path(options.output_dir) / name),
        per_device_train_batch_size=options.batch_size,
        max_steps=options.steps,
        learning_rate=5e-5,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        logging_steps=options.steps,
    )
    timer = StepTimer()
    if name == "trainer":
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset, callbacks=[timer])
    elif name == "ulmfit_unfrozen":
        args = ULMFiTTrainingArguments(**common, gradual_unfreezing=False)
        trainer = ULMFiTTrainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
    else:
        method = "drop_grads" if name.endswith("drop_grads") else "auto"
        # Stages longer than the run: every step is in stage 0 (only the head trains).
        unfreezing = GradualUnfreezingCallback(every_n_steps=options.steps + 1, freeze_method=method)
        args = ULMFiTTrainingArguments(**common, gradual_unfreezing=False)
        trainer = ULMFiTTrainer(model=model, args=args, train_dataset=dataset, callbacks=[unfreezing, timer])
    trainer.train()
    callback = trainer.unfreezing_callback if isinstance(trainer, ULMFiTTrainer) else None
    return timer.seconds[options.warmup :], callback.freeze_method_in_use if callback is not None else None


def time_optimizer_steps(model_dir: Path, dataset: Dataset, options) -> dict[str, list[float]]:
    """AdamW step time of Trainer's optimizer against ULMFiTTrainer's, on the same model and gradients, alternating."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    common = dict(output_dir=str(Path(options.output_dir) / "optimizer"), report_to=[], use_cpu=True)
    optimizers = {
        "trainer": Trainer(model=model, args=TrainingArguments(**common)).create_optimizer(),
        "ulmfit": ULMFiTTrainer(model=model, args=ULMFiTTrainingArguments(**common)).create_optimizer(),
    }
    batch = {
        key: torch.tensor(dataset[: options.batch_size][key]) for key in ("input_ids", "attention_mask", "labels")
    }
    model(**batch).loss.backward()
    seconds = {name: [] for name in optimizers}
    for index in range(options.optimizer_steps):
        # Alternate which optimizer goes first: the second one of a pair finds the weights warm in cache.
        order = list(optimizers.items()) if index % 2 == 0 else list(optimizers.items())[::-1]
        for name, optimizer in order:
            start = time.perf_counter()
            optimizer.step()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--cache_dir", default=".cache/minilm")
    parser.add_argument("--output_dir", default="runs/bench_frozen_step")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--length", type=int, default=48, help="every batch is padded to this many tokens")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--optimizer_steps", type=int, default=30)
    parser.add_argument("--skip_training_runs", action="store_true", help="time the optimizer step alone")
    parser.add_argument("--skip_optimizer_steps", action="store_true", help="time the training runs alone")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/bench_frozen_step/results.json")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    model_dir = fetch_checkpoint(Path(options.cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = read_sst2(Path(options.data_dir) / "sst2" / "train.tsv")
    count = options.batch_size * options.steps
    encoded = tokenizer(rows["sentence"][:count], truncation=True, padding="max_length", max_length=options.length)
    dataset = Dataset.from_dict({**encoded, "labels": rows["label"][:count]})

    state = PartialState()
    summary = {"protocol": vars(options), "num_processes": state.num_processes}
    if not options.skip_training_runs:
        seconds = {name: [] for name in CONFIGURATIONS}
        methods = {}
        for _ in range(options.repeats):
            for name in CONFIGURATIONS:
                times, methods[name] = time_configuration(name, model_dir, dataset, options)
                seconds[name] += times
                if state.is_main_process:
                    print(name, f"median so far {statistics.median(seconds[name]):.3f} s", flush=True)
        summary["freeze_method_in_use"] = methods
        reference = statistics.median(seconds["trainer"])
        summary["median_step_seconds"] = {name: statistics.median(values) for name, values in seconds.items()}
        summary["ratio_to_trainer"] = {name: statistics.median(values) / reference for name, values in seconds.items()}
        summary["step_seconds"] = seconds
    if not options.skip_optimizer_steps:
        optimizer_seconds = time_optimizer_steps(model_dir, dataset, options)
        summary["median_optimizer_step_seconds"] = {
            name: statistics.median(values) for name, values in optimizer_seconds.items()
        }
        summary["optimizer_step_seconds"] = optimizer_seconds
    if state.is_main_process:
        Path(options.json).parent.mkdir(parents=True, exist_ok=True)
        Path(options.json).write_text(json.dumps(summary, indent=2))
        shown = ("freeze_method_in_use", "median_step_seconds", "ratio_to_trainer", "median_optimizer_step_seconds")
        print(json.dumps({key: summary[key] for key in shown if key in summary}, indent=2))

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()  # gloo can abort at interpreter exit otherwise


if __name__ == "__main__":
    main()
