"""`pipeline("text-classification")` for every task a sequence classifier serves: pairs, similarity, regression and
multi-label, with the stock pipeline's inputs and outputs.

- Pairs: `{"text": ..., "text_pair": ...}`, as transformers' text-classification pipeline takes them. The tokenizer
  writes the pair as the model was trained on it (BERT's own pair encoding, GPT's start/delimiter/extract tokens,
  AWD-LSTM's `xxbos a xxfld b`); a similarity model (trained on both orders, summed) reads both orders here too.
- Regression: `{"label": ..., "score": the predicted number}` (no sigmoid), as the stock pipeline does for
  `problem_type="regression"`.
- Multi-label: every label whose sigmoid is at least the threshold saved with the model (chosen on validation data
  when it was trained; 0.5 without one), as a list of `{"label", "score"}`, highest first; `top_k=...` gives the
  stock behaviour.

Everything else (single-label classifiers, AWD-LSTM's length-sorted batches) is the pipeline it extends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers.pipelines.text_classification import ClassificationFunction

from .data.task_encoding import task_family
from .models.awd_lstm.pipeline_awd_lstm import AWDLSTMTextClassificationPipeline
from .models.task_models import MultiSequenceClassifier
from .tasks import task_of_config


class TaskTextClassificationPipeline(AWDLSTMTextClassificationPipeline):
    """A text-classification pipeline that knows the task its model was trained for (`config.tl_nlp_task`).

    Example:

    ```python
    >>> from transformers import pipeline
    >>> from tl_nlp.task_pipeline import TaskTextClassificationPipeline
    >>> similarity = pipeline("text-classification", model="runs/stsb", pipeline_class=TaskTextClassificationPipeline)  # doctest: +SKIP
    >>> similarity({"text": "A man is sleeping.", "text_pair": "A man rests."})  # doctest: +SKIP
    {'label': 'LABEL_0', 'score': 3.91}
    >>> emotions = pipeline("text-classification", model="runs/go_emotions", pipeline_class=TaskTextClassificationPipeline)  # doctest: +SKIP
    >>> emotions("Thanks, that made my day!")  # doctest: +SKIP
    [[{'label': 'gratitude', 'score': 0.93}, {'label': 'joy', 'score': 0.41}]]
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.task = task_of_config(self.model.config)

    @property
    def _symmetric(self) -> bool:
        # Encoders read both texts at once: they are never given both orders.
        return self.task is not None and bool(self.task.symmetric_pair) and task_family(self.model.config) != "encoder"

    def preprocess(self, inputs, **tokenizer_kwargs):
        if self.task is not None and self.task.is_pair and not (isinstance(inputs, dict) and "text_pair" in inputs):
            raise ValueError(
                f"this model reads text pairs ({self.task.describe()}): pass {{'text': ..., 'text_pair': ...}}, "
                f"got {str(inputs)[:60]!r}"
            )
        if not (self._symmetric and isinstance(inputs, dict)):
            return super().preprocess(inputs, **tokenizer_kwargs)
        # Both orders of the pair, padded together: (1, 2, length).
        text, pair = inputs["text"], inputs["text_pair"]
        encoded = self.tokenizer([text, pair], [pair, text], padding=True, return_tensors="pt", **tokenizer_kwargs)
        return {key: value.unsqueeze(0) for key, value in encoded.items()}

    def _forward(self, model_inputs):
        if model_inputs["input_ids"].dim() == 3:
            return MultiSequenceClassifier(self.model, "sum")(**model_inputs)
        return super()._forward(model_inputs)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=1, _legacy=True):
        config = self.model.config
        if not (_legacy and function_to_apply is None and config.problem_type == "multi_label_classification"):
            return super().postprocess(model_outputs, function_to_apply, top_k, _legacy)
        threshold = self.task.threshold if self.task is not None and self.task.threshold is not None else 0.5
        scores = super().postprocess(model_outputs, ClassificationFunction.SIGMOID, top_k=None, _legacy=False)
        return [entry for entry in scores if entry["score"] >= threshold]


def multi_label_names(probabilities: np.ndarray, id2label: dict[int, str], threshold: float) -> list[list[str]]:
    """Per row, the labels whose probability is at least `threshold`, most likely first."""
    return [
        [id2label[index] for index in np.argsort(-row, kind="stable") if row[index] >= threshold]
        for row in np.asarray(probabilities)
    ]
