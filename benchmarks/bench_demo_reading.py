"""How `make demo` should read a long review, chosen on held-out *training* reviews (the protocol's `clas_valid`),
never on the test reviews the demo reports.

For each seed and each training side (`right`: the first `--max_length` tokens of a review, transformers' default;
`left`: its last ones), the demo's classifier is trained with the recipe's `train_classifier` at the demo's settings
(all-MiniLM-L6-v2, the protocol's 400 labelled reviews, 4 epochs, batch 16, top rate 2e-4, decay 1.3, unfreezing
over the first 35% of the steps). Each trained classifier is then scored on the 500 `clas_valid` reviews read five
ways: as trained (256 tokens from its side), the first / last 256, the first / last 512 (the model's context; the
whole of most reviews), and both ends (the mean of the probabilities of the first and the last 256).

    .venv/bin/python benchmarks/bench_demo_reading.py --seeds 42 0 --threads 1
    .venv/bin/python benchmarks/bench_demo_reading.py --seeds 42 --sides left --threads 1   # one classifier

Every figure goes to `--output` (JSON), rewritten after each classifier.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from example_utils import SENTIMENT_LABELS, imdb_subsets  # noqa: E402
from transfer_demo import packaged_minilm  # noqa: E402

from tl_nlp.recipe import train_classifier  # noqa: E402

# name -> (truncation side, tokens); "as_trained" and "both_ends" are handled apart.
READINGS = {"first_256": ("right", 256), "last_256": ("left", 256), "first_512": ("right", 512),
            "last_512": ("left", 512)}  # fmt: skip


@dataclass
class DemoReadingArguments:
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder with imdb/ and its protocol."})
    model_name_or_path: str = field(default="", metadata={"help": "Checkpoint (default: the packaged MiniLM)."})
    output_dir: str = field(default="runs/demo_reading", metadata={"help": "Where the classifiers are saved."})
    output: str = field(default="benchmarks/results/demo_reading.json", metadata={"help": "JSON record."})
    seeds: list[int] = field(default_factory=lambda: [42, 0], metadata={"help": "Training seeds."})
    sides: list[str] = field(default_factory=lambda: ["right", "left"], metadata={"help": "Training sides."})
    max_length: int = field(default=256, metadata={"help": "Tokens read per review in training."})
    valid_reviews: int = field(default=500, metadata={"help": "clas_valid reviews scored (all 500 by default)."})
    max_steps: int = field(default=0, metadata={"help": "Stop training after this many steps (smoke checks; 0: off)."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})


def probabilities(folder: Path, texts: list[str], side: str, length: int) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), truncation_side=side)
    out = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start : start + 32], truncation=True, max_length=length, padding=True,
                          return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            out.append(model(**batch).logits.softmax(-1).numpy())
    return np.concatenate(out)


def main() -> None:
    (args,) = HfArgumentParser(DemoReadingArguments).parse_args_into_dataclasses()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.model_name_or_path or str(packaged_minilm())
    data = imdb_subsets(args.data_dir, 0, {"train": ("train", "train_1k", 400, True),
                                           "valid": ("train", "clas_valid", args.valid_reviews, False)})  # fmt: skip
    texts, gold = list(data["valid"]["text"]), np.asarray(data["valid"]["label"])
    stages = AutoConfig.from_pretrained(checkpoint).num_hidden_layers + 1
    fractions = [0.35 * stage / stages for stage in range(1, stages + 1)]
    report = {"arguments": asdict(args), "checkpoint": checkpoint, "runs": []}
    for seed in args.seeds:
        for side in args.sides:
            folder = Path(args.output_dir) / f"{side}_{seed}"
            start = time.perf_counter()
            train_classifier(checkpoint, data["train"], folder / "classifier", label_names=SENTIMENT_LABELS,
                             max_length=args.max_length, truncation_side=side,
                             training_args=dict(output_dir=str(folder / "checkpoints"), seed=seed, num_train_epochs=4,
                                                learning_rate=2e-4, discriminative_lr_decay=1.3,
                                                unfreeze_at_fractions=fractions, per_device_train_batch_size=16,
                                                max_steps=args.max_steps or -1,
                                                use_cpu=not torch.cuda.is_available(), report_to=[]))  # fmt: skip
            train_seconds = time.perf_counter() - start
            probs = {name: probabilities(folder / "classifier", texts, *reading) for name, reading in READINGS.items()}
            probs["as_trained"] = probs["last_256" if side == "left" else "first_256"]
            probs["both_ends"] = (probs["first_256"] + probs["last_256"]) / 2
            accuracy = {name: float((p.argmax(1) == gold).mean()) for name, p in probs.items()}
            report["runs"].append({"seed": seed, "trained_on": side, "accuracy": accuracy,
                                   "train_seconds": train_seconds})  # fmt: skip
            Path(args.output).write_text(json.dumps(report, indent=2))
            print(json.dumps(report["runs"][-1]), flush=True)


if __name__ == "__main__":
    main()
