"""tl_nlp: ULMFiT-style transfer learning for the Hugging Face ecosystem."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .convert_fastai import convert_fastai_checkpoint
from .data import (
    LanguageModelStreams,
    SortishSampler,
    ULMFiTTokenizerFast,
    backward_tokenizer,
    ensemble_predict,
    load_text_dataset,
    tokenize_dataset,
    tokenize_for_language_model,
    train_ulmfit_tokenizer,
    transfer_vocabulary,
)
from .feature_extraction import FeatureExtractionClassifier, FeatureHeadArguments, extract_features
from .hub import ULMFiTStage, ULMFiTTrainingRecord, build_model_card, prepare_hub_folder, push_ulmfit_to_hub
from .hub_adapters import build_adapter_card, prepare_adapter_folder, push_adapter_to_hub
from .models.awd_lstm import (
    AWDLSTMConfig,
    AWDLSTMForCausalLM,
    AWDLSTMForSequenceClassification,
    AWDLSTMModel,
    AWDLSTMPreTrainedModel,
    AWDLSTMTextClassificationPipeline,
)
from .training import (
    AuxiliaryLMTrainer,
    ClassificationTrainer,
    ClassifierWithAuxiliaryLM,
    GradualUnfreezingCallback,
    LanguageModelTrainer,
    LayerGroup,
    ULMFiTLoraArguments,
    ULMFiTTrainer,
    ULMFiTTrainingArguments,
    discriminative_param_groups,
    get_stlr_schedule,
    layer_group_summary,
    layer_groups,
    stlr_multiplier,
    stream_perplexity,
    ulmfit_lora_config,
    ulmfit_lora_model,
)
from .zero_shot import ZeroShotLMClassifier

__version__ = "0.1.0"

__all__ = [
    "AWDLSTMConfig",
    "AWDLSTMForCausalLM",
    "AWDLSTMForSequenceClassification",
    "AWDLSTMModel",
    "AWDLSTMPreTrainedModel",
    "AWDLSTMTextClassificationPipeline",
    "AuxiliaryLMTrainer",
    "ClassificationTrainer",
    "ClassifierWithAuxiliaryLM",
    "FeatureExtractionClassifier",
    "FeatureHeadArguments",
    "GradualUnfreezingCallback",
    "LanguageModelStreams",
    "LanguageModelTrainer",
    "LayerGroup",
    "SortishSampler",
    "ULMFiTLoraArguments",
    "ULMFiTStage",
    "ULMFiTTokenizerFast",
    "ULMFiTTrainer",
    "ULMFiTTrainingArguments",
    "ULMFiTTrainingRecord",
    "ZeroShotLMClassifier",
    "__version__",
    "backward_tokenizer",
    "build_adapter_card",
    "build_model_card",
    "convert_fastai_checkpoint",
    "discriminative_param_groups",
    "ensemble_predict",
    "extract_features",
    "get_stlr_schedule",
    "layer_group_summary",
    "layer_groups",
    "load_text_dataset",
    "prepare_adapter_folder",
    "prepare_hub_folder",
    "push_adapter_to_hub",
    "push_ulmfit_to_hub",
    "stlr_multiplier",
    "stream_perplexity",
    "tokenize_dataset",
    "tokenize_for_language_model",
    "train_ulmfit_tokenizer",
    "transfer_vocabulary",
    "ulmfit_lora_config",
    "ulmfit_lora_model",
]


# Auto classes: `AutoModel*.from_pretrained(folder)` works in-process once tl_nlp is imported, and
# `register_for_auto_class` makes `save_pretrained` ship the code so the folder also loads without tl_nlp.
AutoConfig.register("awd_lstm", AWDLSTMConfig, exist_ok=True)
AutoModel.register(AWDLSTMConfig, AWDLSTMModel, exist_ok=True)
AutoModelForCausalLM.register(AWDLSTMConfig, AWDLSTMForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(AWDLSTMConfig, AWDLSTMForSequenceClassification, exist_ok=True)
AWDLSTMConfig.register_for_auto_class()
AWDLSTMModel.register_for_auto_class("AutoModel")
AWDLSTMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
AWDLSTMForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
# The ULMFiT tokenizer that AWD-LSTM folders ship with: `AutoTokenizer` and `pipeline(task, model=folder)` find it
# in-process without `trust_remote_code` (folders whose tokenizer_config names another class keep that class).
AutoTokenizer.register(AWDLSTMConfig, fast_tokenizer_class=ULMFiTTokenizerFast, exist_ok=True)


def _register_text_classification_pipeline() -> None:
    """`pipeline("text-classification", model=folder)` then batches AWD-LSTM inputs by length (answers in input
    order). The class is a TextClassificationPipeline that leaves every other model as it was, and the task keeps its
    model classes, default model and type. `register_pipeline` warns whenever it replaces a task's class, which is
    the point here, so the warning is silenced for that one call."""
    text_classification = PIPELINE_REGISTRY.supported_tasks["text-classification"]
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        PIPELINE_REGISTRY.register_pipeline(
            "text-classification",
            pipeline_class=AWDLSTMTextClassificationPipeline,
            pt_model=text_classification["pt"],
            default=text_classification.get("default"),
            type=text_classification.get("type"),
        )
    finally:
        logging.set_verbosity(verbosity)
    # The registry also marks the class as custom code for `Pipeline.save_pretrained` to copy into a saved folder and
    # declare in its config (`custom_pipelines`), which would then need `trust_remote_code` to load. The class is
    # part of tl_nlp, not of the folder: saved pipelines stay plain model folders.
    del AWDLSTMTextClassificationPipeline._registered_impl


_register_text_classification_pipeline()
