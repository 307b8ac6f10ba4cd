"""Turning a task's rows into token ids for each model family, the way each family was fine-tuned on them.

- **Encoders** (BERT, RoBERTa, ELECTRA...): their own pair encoding (`[CLS] a [SEP] b [SEP]`, token types) and, for
  multiple choice, one `(context, choice)` pair per choice for transformers' `*ForMultipleChoice` classes.
- **Decoders** (GPT-2, Llama, Qwen2...): GPT's input transformations (Radford et al. 2018, section 3.3). A start,
  a delimiter and an extract token are added to the tokenizer (the model's embeddings are resized to match), and the
  tokenizer's post-processor writes `<start> a <delimiter> b <extract>`, so that every later call of the tokenizer
  (training, `pipeline()`, `predict`) builds the same input. The classifier reads the last token, the extract token.
  A similarity pair is encoded in both orders; a multiple-choice row gives one sequence per choice.
- **AWD-LSTM**: its tokenizer already writes `xxbos a xxfld b` (fastai's start and field-separator tokens, which the
  language model knows); the classifier's concat pooling reads the whole sequence, so no extract token is added.
  Pairs in both orders and one sequence per choice as for decoders.

Rows that hold several sequences (choices, both orders) are stored as a list of sequences per row and padded by
[`TaskDataCollator`] into `(batch, sequences, length)` tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from tokenizers import processors
from transformers import PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES,
)

from ..tasks import TaskSpec, check_task_rows
from .classification_data import TextDataError, encode_labels

FAMILIES = ("encoder", "decoder", "awd_lstm")
# GPT's added tokens (its paper names them start, delimiter and extract); a tokenizer's own BOS serves as start.
START_TOKEN, DELIMITER_TOKEN, EXTRACT_TOKEN = "<|start|>", "<|delimiter|>", "<|extract|>"


def task_family(config) -> str:
    """`"awd_lstm"`, `"encoder"` (transformers has a `*ForMultipleChoice` for it: bidirectional, pair encodings)
    or `"decoder"` (a causal LM read left to right), from a model's config."""
    model_type = getattr(config, "model_type", None)
    if model_type == "awd_lstm":
        return "awd_lstm"
    if model_type in MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise ValueError(
        f"model type {model_type!r} is neither an encoder with a multiple-choice head in transformers nor a causal "
        "LM nor AWD-LSTM: no task encoding is known for it"
    )


