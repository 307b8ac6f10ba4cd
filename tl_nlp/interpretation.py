"""A look at a classifier's predictions: predictions against labels, the confusion matrix, the most confident mistakes.

What fastai gives with `learn.show_results()` and `ClassificationInterpretation` (`confusion_matrix`,
`plot_confusion_matrix`, `most_confused`, `top_losses`), for any classifier folder that tl_nlp or transformers
saved, or for probabilities computed elsewhere:

```python
>>> from tl_nlp import ClassificationInterpretation, TextData
>>> interpretation = ClassificationInterpretation.from_folder("runs/demo/classifier", TextData("test.csv"))
>>> interpretation.confusion_matrix()            # rows: actual label, columns: predicted label (as fastai)
>>> interpretation.plot_confusion_matrix()       # a matplotlib Axes, shown inline in a notebook
>>> interpretation.most_confused()               # [("negative", "positive", 12), ...]
>>> interpretation.most_confident_mistakes(5)    # a table: text, actual, predicted, probability, loss
>>> interpretation.show_results(8)               # a few texts with their label and the prediction
```

Tables are pandas DataFrames (pandas comes with datasets) and render as tables in a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .extras import import_extra

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class ClassificationInterpretation:
    """Texts, their labels and a classifier's probabilities, and what can be read from them.

    Args:
        texts: the texts, in the order of the rows of `probabilities`.
        labels: each text's label id.
        probabilities: `(len(texts), num_labels)` class probabilities.
        label_names: the name of each label id (`["negative", "positive"]`).

    Build one with [`ClassificationInterpretation.from_folder`] (runs the classifier) or directly from
    probabilities computed elsewhere (e.g. a softmax over `trainer.predict(...)`'s logits).
    """

    texts: Sequence[str]
    labels: np.ndarray
    probabilities: np.ndarray
    label_names: Sequence[str]

    def __post_init__(self):
        probabilities, labels = np.asarray(self.probabilities, dtype=np.float64), np.asarray(self.labels)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(self.label_names):
            raise ValueError(
                f"probabilities must have shape (texts, {len(self.label_names)} labels), got {probabilities.shape}"
            )
        if not len(self.texts) == len(labels) == len(probabilities):
            raise ValueError(
                f"texts, labels and probabilities must have one row per text: got {len(self.texts)}, {len(labels)} "
                f"and {len(probabilities)}"
            )
        outside = np.flatnonzero((labels < 0) | (labels >= len(self.label_names)))
        if outside.size:
            raise ValueError(
                f"labels: row {int(outside[0])} has label {int(labels[outside[0]])}, outside 0..{len(self.label_names) - 1}"
            )
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "labels", labels.astype(np.int64))

    @classmethod
    def from_folder(
        cls,
        model_name_or_path: str | Path | Sequence[str | Path],
        data: Any,
        batch_size: int = 32,
        device: str | None = None,
        trust_remote_code: bool = False,
    ) -> ClassificationInterpretation:
        """Runs a classifier folder (or the mean-probability ensemble of several) on labelled texts.

        Args:
            model_name_or_path: a classifier folder or Hub id, or several (forward + backward).
            data: labelled texts, as the recipe takes them (a `TextData`, a file, a `datasets.Dataset`); labels are
                ids or names of the classifier's `id2label`.
        """
        from .data import encode_labels
        from .recipe.data import as_dataset, columns_of
        from .recipe.evaluation import predict_probabilities

        text_column, label_column = columns_of(data)
        dataset = as_dataset(data)
        probabilities, id2label = predict_probabilities(
            [str(path) for path in model_name_or_path]
            if isinstance(model_name_or_path, Sequence) and not isinstance(model_name_or_path, str)
            else str(model_name_or_path),
            dataset[text_column],
            batch_size=batch_size,
            device=device,
            trust_remote_code=trust_remote_code,
        )
        names = [id2label[index] for index in range(len(id2label))]
        dataset, _, _ = encode_labels(dataset, label_column, names, source=str(getattr(data, "source", "data")))
        return cls(dataset[text_column], np.asarray(dataset["labels"]), probabilities, names)

    @property
    def predictions(self) -> np.ndarray:
        """The predicted label id of each text (the most probable)."""
        return self.probabilities.argmax(-1)

    @property
    def losses(self) -> np.ndarray:
        """Each text's cross-entropy loss, `-log p(actual label)` (fastai's `top_losses` sorts by it)."""
        actual = self.probabilities[np.arange(len(self.labels)), self.labels]
        return -np.log(np.clip(actual, np.finfo(np.float64).tiny, None))

    def confusion_matrix(self) -> np.ndarray:
        """Counts, `[actual, predicted]` (rows: actual label, columns: predicted label, as fastai and scikit-learn)."""
        size = len(self.label_names)
        return np.bincount(self.labels * size + self.predictions, minlength=size * size).reshape(size, size)

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """The off-diagonal cells of the confusion matrix with at least `min_count` texts, most texts first:
        `(actual, predicted, count)`, as fastai's `most_confused`."""
        matrix = self.confusion_matrix()
        cells = [
            (self.label_names[actual], self.label_names[predicted], int(matrix[actual, predicted]))
            for actual in range(len(matrix))
            for predicted in range(len(matrix))
            if actual != predicted and matrix[actual, predicted] >= min_count
        ]
        return sorted(cells, key=lambda cell: -cell[2])

    def most_confident_mistakes(self, count: int = 5) -> pandas.DataFrame:
        """The wrongly predicted texts the classifier was surest of (highest loss first): text, actual, predicted,
        probability of the prediction, loss."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        return self._table(wrong[np.argsort(-self.losses[wrong], kind="stable")][:count])

    def show_results(self, count: int = 8) -> pandas.DataFrame:
        """The first `count` texts with their label and the prediction (fastai's `learn.show_results()`)."""
        return self._table(np.arange(min(count, len(self.texts))))

    def plot_confusion_matrix(self, normalize: bool = False, axes: Axes | None = None, cmap: str = "Blues") -> Axes:
        """Draws the confusion matrix (counts, or with `normalize` each row's share) and returns the matplotlib
        Axes. In a notebook it shows inline; `axes.figure.savefig(path)` saves it. The matplotlib backend is left
        as it is."""
        matrix = self.confusion_matrix().astype(np.float64)
        if normalize:
            matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        if axes is None:
            plt = import_extra("matplotlib.pyplot", "The confusion-matrix plot")
            size = max(3.0, 0.6 * len(self.label_names) + 2)
            _, axes = plt.subplots(figsize=(size, size))
        axes.imshow(matrix, interpolation="nearest", cmap=cmap)
        ticks = np.arange(len(self.label_names))
        axes.set_xticks(ticks, self.label_names, rotation=90 if len(self.label_names) > 4 else 0)
        axes.set_yticks(ticks, self.label_names)
        threshold = matrix.max() / 2 if matrix.size else 0
        for actual in range(len(matrix)):
            for predicted in range(len(matrix)):
                value = matrix[actual, predicted]
                axes.text(
                    predicted, actual, f"{value:.2f}" if normalize else f"{int(value)}", ha="center", va="center",
                    color="white" if value > threshold else "black",
                )  # fmt: skip
        axes.set_xlabel("predicted")
        axes.set_ylabel("actual")
        axes.set_title("Confusion matrix" + (" (share of each actual label)" if normalize else ""))
        return axes

    def __repr__(self) -> str:
        accuracy = float((self.predictions == self.labels).mean()) if len(self.labels) else float("nan")
        return (
            f"ClassificationInterpretation({len(self.texts)} texts, labels {list(self.label_names)}, "
            f"accuracy {accuracy:.4f}, {int((self.predictions != self.labels).sum())} mistakes)"
        )

    def _table(self, rows: np.ndarray) -> pandas.DataFrame:
        import pandas

        predictions = self.predictions
        return pandas.DataFrame(
            {
                "text": [self.texts[index] for index in rows],
                "actual": [self.label_names[self.labels[index]] for index in rows],
                "predicted": [self.label_names[predictions[index]] for index in rows],
                "probability": [float(self.probabilities[index, predictions[index]]) for index in rows],
                "loss": [float(self.losses[index]) for index in rows],
            },
            index=[int(index) for index in rows],
        )


def show_results(
    model_name_or_path: str | Path | Sequence[str | Path], data: Any, count: int = 8, **kwargs: Any
) -> pandas.DataFrame:
    """A few texts of `data` with their label and the classifier's prediction, as fastai's `learn.show_results()`.

    Args:
        model_name_or_path: a classifier folder or Hub id (or several: their ensemble).
        data: labelled texts (a `TextData`, a file, a `datasets.Dataset`); only the first `count` are run.
        kwargs: passed to [`ClassificationInterpretation.from_folder`] (`batch_size`, `device`, ...).
    """
    from .recipe.data import as_dataset, columns_of

    text_column, label_column = columns_of(data)
    dataset = as_dataset(data)
    first = dataset.select(range(min(count, len(dataset))))
    if (text_column, label_column) != ("text", "label"):
        first = first.rename_columns({text_column: "text", label_column: "label"})
    return ClassificationInterpretation.from_folder(model_name_or_path, first, **kwargs).show_results(count)
