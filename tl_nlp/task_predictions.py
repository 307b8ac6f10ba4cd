"""Predicting and scoring with a trained task model folder, for every task: what `tl-nlp predict` and `tl-nlp
evaluate` run, usable from a notebook as well.

```python
>>> predictor = TaskPredictor.from_pretrained("runs/copa")  # doctest: +SKIP
>>> predictor.predict([{"premise": "The man broke his toe. What was the cause of this?",
...                     "choice1": "He dropped a hammer on his foot.", "choice2": "He got a hole in his sock."}])
[{'label': 0, 'choice': 'He dropped a hammer on his foot.', 'score': 0.71, 'scores': [0.71, 0.29]}]  # doctest: +SKIP
>>> predictor.evaluate(validation_rows, confusion_matrix_png="runs/copa/confusion_matrix.png")  # doctest: +SKIP
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoTokenizer

from .data.classification_data import TextDataError
from .data.task_encoding import TaskDataCollator, encode_task_dataset, task_family
from .metrics import (
    choose_threshold,
    classification_report,
    confusion_matrix,
    multi_label_metrics,
    regression_metrics,
    save_confusion_matrix_png,
)
from .models.context import context_length
from .models.task_models import load_task_model
from .tasks import TaskSpec

# The generic names a JSON-lines row may use instead of the columns the model was trained on.
GENERIC_FIELDS = ("text", "text_pair", "choices")


class TaskPredictor:
    """A trained task model with its tokenizer and task: batched outputs, answers and the task's metrics.

    Args:
        model: the task model (`load_task_model`).
        tokenizer: its tokenizer.
        spec: its task; a folder without one is read as `single_text` on a `text` column.
        batch_size: rows per forward pass.
    """

    def __init__(self, model, tokenizer, spec: TaskSpec | None, batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec if spec is not None else TaskSpec("single_text")
        self.family = task_family(model.config)
        self.batch_size = batch_size
        self.id2label = {int(index): name for index, name in (model.config.id2label or {}).items()}

    @classmethod
    def from_pretrained(
        cls, folder: str, batch_size: int = 32, device: str | None = None, trust_remote_code: bool = False
    ) -> TaskPredictor:
        model, spec = load_task_model(folder, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, spec, batch_size)

    @property
    def label_names(self) -> list[str] | None:
        if self.spec.task in ("regression", "multiple_choice"):
            return None
        return [self.id2label[index] for index in range(len(self.id2label))]

    def rows(self, rows: Sequence[dict[str, Any]] | datasets.Dataset, source: str = "input") -> datasets.Dataset:
        """Rows as a dataset with the model's column names; generic names (`text`, `text_pair`, `choices`: a list)
        are accepted too. A row without a field the task needs gets one line naming the row and the field."""
        if isinstance(rows, datasets.Dataset):
            return rows
        spec, converted = self.spec, []
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise TextDataError(f"{source}: row {index} is a {type(row).__name__}, not a JSON object")
            values = dict(row)
            if spec.text_column not in values and "text" in values:
                values[spec.text_column] = values["text"]
            if spec.is_pair and spec.text_pair_column not in values and "text_pair" in values:
                values[spec.text_pair_column] = values["text_pair"]
            if spec.task == "multiple_choice" and "choices" in values and isinstance(values["choices"], list):
                for column, choice in zip(spec.choice_columns, values["choices"], strict=False):
                    values.setdefault(column, choice)
            for column in spec.input_columns:
                if column not in values:
                    raise TextDataError(
                        f"{source}: row {index} has no field {column!r}, which task {spec.task!r} needs "
                        f"({spec.describe()}); the row's fields are {sorted(row)}"
                    )
            converted.append(
                {column: values[column] for column in spec.input_columns + [spec.label_column] if column in values}
            )
        return datasets.Dataset.from_list(converted)

    @torch.no_grad()
    def logits(self, dataset: datasets.Dataset) -> np.ndarray:
        """The model's outputs for encoded rows (`encode_task_dataset`), in row order."""
        collate = TaskDataCollator(self.tokenizer)
        device = next(self.model.parameters()).device
        outputs = []
        columns = [column for column in dataset.column_names if column not in ("labels", "length")]
        for start in range(0, len(dataset), self.batch_size):
            batch = collate(
                [
                    {key: row[key] for key in columns}
                    for row in dataset.select(range(start, min(start + self.batch_size, len(dataset))))
                ]
            )
            batch = {key: value.to(device) for key, value in batch.items()}
            outputs.append(self.model(**batch).logits.float().cpu().numpy())
        return np.concatenate(outputs)

    def predict(self, rows: Sequence[dict[str, Any]] | datasets.Dataset, source: str = "input") -> list[dict]:
        """One answer per row: `{"label", "score", "scores"}` (classes), `{"score"}` (regression), `{"labels",
        "scores"}` (multi-label: every label at or above the saved threshold), `{"label": index, "choice", "score",
        "scores"}` (multiple choice)."""
        dataset = self.rows(rows, source)
        encoded, _, _ = encode_task_dataset(
            dataset,
            self.spec,
            self.tokenizer,
            self.family,
            max_length=self._max_length(),
            source=source,
            with_labels=False,
        )
        logits = self.logits(encoded)
        task = self.spec.task
        if task == "regression":
            return [{"score": float(value)} for value in logits.reshape(-1)]
        if task == "multi_label":
            threshold = self.spec.threshold if self.spec.threshold is not None else 0.5
            probabilities = 1 / (1 + np.exp(-logits))
            return [
                {
                    "labels": [self.id2label[i] for i in np.argsort(-row, kind="stable") if row[i] >= threshold],
                    "scores": {self.id2label[i]: float(value) for i, value in enumerate(row)},
                }
                for row in probabilities
            ]
        probabilities = torch.from_numpy(logits).softmax(-1).numpy()
        answers = []
        for index, row in enumerate(probabilities):
            best = int(row.argmax())
            if task == "multiple_choice":
                choice = dataset[index][self.spec.choice_columns[best]]
                answers.append({"label": best, "choice": choice, "score": float(row[best]), "scores": row.tolist()})
            else:
                scores = {self.id2label[i]: float(value) for i, value in enumerate(row)}
                answers.append({"label": self.id2label[best], "score": float(row[best]), "scores": scores})
        return answers

    def _max_length(self) -> int | None:
        """What the model was trained on: the tokenizer's saved `model_max_length`, capped by the context."""
        config = self.model.config
        context = context_length(config)
        saved = self.tokenizer.model_max_length if self.tokenizer.model_max_length < 1_000_000 else None
        lengths = [length for length in (context, saved) if length]
        return min(lengths) if lengths else None

    def encode_labelled(self, dataset: datasets.Dataset, source: str) -> datasets.Dataset:
        encoded, _, _ = encode_task_dataset(
            dataset, self.spec, self.tokenizer, self.family, self.label_names, self._max_length(), source
        )
        return encoded

    def choose_threshold(self, dataset: datasets.Dataset, source: str = "validation") -> float:
        """Multi-label: the threshold that maximises macro-F1 on these labelled rows, stored in the model's task
        (saved with the model by `save_pretrained`)."""
        if self.spec.task != "multi_label":
            raise ValueError(f"a decision threshold is for multi-label models; this one is {self.spec.task!r}")
        encoded = self.encode_labelled(dataset, source)
        probabilities = 1 / (1 + np.exp(-self.logits(encoded)))
        self.spec.threshold = choose_threshold(probabilities, np.asarray(encoded["labels"]))
        self.model.config.tl_nlp_task = self.spec.to_dict()
        return self.spec.threshold

    def evaluate(
        self,
        dataset: datasets.Dataset,
        source: str = "evaluation data",
        confusion_matrix_png: str | Path | None = None,
    ) -> dict[str, float]:
        """The task's metrics on labelled rows, prefixed `eval_` (see `tl_nlp.metrics`); for classes (and multiple
        choice) the confusion matrix is also written as a PNG when `confusion_matrix_png` is given."""
        encoded = self.encode_labelled(dataset, source)
        logits = self.logits(encoded)
        labels = np.asarray(encoded["labels"])
        task = self.spec.task
        if task == "regression":
            metrics = regression_metrics(logits.reshape(-1), labels)
        elif task == "multi_label":
            threshold = self.spec.threshold if self.spec.threshold is not None else 0.5
            metrics = multi_label_metrics(1 / (1 + np.exp(-logits)), labels, threshold, self.label_names)
        else:
            names = self.label_names or [f"choice {index}" for index in range(logits.shape[1])]
            predicted = logits.argmax(-1)
            metrics = classification_report(predicted, labels, len(names), names)
            if confusion_matrix_png is not None:
                matrix = confusion_matrix(predicted, labels, len(names))
                save_confusion_matrix_png(matrix, str(confusion_matrix_png), names, title=f"{source}: {task}")
        return {"eval_" + key: value for key, value in metrics.items()} | {"eval_samples": len(labels)}