def add_task_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """Adds GPT's delimiter and extract tokens (and a start token when the tokenizer has no BOS) to a decoder's fast
    tokenizer and makes its post-processor write `start a extract` and `start a delimiter b extract`. Idempotent.
    Resize the model's embeddings to `len(tokenizer)` afterwards (new rows start at the mean embedding, transformers'
    `resize_token_embeddings` default).

    Returns:
        `{"start": ..., "delimiter": ..., "extract": ...}`: the tokens used.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"GPT-style task inputs need a fast tokenizer; {type(tokenizer).__name__} is not one")
    start = tokenizer.bos_token or START_TOKEN
    new = [token for token in (start, DELIMITER_TOKEN, EXTRACT_TOKEN) if token not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (start, DELIMITER_TOKEN, EXTRACT_TOKEN)}
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {EXTRACT_TOKEN}",
        pair=f"{start} $A {DELIMITER_TOKEN} $B {EXTRACT_TOKEN}",
        special_tokens=list(ids.items()),
    )
    return {"start": start, "delimiter": DELIMITER_TOKEN, "extract": EXTRACT_TOKEN}


def sequences_per_row(spec: TaskSpec, family: str) -> int:
    """How many token sequences one row becomes: 1, 2 (a pair in both orders) or the number of choices."""
    if spec.task == "multiple_choice":
        return len(spec.choice_columns)
    if spec.symmetric_pair and family != "encoder":
        return 2
    return 1


def label_names_of(dataset: datasets.Dataset, column: str) -> list[str] | None:
    """The class names a dataset declares for a label column (a `ClassLabel`, or a list of them), else None."""
    feature = dataset.features.get(column)
    inner = getattr(feature, "feature", None)
    if inner is not None and isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return None


def encode_task_labels(
    dataset: datasets.Dataset, spec: TaskSpec, label_names: Sequence[str] | None = None, source: str = "dataset"
) -> tuple[datasets.Dataset, dict[int, str] | None, dict[str, int] | None]:
    """The task's targets in a `labels` column: class ids, floats (regression), multi-hot floats (multi-label) or
    the choice index; returns `(dataset, id2label, label2id)` (None for regression and multiple choice)."""
    if spec.task in ("single_text", "text_pair"):
        return encode_labels(dataset, spec.label_column, label_names, source)
    if spec.task == "multi_label":
        names = list(label_names) if label_names is not None else label_names_of(dataset, spec.label_column)
        if names is None:
            names = sorted({str(label) for labels in dataset[spec.label_column] for label in labels})
            if all(isinstance(label, int) for labels in dataset[spec.label_column] for label in labels):
                names = [str(index) for index in range(1 + max(int(n) for n in names))]
        label2id = {name: index for index, name in enumerate(names)}

        def multi_hot(row_labels: list) -> list[float]:
            hot = [0.0] * len(names)
            for label in row_labels:
                hot[label2id[label] if isinstance(label, str) else int(label)] = 1.0
            return hot

        values = [multi_hot(labels) for labels in dataset[spec.label_column]]
        dataset = dataset.remove_columns(spec.label_column).add_column("labels", values)
        return dataset, dict(enumerate(names)), label2id
    # regression: a float per row; multiple choice: the index of the right choice.
    convert = float if spec.task == "regression" else int
    values = [convert(label) for label in dataset[spec.label_column]]
    dataset = dataset.remove_columns(spec.label_column).add_column("labels", values)
    return dataset, None, None


def task_tokenizer(tokenizer, family: str, max_length: int | None):
    """AWD-LSTM reads whole documents (BPT3C); transformers are cut at `max_length` tokens, pairs longest first."""
    if family == "awd_lstm" or max_length is None:
        return tokenizer
    return functools.partial(tokenizer, truncation=True, max_length=max_length)


def encode_task_rows(rows: dict[str, list], spec: TaskSpec, tokenizer, family: str) -> dict[str, list]:
    """Token ids of a batch of rows (columns -> values): one sequence per row, or a list of them (see module)."""
    texts = rows[spec.text_column]
    if spec.task == "multiple_choice":
        choices = [rows[column] for column in spec.choice_columns]
        per_choice = [tokenizer(texts, choice) for choice in choices]
        return _stack_rows(per_choice)
    pairs = rows[spec.text_pair_column] if spec.is_pair else None
    if spec.symmetric_pair and family != "encoder":
        return _stack_rows([tokenizer(texts, pairs), tokenizer(pairs, texts)])
    return dict(tokenizer(texts, pairs) if pairs is not None else tokenizer(texts))


def _stack_rows(encodings: list) -> dict[str, list]:
    """Per-sequence encodings of a batch -> one list of sequences per row, for every key."""
    return {
        key: [[encoding[key][row] for encoding in encodings] for row in range(len(encodings[0][key]))]
        for key in encodings[0].keys()
    }


def encode_task_dataset(
    dataset: datasets.Dataset,
    spec: TaskSpec,
    tokenizer,
    family: str,
    label_names: Sequence[str] | None = None,
    max_length: int | None = 512,
    source: str = "dataset",
    with_labels: bool = True,
    batch_size: int = 1000,
) -> tuple[datasets.Dataset, dict[int, str] | None, dict[str, int] | None]:
    """Checks a task's rows ([`check_task_rows`]) and tokenizes them for the model family.

    Args:
        dataset: the rows.
        spec: the task and its columns.
        tokenizer: the model's tokenizer (for a decoder, after [`add_task_tokens`]).
        family: `"encoder"`, `"decoder"` or `"awd_lstm"` ([`task_family`]).
        label_names: class names in id order (classes, multi-label); integer labels index them.
        max_length: longest sequence for transformers (AWD-LSTM reads everything).
        source: the file or split, for error messages.
        with_labels: False for unlabelled rows (prediction).

    Returns:
        `(dataset, id2label, label2id)`. The dataset has `input_ids`, `attention_mask` (and `token_type_ids` for
        encoders that use them), `length` (tokens of the longest sequence of the row, for length-sorted batches)
        and `labels`.
    """
    if with_labels:
        check_task_rows(dataset, spec, source, label_names)
        dataset, id2label, label2id = encode_task_labels(dataset, spec, label_names, source)
    else:
        check_task_rows(dataset, spec, source, with_labels=False)
        id2label = label2id = None
    encode = task_tokenizer(tokenizer, family, max_length)

    def tokenize(rows):
        encoded = encode_task_rows(rows, spec, encode, family)
        nested = isinstance(encoded["input_ids"][0][0], list)
        encoded["length"] = [max(len(ids) for ids in row) if nested else len(row) for row in encoded["input_ids"]]
        return encoded

    keep = ["labels"] if with_labels else []
    dataset = dataset.map(
        tokenize,
        batched=True,
        batch_size=batch_size,
        remove_columns=[column for column in dataset.column_names if column not in keep],
        desc="Tokenizing",
    )
    return dataset, id2label, label2id


@dataclass
class TaskDataCollator:
    """Pads a batch of task rows: `(batch, length)` tensors for one sequence per row, `(batch, sequences, length)`
    for rows of several sequences (choices, both orders of a pair: every sequence padded to the batch's longest);
    `labels` become long (class ids, choice indices) or float (regression scores, multi-hot rows) tensors.

    Args:
        tokenizer: the model's tokenizer (its pad token and padding side).
    """

    tokenizer: PreTrainedTokenizerBase

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [feature["labels"] for feature in features] if "labels" in features[0] else None
        inputs = [{k: v for k, v in feature.items() if k not in ("labels", "length")} for feature in features]
        nested = isinstance(inputs[0]["input_ids"][0], list)
        if nested:
            count = len(inputs[0]["input_ids"])
            flat = [{key: values[index] for key, values in row.items()} for row in inputs for index in range(count)]
            batch = self.tokenizer.pad(flat, return_tensors="pt")
            batch = {key: value.view(len(features), count, -1) for key, value in batch.items()}
        else:
            batch = dict(self.tokenizer.pad(inputs, return_tensors="pt"))
        if labels is not None:
            is_float = isinstance(labels[0], float | list) or np.asarray(labels).dtype.kind == "f"
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if is_float else torch.long)
        return batch


def check_label_count(spec: TaskSpec, id2label: dict[int, str] | None, source: str) -> None:
    """A classification task needs 2 or more classes."""
    if spec.task in ("single_text", "text_pair", "multi_label") and (id2label is None or len(id2label) < 2):
        raise TextDataError(f"{source}: task {spec.task!r} needs at least 2 classes, found {len(id2label or {})}")
