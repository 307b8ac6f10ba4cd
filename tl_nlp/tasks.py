"""What a labelled dataset asks of a model: one name per task, the columns it reads, and inference from the data.

| task | input | target | head |
|---|---|---|---|
| `"single_text"` | one text | one class | softmax over classes |
| `"text_pair"` | two texts (entailment, paraphrase) | one class | softmax over classes |
| `"regression"` | one text, or two with `text_pair_column` (similarity) | one number | the score itself (MSE) |
| `"multi_label"` | one text (or two) | a list of classes | a sigmoid per class, a threshold |
| `"multiple_choice"` | a context and N candidate answers | the right answer's index | one score per choice, softmax |

[`infer_task`] picks the task from the data when it is unambiguous (a list label: multi-label; a float label:
regression; `choice1`, `choice2`... columns: multiple choice; `sentence1`/`sentence2`-style columns: a pair) and says
why; integer labels are classes unless you ask for `"regression"` (SST-5 read as a score). [`check_task_rows`] turns
bad rows into one [`TextDataError`] line naming the file, the row and the column.

```python
>>> import datasets
>>> rte = datasets.Dataset.from_dict({"sentence1": ["A man sleeps."], "sentence2": ["A man rests."], "label": [0]})
>>> spec, reason = infer_task(rte)
>>> spec.task, spec.text_column, spec.text_pair_column
('text_pair', 'sentence1', 'sentence2')
```
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import datasets

from .data.classification_data import TextDataError, check_texts

TASKS = ("single_text", "text_pair", "regression", "multi_label", "multiple_choice")

# transformers' `config.problem_type` for each task that a sequence-classification head serves.
PROBLEM_TYPES = {
    "single_text": "single_label_classification",
    "text_pair": "single_label_classification",
    "regression": "regression",
    "multi_label": "multi_label_classification",
}

# Column pairs of the public pair datasets (GLUE, SNLI, XNLI...), first match wins.
PAIR_COLUMNS = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("text", "text_pair"),
)
# Candidate answers: COPA's choice1/choice2, SWAG's ending0..ending3, or choice_1... / answer0...
CHOICE_COLUMN = re.compile(r"^(choice|ending|answer|option)_?(\d+)$")
# The context of a multiple-choice row, first match wins.
CONTEXT_COLUMNS = ("premise", "context", "question", "sent1", "text", "sentence")


@dataclass
class TaskSpec:
    """The task and the columns it reads; `to_dict()` is what a saved model's config carries (`tl_nlp_task`).

    Args:
        task: one of `TASKS`.
        text_column: the text, or the context of a multiple-choice row.
        text_pair_column: the second text of a pair (`"text_pair"`, or a pair for regression / multi-label).
        label_column: the class, the list of classes, the number, or the right choice's index.
        choice_columns: the candidate answers of a multiple-choice row, in order.
        symmetric_pair: read a pair in both orders and sum the two representations (GPT's similarity input for
            models that read left to right; encoders see both texts at once and ignore it). `None`: yes for a
            regression on pairs (similarity), no otherwise (entailment is not symmetric).
        threshold: multi-label decision threshold (set after training, from validation data).
    """

    task: str
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    choice_columns: list[str] | None = None
    symmetric_pair: bool | None = None
    threshold: float | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "text_pair" and not self.text_pair_column:
            raise ValueError("task 'text_pair' needs text_pair_column (the second text of each pair)")
        if self.task == "single_text" and self.text_pair_column:
            raise ValueError(
                f"task 'single_text' reads one text, but text_pair_column={self.text_pair_column!r} was given: use "
                "task 'text_pair'"
            )
        if self.task == "multiple_choice":
            if not self.choice_columns or len(self.choice_columns) < 2:
                raise ValueError(f"task 'multiple_choice' needs 2 or more choice_columns, got {self.choice_columns!r}")
            if self.text_pair_column:
                raise ValueError("task 'multiple_choice' reads a context and choices: drop text_pair_column")
        elif self.choice_columns:
            raise ValueError(f"choice_columns are for task 'multiple_choice', not {self.task!r}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.symmetric_pair is None:
            self.symmetric_pair = self.task == "regression" and self.text_pair_column is not None
        if self.symmetric_pair and not self.text_pair_column:
            raise ValueError("symmetric_pair reads a pair in both orders: it needs text_pair_column")

    @property
    def is_pair(self) -> bool:
        return self.text_pair_column is not None

    @property
    def problem_type(self) -> str | None:
        """transformers' `problem_type` (None for multiple choice, which has its own head)."""
        return PROBLEM_TYPES.get(self.task)

    @property
    def input_columns(self) -> list[str]:
        columns = [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])
        return columns + list(self.choice_columns or [])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TaskSpec:
        return cls(**values)

    def describe(self) -> str:
        """One line for logs: `text_pair (sentence1 + sentence2 -> label)`."""
        inputs = " + ".join(self.input_columns)
        extra = ", both orders summed" if self.symmetric_pair else ""
        return f"{self.task} ({inputs} -> {self.label_column}{extra})"


