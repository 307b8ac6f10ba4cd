"""AWD-LSTM as a Hugging Face model: config, encoder, language model, classifier, text-classification pipeline."""

from .configuration_awd_lstm import AWDLSTMConfig
from .modeling_awd_lstm import (
    AWDLSTMForCausalLM,
    AWDLSTMForSequenceClassification,
    AWDLSTMModel,
    AWDLSTMPreTrainedModel,
)
from .pipeline_awd_lstm import AWDLSTMTextClassificationPipeline

__all__ = [
    "AWDLSTMConfig",
    "AWDLSTMForCausalLM",
    "AWDLSTMForSequenceClassification",
    "AWDLSTMModel",
    "AWDLSTMPreTrainedModel",
    "AWDLSTMTextClassificationPipeline",
]
