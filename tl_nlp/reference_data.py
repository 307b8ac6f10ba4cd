"""The public datasets that tl_nlp's demo, notebook, examples and tests read, in one folder, fetched from the Hub.

The folder holds each dataset in its Hub schema, in the layout the examples take as `--data_dir`:

| folder        | files                                                   | Hub dataset                               |
|---------------|---------------------------------------------------------|-------------------------------------------|
| `wikitext-2/` | `train.txt`, `valid.txt`, `test.txt` (one line per row) | `Salesforce/wikitext`, `wikitext-2-v1`    |
| `imdb/`       | `train.parquet`, `test.parquet`, `unsup.parquet`; `small_protocol.json` | `stanfordnlp/imdb`        |
| `sst2/`       | `train.tsv`, `dev.tsv` (`sentence`, `label`, a header) | `nyu-mll/glue`, `sst2`                    |
| `glue_rte/`   | `train.parquet`, `validation.parquet`                   | `nyu-mll/glue`, `rte`                     |
| `glue_stsb/`  | `train.parquet`, `validation.parquet`                   | `nyu-mll/glue`, `stsb`                    |
| `super_glue_copa/` | `train.parquet`, `validation.parquet`              | `aps/super_glue`, `copa`                  |
| `sst5/`       | `train.parquet`, `validation.parquet`, `test.parquet`   | `SetFit/sst5`                             |
| `go_emotions/` | `train.parquet`, `validation.parquet`, `test.parquet`  | `google-research-datasets/go_emotions`, `simplified` |

The parquet files keep the Hub's `Features` (`ClassLabel` names travel in their metadata). Only splits whose labels
the Hub publishes are fetched: the Hub's RTE, STS-B and COPA test splits carry no labels (every label is -1), so
a folder fetched here has no `test.parquet` for them, and what needs gold test labels (the COPA test accuracy in
`benchmarks/bench_tasks.py`) needs a copy that has them; the tests use validation rows instead.

`small_protocol.json` fixes the IMDb rows of the small CPU protocol, so that runs on the same folder read the same
reviews: `lm_train` (8,000) and `lm_valid` (500) from unsup, `train_10k` (balanced), `train_1k` (balanced, its
first 500 of each label) and `clas_valid` (500, disjoint from both) from train, `test_5k` (balanced) from test. The
rows are drawn with a fixed seed from the Hub's splits.

[`find_reference_data`] says where the folder is (`TL_NLP_DATA_DIR`, else `../shared/data` when it exists, else
`.cache/data` in the repository); [`prepare_reference_data`] writes it (`make data`, or
`python -m tl_nlp.reference_data .cache/data`). The Hub is read with `datasets.load_dataset`, so `HF_ENDPOINT`,
`HF_HOME` and offline caches apply as everywhere in the Hugging Face stack.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

# name -> (Hub id, configuration, {our split file stem: Hub split}). SuperGLUE is read from `aps/super_glue`, where the
# Hub now keeps the former `super_glue` repository as parquet files (datasets 4 and later run no loading scripts).
HUB_DATASETS: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-v1", {"train": "train", "valid": "validation", "test": "test"}),
    "imdb": ("stanfordnlp/imdb", None, {"train": "train", "test": "test", "unsup": "unsupervised"}),
    "sst2": ("nyu-mll/glue", "sst2", {"train": "train", "dev": "validation"}),
    "glue_rte": ("nyu-mll/glue", "rte", {"train": "train", "validation": "validation"}),
    "glue_stsb": ("nyu-mll/glue", "stsb", {"train": "train", "validation": "validation"}),
    "super_glue_copa": ("aps/super_glue", "copa", {"train": "train", "validation": "validation"}),
    "sst5": ("SetFit/sst5", None, {"train": "train", "validation": "validation", "test": "test"}),
    "go_emotions": (
        "google-research-datasets/go_emotions",
        "simplified",
        {"train": "train", "validation": "validation", "test": "test"},
    ),
}
# A file that is written last in each dataset's folder: its presence means the folder is complete.
COMPLETE = {
    "wikitext-2": "test.txt",
    "imdb": "small_protocol.json",
    "sst2": "dev.tsv",
    "glue_rte": "validation.parquet",
    "glue_stsb": "validation.parquet",
    "super_glue_copa": "validation.parquet",
    "sst5": "test.parquet",
    "go_emotions": "test.parquet",
}
REPOSITORY = Path(__file__).resolve().parents[1]
PROTOCOL_SEED = 0
# Why a test that needs real data skips (pytest's reason).
NO_REFERENCE_DATA = (
    "no real data: `make data` fetches WikiText-2, IMDb, SST-2, RTE, STS-B, COPA, SST-5 and GoEmotions from the Hub "
    "into .cache/data (needs internet once), or set TL_NLP_DATA_DIR to a folder holding them"
)


def find_reference_data(names: tuple[str, ...] = tuple(HUB_DATASETS)) -> Path | None:
    """The first folder holding all of `names`: `$TL_NLP_DATA_DIR`, `../shared/data` (next to the repository or the
    working directory), `.cache/data` in the repository; `None` when there is none."""
    candidates = [os.environ.get("TL_NLP_DATA_DIR")]
    candidates += [REPOSITORY.parent / "shared" / "data", Path("../shared/data"), REPOSITORY / ".cache" / "data"]
    for candidate in candidates:
        if candidate and all((Path(candidate) / name / COMPLETE[name]).is_file() for name in names):
            return Path(candidate)
    return None


def prepare_reference_data(directory: str | Path, names: tuple[str, ...] = tuple(HUB_DATASETS)) -> Path:
    """Writes `names` into `directory` from the Hub (datasets already complete there are kept).

    Example:

    ```python
    >>> prepare_reference_data(".cache/data")  # doctest: +SKIP
    PosixPath('.cache/data')
    ```
    """
    if not str(directory):
        raise ValueError("prepare_reference_data: the directory is empty; name the folder to write, e.g. .cache/data")
    directory = Path(directory)
    for name in names:
        if name not in HUB_DATASETS:
            raise ValueError(f"unknown dataset {name!r}; the reference datasets are {sorted(HUB_DATASETS)}")
        folder = directory / name
        if (folder / COMPLETE[name]).is_file():
            continue
        import datasets

        folder.mkdir(parents=True, exist_ok=True)
        repo_id, config_name, splits = HUB_DATASETS[name]
        for stem, split in splits.items():
            print(f"{repo_id} ({config_name or 'default'}), {split} -> {folder}", flush=True)
            dataset = datasets.load_dataset(repo_id, config_name, split=split)
            if name == "wikitext-2":
                lines = (text[:-1] if text.endswith("\n") else text for text in dataset["text"])
                _write_text(folder / f"{stem}.txt", "\n".join(lines) + "\n")
            elif name == "sst2":
                rows = (
                    f"{sentence}\t{label}"
                    for sentence, label in zip(dataset["sentence"], dataset["label"], strict=True)
                )
                _write_text(folder / f"{stem}.tsv", "sentence\tlabel\n" + "\n".join(rows) + "\n")
            else:  # parquet with the Hub's Features, as in ../shared/data
                partial = folder / f"{stem}.parquet.partial"
                dataset.to_parquet(str(partial))
                partial.replace(folder / f"{stem}.parquet")
        if name == "imdb":
            protocol = small_protocol(
                {split: datasets.load_dataset("parquet", data_files=str(folder / f"{split}.parquet"), split="train")[
                    "label"
                ] for split in ("train", "test", "unsup")}
            )  # fmt: skip
            _write_text(folder / "small_protocol.json", json.dumps(protocol, indent=1) + "\n")
    return directory


def small_protocol(labels: dict[str, list[int]], seed: int = PROTOCOL_SEED) -> dict:
    """The rows of the small CPU protocol (see the module docstring) for IMDb splits with these labels."""
    rng = random.Random(seed)

    def balanced(indices: list[int], split_labels: list[int], count: int) -> list[int]:
        chosen = []
        for label in (0, 1):
            of_label = [index for index in indices if split_labels[index] == label]
            if len(of_label) < count // 2:
                raise ValueError(f"IMDb: {len(of_label)} reviews with label {label}, the protocol needs {count // 2}")
            chosen += of_label[: count // 2]
        rng.shuffle(chosen)
        return chosen

    unsup = rng.sample(range(len(labels["unsup"])), 8_500)
    train_order = rng.sample(range(len(labels["train"])), len(labels["train"]))
    train_10k = balanced(train_order, labels["train"], 10_000)
    # train_1k: the first 500 of each label of train_10k, so that it is a subset of it.
    by_label = {label: [index for index in train_10k if labels["train"][index] == label] for label in (0, 1)}
    train_1k = by_label[0][:500] + by_label[1][:500]
    rng.shuffle(train_1k)
    used = set(train_10k)
    clas_valid = [index for index in train_order if index not in used][:500]
    test_5k = balanced(rng.sample(range(len(labels["test"])), len(labels["test"])), labels["test"], 5_000)
    rows = {
        "lm_train": ("unsup.parquet", unsup[:8_000]),
        "lm_valid": ("unsup.parquet", unsup[8_000:]),
        "train_1k": ("train.parquet", train_1k),
        "train_10k": ("train.parquet", train_10k),
        "clas_valid": ("train.parquet", clas_valid),
        "test_5k": ("test.parquet", test_5k),
    }
    return {
        "description": f"Row indices into imdb/*.parquet for the small CPU protocol, drawn with seed {seed} by "
        "tl_nlp.reference_data.",
        **{key: {"file": file, "rows": indices} for key, (file, indices) in rows.items()},
    }


def _write_text(path: Path, text: str) -> None:
    # Written under another name first: an interrupted run never leaves a complete-looking file behind.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tl_nlp.reference_data",
        description="Fetch WikiText-2, IMDb, SST-2, RTE, STS-B, COPA, SST-5 and GoEmotions from the Hugging Face Hub "
        "into the folder layout that the tl_nlp demo, notebook, examples and tests read (--data_dir / TL_NLP_DATA_DIR).",
    )
    parser.add_argument("directory", help="Where to write them, e.g. .cache/data.")
    parser.add_argument("--only", nargs="+", choices=sorted(HUB_DATASETS), default=list(HUB_DATASETS))
    arguments = parser.parse_args(argv)
    print(f"reference data ready in {prepare_reference_data(arguments.directory, tuple(arguments.only))}")


if __name__ == "__main__":
    main()
