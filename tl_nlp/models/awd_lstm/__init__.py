"""AWD-LSTM as a Hugging Face model: config, encoder, language model, classifier, text-classification pipeline.

Names are imported on first use (`tl_nlp.lazy_exports`). Reading a model class also loads transformers'
`AutoModel*` module, whose loading registers AWD-LSTM there and marks the classes so that `save_pretrained` ships
their code (`tl_nlp.auto_registration`).
"""

import importlib
from typing import Any

from ...lazy_exports import lazy_exports

__all__, _export, __dir__ = lazy_exports(
    __name__,
    {
        "configuration_awd_lstm": ["AWDLSTMConfig"],
        "modeling_awd_lstm": [
            "AWDLSTMForCausalLM",
            "AWDLSTMForSequenceClassification",
            "AWDLSTMModel",
            "AWDLSTMPreTrainedModel",
        ],
        "pipeline_awd_lstm": ["AWDLSTMTextClassificationPipeline"],
    },
)


def __getattr__(name: str) -> Any:
    value = _export(name)
    if name.startswith("AWDLSTMFor") or name.startswith("AWDLSTMModel"):
        importlib.import_module("transformers.models.auto.modeling_auto")
    return value
