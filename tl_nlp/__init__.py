"""tl_nlp: ULMFiT-style transfer learning for the Hugging Face ecosystem.

Names are imported on first use, as transformers does: `import tl_nlp` loads neither torch nor transformers (nor
datasets, pandas or peft), and `from tl_nlp import run_ulmfit` loads what `run_ulmfit` needs. AWD-LSTM is registered
with transformers' Auto classes and `pipeline()` as soon as transformers loads them (`tl_nlp.auto_registration`), so
after `import tl_nlp`, `AutoModelForSequenceClassification.from_pretrained(awd_lstm_folder)` works as for any model.
"""

from typing import TYPE_CHECKING

from .auto_registration import register_when_transformers_loads
from .lazy_exports import lazy_exports

__version__ = "0.1.0"

# Submodule -> the names tl_nlp exports from it (kept in step with the TYPE_CHECKING imports below by a test).
_EXPORTS = {
    "convert_fastai": ["convert_fastai_checkpoint"],
    "data": [
        "LanguageModelStreams",
        "SortishSampler",
        "ULMFiTTokenizerFast",
        "backward_tokenizer",
        "ensemble_predict",
        "load_text_dataset",
        "tokenize_dataset",
        "tokenize_for_language_model",
        "train_ulmfit_tokenizer",
        "transfer_vocabulary",
    ],
    "feature_extraction": ["FeatureExtractionClassifier", "FeatureHeadArguments", "extract_features"],
    "hub": [
        "ULMFiTStage",
        "ULMFiTTrainingRecord",
        "build_model_card",
        "prepare_hub_folder",
        "push_ulmfit_to_hub",
        "read_training_record",
    ],
    "hub_adapters": ["build_adapter_card", "prepare_adapter_folder", "push_adapter_to_hub"],
    "interpretation": ["ClassificationInterpretation", "show_results"],
    "metrics": ["Accuracy", "MacroF1", "classification_metrics"],
    "model_folders": ["ModelFolderError", "check_model_folder"],
    "models.awd_lstm": [
        "AWDLSTMConfig",
        "AWDLSTMForCausalLM",
        "AWDLSTMForSequenceClassification",
        "AWDLSTMModel",
        "AWDLSTMPreTrainedModel",
        "AWDLSTMTextClassificationPipeline",
    ],
    "recipe": [
        "TextData",
        "evaluate_classifier",
        "finetune_language_model",
        "predict",
        "prepare_classifier",
        "pretrain_language_model",
        "run_ulmfit",
        "train_classifier",
    ],
    "models.task_models": ["MultiSequenceClassifier"],
    "reference_data": ["find_reference_data", "prepare_reference_data"],
    "setting_checks": ["SettingError"],
    "task_pipeline": ["TaskTextClassificationPipeline"],
    "task_predictions": ["TaskPredictor"],
    "tasks": ["TaskSpec", "infer_task"],
    "training": [
        "AuxiliaryLMTrainer",
        "ClassificationTrainer",
        "ClassifierWithAuxiliaryLM",
        "GradualUnfreezingCallback",
        "LanguageModelTrainer",
        "LayerGroup",
        "ULMFiTLoraArguments",
        "ULMFiTTrainer",
        "ULMFiTTrainingArguments",
        "UnfreezingStage",
        "discriminative_param_groups",
        "get_staged_schedule",
        "get_stlr_schedule",
        "layer_group_summary",
        "layer_groups",
        "stlr_multiplier",
        "stream_perplexity",
        "ulmfit_lora_config",
        "ulmfit_lora_model",
        "unfreezing_plan",
    ],
    "training.lr_finder": ["LRFinderArguments", "LRFinderResult", "find_learning_rate"],
    "training.output_folders": ["OutputFolderError", "OutputFolderLock", "prepare_output_folder", "save_atomically"],
    "zero_shot": ["ZeroShotLMClassifier", "ZeroShotMultipleChoice"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted([*__all__, "__version__"])

if TYPE_CHECKING:  # what type checkers and IDEs read; at run time `__getattr__` imports each name on first use
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
    from .hub import (
        ULMFiTStage,
        ULMFiTTrainingRecord,
        build_model_card,
        prepare_hub_folder,
        push_ulmfit_to_hub,
        read_training_record,
    )
    from .hub_adapters import build_adapter_card, prepare_adapter_folder, push_adapter_to_hub
    from .interpretation import ClassificationInterpretation, show_results
    from .metrics import Accuracy, MacroF1, classification_metrics
    from .model_folders import ModelFolderError, check_model_folder
    from .models.awd_lstm import (
        AWDLSTMConfig,
        AWDLSTMForCausalLM,
        AWDLSTMForSequenceClassification,
        AWDLSTMModel,
        AWDLSTMPreTrainedModel,
        AWDLSTMTextClassificationPipeline,
    )
    from .models.task_models import MultiSequenceClassifier
    from .recipe import (
        TextData,
        evaluate_classifier,
        finetune_language_model,
        predict,
        prepare_classifier,
        pretrain_language_model,
        run_ulmfit,
        train_classifier,
    )
    from .reference_data import find_reference_data, prepare_reference_data
    from .setting_checks import SettingError
    from .task_pipeline import TaskTextClassificationPipeline
    from .task_predictions import TaskPredictor
    from .tasks import TaskSpec, infer_task
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
        UnfreezingStage,
        discriminative_param_groups,
        get_staged_schedule,
        get_stlr_schedule,
        layer_group_summary,
        layer_groups,
        stlr_multiplier,
        stream_perplexity,
        ulmfit_lora_config,
        ulmfit_lora_model,
        unfreezing_plan,
    )
    from .training.lr_finder import LRFinderArguments, LRFinderResult, find_learning_rate
    from .training.output_folders import OutputFolderError, OutputFolderLock, prepare_output_folder, save_atomically
    from .zero_shot import ZeroShotLMClassifier, ZeroShotMultipleChoice

register_when_transformers_loads()
