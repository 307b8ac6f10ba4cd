"""`pipeline("text-classification")` that batches AWD-LSTM inputs by length, answering in input order.

An AWD-LSTM reads a batch one token position at a time, so a batch holding one long text keeps the LSTM stepping
for a few rows long after the others have ended; with texts of similar length in each batch every step serves the
whole batch (what fastai's `SortedDL` does inside `get_preds`). The classifier's answer for a text does not depend on
which texts share its batch (padding is skipped), so reordering changes the speed, not the answers.

This file imports only transformers, so that it can travel with the model code.
"""

from typing import Any

from transformers import TextClassificationPipeline


class AWDLSTMTextClassificationPipeline(TextClassificationPipeline):
    r"""
    [`TextClassificationPipeline`] that, for an AWD-LSTM model and a list of texts, forms the batches from texts of
    similar length (longest first) and returns the answers in the order of the inputs. Any other model or input (one
    text, text pairs, a dataset or a generator) goes through the stock pipeline unchanged.

    Once tl_nlp is imported, `pipeline("text-classification", model=folder)` builds one for an AWD-LSTM folder (see
    `tl_nlp.pipeline_selector`); `pipeline(..., pipeline_class=AWDLSTMTextClassificationPipeline)` asks
    for it explicitly.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> import tl_nlp  # registers the AWD-LSTM classes, and this pipeline for AWD-LSTM models
    >>> classify = pipeline("text-classification", model="path/to/awd_lstm_classifier")  # doctest: +SKIP
    >>> answers = classify(["a long review ...", "short"], batch_size=64)  # doctest: +SKIP
    ```
    """

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        if not (self._batches_by_length() and isinstance(inputs, list) and len(inputs) > 1):
            return super().__call__(inputs, **kwargs)
        if not all(isinstance(text, str) for text in inputs):
            return super().__call__(inputs, **kwargs)
        # The number of characters stands in for the number of tokens: close enough to group texts, and free.
        order = sorted(range(len(inputs)), key=lambda index: len(inputs[index]), reverse=True)
        sorted_results = super().__call__([inputs[index] for index in order], **kwargs)
        results = [None] * len(inputs)
        for position, index in enumerate(order):
            results[index] = sorted_results[position]
        return results

    def _batches_by_length(self) -> bool:
        return getattr(self.model.config, "model_type", None) == "awd_lstm"