def task_of_config(config) -> TaskSpec | None:
    """The [`TaskSpec`] a model folder was trained for (`config.tl_nlp_task`), or None for plain classifiers."""
    values = getattr(config, "tl_nlp_task", None)
    return TaskSpec.from_dict(values) if values else None


def _feature_kind(feature) -> str:
    """'list', 'float', 'int', 'str' or 'other' for a datasets feature."""
    if isinstance(feature, datasets.Sequence | list) or type(feature).__name__ == "List":
        return "list"
    if isinstance(feature, datasets.ClassLabel):
        return "int"
    if isinstance(feature, datasets.Value):
        if feature.dtype.startswith("float"):
            return "float"
        if feature.dtype.startswith(("int", "uint")):
            return "int"
        if feature.dtype in ("string", "large_string"):
            return "str"
    return "other"


def choice_columns_of(column_names: Sequence[str]) -> list[str]:
    """The candidate-answer columns (`choice1`, `choice2`, ... or `ending0`...), in their numeric order."""
    matches = [(CHOICE_COLUMN.match(name), name) for name in column_names]
    found = [(match.group(1), int(match.group(2)), name) for match, name in matches if match]
    if not found:
        return []
    prefix = found[0][0]
    return [name for _, _, name in sorted(item for item in found if item[0] == prefix)]


