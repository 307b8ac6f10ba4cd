"""Loading, checking and tokenizing text datasets, and length-aware batch orders for classification.

- [`load_text_dataset`] takes a local file (`.parquet`, `.csv`, `.tsv`, `.txt`, `.json[l]`) or a Hub dataset name and
  returns a `datasets.Dataset`; a text file with bytes that are not UTF-8 gets an error with the line number.
- [`check_texts`] / [`encode_labels`] reject empty, missing or non-string texts and labels outside the declared set,
  naming the row and the column.
- [`tokenize_dataset`] (classification) and [`tokenize_for_language_model`] run the tokenizer batched.
- [`SortishSampler`] orders training examples so that batches hold texts of similar lengths (little padding, which
  BPT3C then skips chunk by chunk) in random order, the longest batch first; [`SortedSampler`] sorts evaluation
  examples by length.
"""

import logging
import os
from collections.abc import Iterator, Sequence

import datasets
import numpy as np
from torch.utils.data import Sampler

from .local_files import load_local_file

logger = logging.getLogger(__name__)

_FILE_BUILDERS = {
    ".parquet": ("parquet", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".txt": ("text", {}),
    ".tokens": ("text", {}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
}


class TextDataError(ValueError):
    """Bad input data: the message names the file or dataset, the row and the column."""


def load_text_dataset(path_or_name: str, split: str = "train", **kwargs) -> datasets.Dataset:
    """Loads a local text file or a Hub dataset as a `datasets.Dataset`.

    Args:
        path_or_name: a local file (`.parquet`, `.csv`, `.tsv`, `.txt`/`.tokens` one text per line, `.json`,
            `.jsonl`) or a Hub dataset name such as `"stanfordnlp/imdb"` (then `split` and `kwargs` go to
            `datasets.load_dataset`).
        split: split to return for a Hub dataset.
        kwargs: further arguments for `datasets.load_dataset` (a config name as `name=`, ...).

    Example:

    ```python
    >>> train = load_text_dataset("../shared/data/imdb/train.parquet")  # doctest: +SKIP
    >>> train = load_text_dataset("stanfordnlp/imdb", split="train")  # doctest: +SKIP
    ```
    """
    if os.path.isfile(path_or_name):
        extension = os.path.splitext(path_or_name)[1].lower()
        if extension not in _FILE_BUILDERS:
            raise TextDataError(
                f"{path_or_name}: unsupported file type {extension!r}; use one of {sorted(_FILE_BUILDERS)}."
            )
        builder, builder_kwargs = _FILE_BUILDERS[extension]
        if builder in ("csv", "text", "json"):
            check_utf8_file(path_or_name)
        return load_local_file(path_or_name, builder, builder_kwargs, TextDataError, **kwargs)
    if os.path.exists(path_or_name) or path_or_name.endswith(tuple(_FILE_BUILDERS)):
        raise TextDataError(f"{path_or_name}: no such file (or it is a folder); pass a file or a Hub dataset name.")
    return datasets.load_dataset(path_or_name, split=split, **kwargs)


def check_utf8_file(path: str, chunk_size: int = 1 << 24) -> None:
    """Raises a [`TextDataError`] with the line and column of the first byte sequence that is not UTF-8."""
    line, offset, carry = 1, 0, b""
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            data = carry + chunk
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as error:
                # A character cut by the chunk boundary is completed by the next chunk.
                if error.reason == "unexpected end of data" and len(data) - error.start < 4:
                    carry = data[error.start :]
                    data = data[: error.start]
                else:
                    before = data[: error.start]
                    bad_line = line + before.count(b"\n")
                    column = error.start - (before.rfind(b"\n") + 1) + 1
                    raise TextDataError(
                        f"{path}: line {bad_line}, byte column {column} (byte offset {offset + error.start}): "
                        f"bytes {data[error.start : error.end]!r} are not valid UTF-8 ({error.reason}). Re-encode the "
                        "file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
                    ) from None
            line += data.count(b"\n")
            offset += len(data)
    if carry:
        raise TextDataError(f"{path}: the file ends in the middle of a UTF-8 character (byte offset {offset}).")


def check_texts(texts: Sequence, column: str = "text", source: str = "dataset", first_row: int = 0) -> None:
    """Raises a [`TextDataError`] naming the first row whose text is missing, not a string, or empty/whitespace.

    Args:
        texts: the column's values.
        column: the column's name, for the message.
        source: what the texts come from (a file name, `"train"`), for the message.
        first_row: row number of `texts[0]` in the whole dataset (for batched checks).
    """
    for index, text in enumerate(texts):
        if text is None:
            problem = "is missing (None)"
        elif not isinstance(text, str):
            problem = f"is a {type(text).__name__} ({text!r:.40}), not a string"
        elif not text.strip():
            problem = "is empty or whitespace only" if text else "is empty"
        else:
            continue
        raise TextDataError(
            f"{source}: row {first_row + index}, column {column!r} {problem}. Fix or drop that row "
            "(`dataset.filter(lambda row: isinstance(row[column], str) and row[column].strip())`)."
        )


def _require_column(dataset: datasets.Dataset, column: str, role: str, source: str) -> None:
    if column not in dataset.column_names:
        raise TextDataError(
            f"{source}: no {role} column {column!r}; the columns are {dataset.column_names}. "
            f"Pass {role}_column= to name the right one."
        )


def encode_labels(
    dataset: datasets.Dataset,
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    source: str = "dataset",
) -> tuple[datasets.Dataset, dict[int, str], dict[str, int]]:
    """Turns integer or string labels into ids `0..num_labels-1` and returns `(dataset, id2label, label2id)`.

    String labels: ids follow `label_names` if given, else the sorted set of labels seen. Integer labels: kept, and
    must lie in `[0, len(label_names))` (or `[0, max + 1)` without `label_names`). A label outside the declared set,
    or a missing one, raises a [`TextDataError`] naming the row. Pass `id2label`/`label2id` to the model config so
    that they are saved with the model.
    """
    _require_column(dataset, label_column, "label", source)
    if isinstance(label_names, str):
        # list("negative") would silently give the classes n, e, g, a, t, i, v, e.
        raise TextDataError(
            f"class names must be a list such as [negative, positive], got the single string {label_names!r}."
        )
    if label_names is not None and len(set(label_names)) != len(label_names):
        raise TextDataError(f"class names {list(label_names)} repeat a name; each class needs its own.")
    labels = dataset[label_column]
    labels = labels.to_pylist() if hasattr(labels, "to_pylist") else list(labels)
    for row, label in enumerate(labels):
        if label is None or isinstance(label, (bool, float)) or not isinstance(label, (int, np.integer, str)):
            raise TextDataError(
                f"{source}: row {row}, column {label_column!r}: label {label!r} is not an int or a str."
            )
    kinds = {type(label) for label in labels}
    if len(kinds) > 1:
        raise TextDataError(
            f"{source}: column {label_column!r} mixes label types {sorted(k.__name__ for k in kinds)}."
        )
    if labels and isinstance(labels[0], str):
        names = list(label_names) if label_names is not None else sorted(set(labels))
        label2id = {name: index for index, name in enumerate(names)}
        ids = []
        for row, label in enumerate(labels):
            if label not in label2id:
                raise TextDataError(
                    f"{source}: row {row}, column {label_column!r}: label {label!r} is not one of {names}."
                )
            ids.append(label2id[label])
    else:
        num_labels = len(label_names) if label_names is not None else (max(labels) + 1 if labels else 0)
        names = list(label_names) if label_names is not None else [str(index) for index in range(num_labels)]
        for row, label in enumerate(labels):
            if not 0 <= label < num_labels:
                raise TextDataError(
                    f"{source}: row {row}, column {label_column!r}: label {label} is outside [0, {num_labels}) "
                    f"(labels {names}); unlabeled rows (e.g. IMDb's -1) belong in language-model data."
                )
        ids = [int(label) for label in labels]
        label2id = {name: index for index, name in enumerate(names)}
    if len(names) < 2:
        # One class would make transformers build a regression model (num_labels=1) whose predictions are scores.
        raise TextDataError(
            f"{source}: column {label_column!r} holds a single class ({names}); a classifier needs at least two: add "
            "rows of the other classes, or declare all the class names (class_names: [negative, positive])."
        )
    id2label = {index: name for name, index in label2id.items()}
    dataset = dataset.remove_columns(label_column).add_column("labels", ids)
    return dataset, id2label, label2id


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer,
    text_column: str = "text",
    label_column: str | None = "label",
    label_names: Sequence[str] | None = None,
    source: str = "dataset",
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, dict[int, str] | None, dict[str, int] | None]:
    """Checks and tokenizes a classification dataset (no truncation: BPT3C reads documents of any length).

    Returns `(dataset, id2label, label2id)`; the dataset has `input_ids`, `attention_mask`, `length` (for the
    samplers) and `labels` (when `label_column` is given), ready for `DataCollatorWithPadding(tokenizer)`.
    """
    _require_column(dataset, text_column, "text", source)
    id2label = label2id = None
    if label_column is not None:
        dataset, id2label, label2id = encode_labels(dataset, label_column, label_names, source)
    keep = ["labels"] if label_column is not None else []

    def tokenize(batch, indices):
        check_texts(batch[text_column], text_column, source, first_row=indices[0])
        encoded = tokenizer(batch[text_column])
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    dataset = dataset.map(
        tokenize,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=[column for column in dataset.column_names if column not in keep],
        desc="Tokenizing",
    )
    return dataset, id2label, label2id


def tokenize_for_language_model(
    dataset: datasets.Dataset,
    tokenizer,
    text_column: str = "text",
    source: str = "dataset",
    skip_empty: bool = False,
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """Checks and tokenizes a corpus for language modelling: one `input_ids` row per document, each with `xxbos`.

    Args:
        skip_empty: drop rows whose text is empty or whitespace only (WikiText has one blank line per paragraph),
            logging how many were dropped; otherwise such a row raises a [`TextDataError`]. Missing (None) and
            non-string texts always raise.
    """
    _require_column(dataset, text_column, "text", source)
    if skip_empty:
        before = len(dataset)
        dataset = dataset.filter(
            lambda texts: [not isinstance(text, str) or bool(text.strip()) for text in texts],
            input_columns=text_column,
            batched=True,
            batch_size=batch_size,
        )
        logger.warning("%s: skipped %d empty or whitespace-only texts of %d.", source, before - len(dataset), before)

    def tokenize(batch, indices):
        check_texts(batch[text_column], text_column, source, first_row=indices[0])
        return {"input_ids": tokenizer(batch[text_column])["input_ids"]}

    return dataset.map(
        tokenize,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        desc="Tokenizing",
    )


def sortish_batches(
    lengths: Sequence[int], batch_size: int, generator: np.random.Generator, chunk_batches: int = 50
) -> list[np.ndarray]:
    """fastai's sortish order: random chunks of `chunk_batches * batch_size` examples, each sorted by decreasing
    length and cut into batches; the batches are shuffled, then the one holding the longest example goes first
    (an out-of-memory error shows up at the first step, not hours later)."""
    lengths = np.asarray(lengths)
    order = generator.permutation(len(lengths))
    chunk = chunk_batches * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        indices = order[start : start + chunk]
        indices = indices[np.argsort(-lengths[indices], kind="stable")]
        batches.extend(indices[i : i + batch_size] for i in range(0, len(indices), batch_size))
    batches = [batches[index] for index in generator.permutation(len(batches))]
    longest = max(range(len(batches)), key=lambda index: lengths[batches[index]].max())
    batches.insert(0, batches.pop(longest))
    return batches


class SortishSampler(Sampler[int]):
    """Training order for a dataloader with `batch_size`: consecutive runs of `batch_size` indices are the sortish
    batches of [`sortish_batches`]. The order depends only on `seed` and the epoch (`set_epoch`), so every DDP
    process computes the same one. Accelerate deals the per-device batches out to the processes in turn, so under
    DDP give it the global batch size (`ClassificationTrainer` does): each process then gets a consecutive slice
    of every sortish batch, and a step sees the examples one process with that batch size would see.

    Args:
        lengths: length of each example (the `length` column of [`tokenize_dataset`]).
        batch_size: per-device batch size.
        seed: seed of the shuffles.
        chunk_batches: batches per sorted chunk (fastai: 50).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 42, chunk_batches: int = 50):
        if len(lengths) < batch_size:
            raise TextDataError(
                f"SortishSampler: the training set has {len(lengths)} examples, fewer than one batch of {batch_size}; "
                "lower the batch size or add data."
            )
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.chunk_batches = chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = np.random.default_rng([self.seed, self.epoch])
        # Without set_epoch (a plain DataLoader) the next pass still gets a new order.
        self.epoch += 1
        batches = sortish_batches(self.lengths, self.batch_size, generator, self.chunk_batches)
        # A short batch in the middle would shift every later batch boundary: put it last.
        short = [batch for batch in batches if len(batch) < self.batch_size]
        full = [batch for batch in batches if len(batch) == self.batch_size]
        return iter(int(index) for batch in full + short for index in batch)


class SortedSampler(Sampler[int]):
    """Evaluation order: examples by decreasing length, so that each batch holds texts of similar length."""

    def __init__(self, lengths: Sequence[int]):
        self.order = np.argsort(-np.asarray(lengths), kind="stable")

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded batch tensors that is padding, for batches of example indices."""
    lengths = np.asarray(lengths)
    padded = sum(len(batch) * int(lengths[batch].max()) for batch in batches)
    real = sum(int(lengths[batch].sum()) for batch in batches)
    return 1.0 - real / padded
