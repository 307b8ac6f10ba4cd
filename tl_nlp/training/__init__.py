"""ULMFiT fine-tuning techniques for any model: layer groups, discriminative learning rates, STLR, gradual unfreezing."""

from .arguments import MODEL_FAMILY_DEFAULTS, ULMFiTTrainingArguments
from .auxiliary_lm import AuxiliaryLMOutput, AuxiliaryLMTrainer, ClassifierWithAuxiliaryLM
from .callbacks import (
    UNFREEZING_SCHEDULES,
    GradualUnfreezingCallback,
    UnfreezingStage,
    num_trainable_groups_at,
    unfreezing_plan,
    unfreezing_stage_starts,
)
from .classification_trainer import ClassificationTrainer
from .layer_groups import LayerGroup, layer_group_summary, layer_groups
from .lm_trainer import LanguageModelTrainer, stream_perplexity
from .lora import ULMFiTLoraArguments, ulmfit_lora_config, ulmfit_lora_model
from .param_groups import discriminative_param_groups, layer_group_learning_rates, no_decay_parameter_names
from .schedules import (
    get_staged_schedule,
    get_stlr_schedule,
    one_cycle_multiplier,
    staged_stlr_multiplier,
    stlr_multiplier,
)
from .trainer import ULMFiTTrainer, model_normalizes_loss_by_num_items

__all__ = [
    "AuxiliaryLMOutput",
    "AuxiliaryLMTrainer",
    "ClassificationTrainer",
    "ClassifierWithAuxiliaryLM",
    "GradualUnfreezingCallback",
    "LanguageModelTrainer",
    "LayerGroup",
    "MODEL_FAMILY_DEFAULTS",
    "UNFREEZING_SCHEDULES",
    "ULMFiTLoraArguments",
    "ULMFiTTrainer",
    "ULMFiTTrainingArguments",
    "UnfreezingStage",
    "discriminative_param_groups",
    "get_staged_schedule",
    "get_stlr_schedule",
    "layer_group_learning_rates",
    "layer_group_summary",
    "layer_groups",
    "model_normalizes_loss_by_num_items",
    "no_decay_parameter_names",
    "num_trainable_groups_at",
    "one_cycle_multiplier",
    "staged_stlr_multiplier",
    "stlr_multiplier",
    "stream_perplexity",
    "ulmfit_lora_config",
    "ulmfit_lora_model",
    "unfreezing_plan",
    "unfreezing_stage_starts",
]