def infer_task(
    dataset: datasets.Dataset,
    task: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    choice_columns: Sequence[str] | None = None,
    symmetric_pair: bool | None = None,
) -> tuple[TaskSpec, str]:
    """The task and its columns, from what was given and, where unambiguous, from the data; and a sentence saying
    what was inferred (empty when everything was given).

    What is inferred, when not given: choice columns (`choice1`, `choice2`... / `ending0`...) make a multiple-choice
    task (context: `premise`, `context`, `question`, `sent1`, `text` or `sentence`); pair columns (`sentence1` /
    `sentence2`, `premise` / `hypothesis`, `question1` / `question2`, `question` / `sentence`) make a pair; a label
    column of lists is multi-label, of floats regression, of integers or strings single-label classes. Integer
    labels stay classes unless `task="regression"` asks otherwise: a 0-4 rating is both, only the user knows.

    Args:
        dataset: the training data.
        task: one of `TASKS`, or None to infer it.
        text_column, text_pair_column, label_column, choice_columns, symmetric_pair: as [`TaskSpec`]; None to infer
            (`label_column`: `label`, else `labels`).

    Raises:
        `ValueError` when the task cannot be inferred or contradicts the data's columns.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    columns = dataset.column_names
    said = []
    if label_column is None:
        label_column = "label" if "label" in columns or "labels" not in columns else "labels"
        if label_column == "labels":
            said.append("label column 'labels'")
    if label_column not in columns:
        raise ValueError(f"no label column {label_column!r}; the columns are {columns}. Name it with label_column.")
    label_kind = _feature_kind(dataset.features[label_column])

    if choice_columns is None and task in (None, "multiple_choice"):
        found = choice_columns_of(columns)
        if len(found) >= 2:
            choice_columns = found
            said.append(f"choice columns {found}")
        elif task == "multiple_choice":
            raise ValueError(
                f"task 'multiple_choice' needs choice_columns (none named choice1, choice2... or ending0...); "
                f"the columns are {columns}"
            )
    if choice_columns:
        if task not in (None, "multiple_choice"):
            raise ValueError(f"choice_columns were given (or found) but task is {task!r}")
        if text_column is None:
            text_column = next((name for name in CONTEXT_COLUMNS if name in columns), None)
            if text_column is None:
                raise ValueError(f"cannot tell the context column of a multiple-choice row among {columns}")
            said.append(f"context column {text_column!r}")
        if task is None:
            said.insert(0, "multiple_choice")
        spec = TaskSpec("multiple_choice", text_column, None, label_column, list(choice_columns))
        return spec, _reason(said)

    if text_column is None and text_pair_column is None:
        pair = next((p for p in PAIR_COLUMNS if p[0] in columns and p[1] in columns), None)
        if pair is not None and task != "single_text":
            text_column, text_pair_column = pair
            said.append(f"text pair {pair[0]!r} + {pair[1]!r}")
    if text_column is None:
        text_column = "text" if "text" in columns or "sentence" not in columns else "sentence"
        if text_column == "sentence":
            said.append("text column 'sentence'")

    if task is None:
        if label_kind == "list":
            task = "multi_label"
        elif label_kind == "float":
            task = "regression"
        elif label_kind in ("int", "str"):
            task = "text_pair" if text_pair_column else "single_text"
        else:
            raise ValueError(
                f"cannot infer the task from label column {label_column!r} ({dataset.features[label_column]}): "
                f"pass task= one of {', '.join(TASKS)}"
            )
        said.insert(0, f"{task} ({label_kind} labels)")
    spec = TaskSpec(task, text_column, text_pair_column, label_column, None, symmetric_pair)
    return spec, _reason(said)


def _reason(said: list[str]) -> str:
    return f"inferred from the data: {', '.join(said)}" if said else ""


def check_task_rows(
    dataset: datasets.Dataset,
    spec: TaskSpec,
    source: str = "dataset",
    label_names: Sequence[str] | None = None,
    with_labels: bool = True,
) -> None:
    """Raises a [`TextDataError`] (one line: source, row, column, what to do) for the first bad row.

    Checked: every input column exists (a pair task without its second column, a missing choice column) and holds
    non-empty strings (a choice row with a missing choice); a regression target is a finite number; a multi-label
    target is a list of label ids or names among `label_names`; a multiple-choice label is a choice index.
    `with_labels=False` checks the inputs only (rows to predict).
    """
    for column in spec.input_columns:
        if column not in dataset.column_names:
            role = (
                "second text"
                if column == spec.text_pair_column
                else "choice"
                if column in (spec.choice_columns or [])
                else "text"
            )
            raise TextDataError(
                f"{source}: task {spec.task!r} needs the {role} column {column!r}, which is not there; the columns "
                f"are {dataset.column_names}"
            )
    for column in spec.input_columns:
        check_texts(dataset[column], column, source)
    if not with_labels:
        return
    if spec.label_column not in dataset.column_names:
        raise TextDataError(f"{source}: no label column {spec.label_column!r}; the columns are {dataset.column_names}")
    labels = dataset[spec.label_column]
    for row, label in enumerate(labels):
        problem = _label_problem(label, spec, label_names)
        if problem:
            raise TextDataError(f"{source}: row {row}, column {spec.label_column!r}: {problem}")


def _label_problem(label, spec: TaskSpec, label_names: Sequence[str] | None) -> str | None:
    if spec.task == "regression":
        if isinstance(label, bool) or not isinstance(label, numbers.Real) or not math.isfinite(label):
            return f"{label!r} is not a number; a regression target must be a finite number"
        return None
    if spec.task == "multi_label":
        if not isinstance(label, list | tuple):
            return f"{label!r} is not a list of labels; a multi-label target is a list (possibly empty)"
        for item in label:
            if isinstance(item, str):
                if label_names is not None and item not in label_names:
                    return f"label {item!r} is not one of the known labels {list(label_names)}"
            elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
                if item < 0 or (label_names is not None and item >= len(label_names)):
                    bound = f"0..{len(label_names) - 1}" if label_names is not None else ">= 0"
                    return f"label id {item} is outside {bound}"
            else:
                return f"{item!r} in {label!r} is neither a label name nor a label id"
        return None
    if spec.task == "multiple_choice":
        count = len(spec.choice_columns)
        if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < count:
            return f"{label!r} is not a choice index 0..{count - 1} ({', '.join(spec.choice_columns)})"
        return None
    if label is None:
        return "the label is missing"
    return None


def task_sentence(spec: TaskSpec, id2label: dict | None = None) -> str:
    """The task in a sentence, for model cards: what the model reads and what it answers."""
    inputs = {
        "single_text": f"a text (`{spec.text_column}`)",
        "text_pair": f"a pair of texts (`{spec.text_column}`, `{spec.text_pair_column}`)",
        "multiple_choice": f"a context (`{spec.text_column}`) and {len(spec.choice_columns or [])} candidate answers "
        f"({', '.join(f'`{column}`' for column in spec.choice_columns or [])})",
    }
    reads = inputs["text_pair"] if spec.is_pair else inputs.get(spec.task, inputs["single_text"])
    answers = {
        "single_text": "one class",
        "text_pair": "one class",
        "regression": "a score (regression)",
        "multi_label": "every label whose probability reaches the decision threshold"
        + (f" ({spec.threshold:g}, chosen on validation data)" if spec.threshold is not None else ""),
        "multiple_choice": "the right answer (softmax over the choices)",
    }[spec.task]
    both = " Pairs are read in both orders, their representations summed." if spec.symmetric_pair else ""
    return f"Task `{spec.task}`: it reads {reads} and answers {answers}.{both}"
