"""Where a recipe stage reads its texts: a local file or a Hub dataset, a column, optionally fixed rows or a cap."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ..data import TextDataError, load_text_dataset


class RecipeError(ValueError):
    """Something the user asked of a recipe stage that cannot work (a path, a model, a column, a label)."""


@dataclass
class TextData:
    """A text dataset for one recipe stage.

    Args:
        source: a local file (`.txt` one text per line, `.csv`, `.tsv`, `.json`, `.jsonl`, `.parquet`) or a Hub
            dataset name such as `"stanfordnlp/imdb"`.
        split: the split of a Hub dataset.
        config_name: the configuration of a Hub dataset (`"wikitext-2-v1"`).
        text_column: the column holding the texts.
        label_column: the column holding the labels (classification only).
        rows: `"FILE:KEY"`: keep only the row indices listed under `KEY` in the JSON file `FILE` (as
            `{"KEY": {"rows": [...]}}` or `{"KEY": [...]}`, e.g. `../shared/data/imdb/small_protocol.json:train_1k`).
        max_examples: keep at most this many rows, drawn at random with `seed` (IMDb files are sorted by label, so
            the first rows would all be negative).
        seed: the seed of that draw.

    Example:

    ```python
    >>> reviews = TextData("../shared/data/imdb/train.parquet", max_examples=500)
    >>> wiki = TextData("Salesforce/wikitext", split="train", config_name="wikitext-2-v1")
    ```
    """

    source: str = field(metadata={"help": "Local file (txt/csv/tsv/json/jsonl/parquet) or Hub dataset name."})
    split: str = field(default="train", metadata={"help": "Split of a Hub dataset."})
    config_name: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels (classification)."})
    rows: str | None = field(default=None, metadata={"help": "FILE:KEY, a JSON list of row indices to keep."})
    max_examples: int | None = field(default=None, metadata={"help": "Keep at most this many rows (random, >= 1)."})
    seed: int = field(default=42, metadata={"help": "Seed of the max_examples draw."})

    def __post_init__(self):
        if not self.source:
            raise ValueError("source must name a file or a Hub dataset, got an empty string")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 (or None for all rows), got {self.max_examples}")
        if self.rows is not None and ":" not in self.rows:
            raise ValueError(f"rows must look like FILE:KEY (e.g. small_protocol.json:train_1k), got {self.rows!r}")

    def load(self) -> datasets.Dataset:
        """Reads the rows (see the class documentation); errors name the file, row, column or key."""
        kwargs = {"name": self.config_name} if self.config_name else {}
        try:
            dataset = load_text_dataset(self.source, split=self.split, **kwargs)
        except TextDataError:
            raise
        except (FileNotFoundError, ValueError, ConnectionError) as error:
            raise RecipeError(
                f"cannot read {self.source!r} (split {self.split!r}): not a local file, and loading it as a Hub "
                f"dataset failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
            ) from error
        if self.text_column not in dataset.column_names:
            raise RecipeError(
                f"{self.source}: no text column {self.text_column!r}; the columns are {dataset.column_names}. "
                "Set text_column to one of them."
            )
        if self.rows is not None:
            dataset = dataset.select(self._row_indices(len(dataset)))
        if self.max_examples is not None and self.max_examples < len(dataset):
            dataset = dataset.shuffle(seed=self.seed).select(range(self.max_examples))
        return dataset

    def description(self) -> str:
        """The data's name for a training record and model card: the Hub id, or `"local
        file FOLDER/NAME"` for a file (its last two path parts: no private path goes into a card)."""
        if Path(self.source).exists():
            return f"local file {Path(*Path(self.source).absolute().parts[-2:])}"
        return self.source

    def _row_indices(self, num_rows: int) -> list[int]:
        file_name, _, key = self.rows.rpartition(":")
        path = Path(file_name)
        if not path.is_file():
            raise RecipeError(f"rows file {path} does not exist (rows={self.rows!r})")
        values = json.loads(path.read_text(encoding="utf-8"))
        if key not in values:
            raise RecipeError(f"{path}: no key {key!r}; the keys are {sorted(values)}")
        indices = values[key]["rows"] if isinstance(values[key], dict) else values[key]
        bad = [index for index in indices if not 0 <= index < num_rows]
        if bad:
            raise RecipeError(f"{path}, key {key!r}: row {bad[0]} is outside {self.source} ({num_rows} rows)")
        return indices


DataLike = TextData | datasets.Dataset | str


def as_dataset(data: TextData | datasets.Dataset | str | None) -> datasets.Dataset | None:
    """A `datasets.Dataset` from a [`TextData`], a file or Hub name, or a dataset (returned as it is)."""
    if data is None or isinstance(data, datasets.Dataset):
        return data
    if isinstance(data, str):
        data = TextData(data)
    return data.load()


def data_description(data: TextData | datasets.Dataset | str | None) -> str | None:
    """The name of `data` for the training record (see [`TextData.description`]); None for an in-memory dataset,
    whose own name (from `load_dataset`) the Trainer finds."""
    if isinstance(data, str):
        data = TextData(data)
    return data.description() if isinstance(data, TextData) else None


def source_name(data: TextData | datasets.Dataset | str | None) -> str:
    """What error messages call `data`: its file or Hub name as the user gave it (`"dataset"` for one in memory)."""
    return data.source if isinstance(data, TextData) else data if isinstance(data, str) else "dataset"


def columns_of(data: TextData | datasets.Dataset | str | None) -> tuple[str, str]:
    """The text and label column names of `data` (the defaults `"text"`, `"label"` for a dataset or a name)."""
    if isinstance(data, TextData):
        return data.text_column, data.label_column
    return "text", "label"
