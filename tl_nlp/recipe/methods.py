"""The transfer methods the classifier stage can use instead of full fine-tuning, chosen with one option.

- `"full"`: every layer trains (ULMFiT's gradual unfreezing, discriminative rates and STLR by default).
- `"lora"`: LoRA adapters (`ulmfit_lora_model`) and the new head train; the techniques apply to the adapters by the
  depth of the layer they adapt. The stage saves the merged model (a plain classifier folder) and, on request, the
  adapter in `output_dir/adapter`.
- `"feature_extraction"`: the backbone stays frozen, its pooled features are computed once and a head is trained
  on them (`FeatureExtractionClassifier`). For AWD-LSTM the trained head is written into the classifier's own head
  (the standardisation becomes its BatchNorm), so the folder is a plain `AWDLSTMForSequenceClassification`.

`auxiliary_lm_weight > 0` adds GPT's auxiliary language-model loss to `"full"` or `"lora"` training
(`ClassifierWithAuxiliaryLM`) for AWD-LSTM and GPT-style models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..extras import is_peft_model
from ..feature_extraction import Standardize
from ..models.task_models import MultiSequenceClassifier
from ..training import ClassificationTrainer
from ..training.auxiliary_lm import AuxiliaryLMTrainer, ClassifierWithAuxiliaryLM
from ..training.lora import ULMFiTLoraArguments, ulmfit_lora_model
from ..training.loss_guard import NonFiniteLossCallback
from .data import RecipeError


def check_model_for_method(method: str, auxiliary_lm_weight: float, config, objective: str, model_name: str) -> None:
    """Raises `RecipeError` when the checkpoint cannot use the method (`objective` as `language_model_objective`)."""
    if auxiliary_lm_weight > 0 and not (
        config.model_type == "awd_lstm"
        or (objective == "causal" and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    ):
        raise RecipeError(
            f"auxiliary_lm_weight > 0 needs a next-token language model (AWD-LSTM or GPT-style); {model_name} is a "
            f"{config.model_type!r} {objective}-LM model: set auxiliary_lm_weight to 0"
        )
    if method == "feature_extraction" and config.model_type != "awd_lstm":
        raise RecipeError(
            f"method 'feature_extraction' in the recipe saves the head into an AWD-LSTM classifier folder; "
            f"{model_name} is a {config.model_type!r} model: use tl_nlp.FeatureExtractionClassifier directly"
        )


def awd_lstm_decoder_bias(model_name_or_path: str) -> torch.Tensor | None:
    """The decoder bias of an AWD-LSTM language-model folder (the auxiliary LM head starts from it), or `None`
    when the folder has none (a classifier folder, or a Hub id)."""
    weights = Path(model_name_or_path) / "model.safetensors"
    if not weights.is_file():
        return None
    with safe_open(str(weights), framework="pt") as file:
        return file.get_tensor("decoder.bias") if "decoder.bias" in file.keys() else None


def wrap_classifier(
    model: nn.Module,
    method: str,
    auxiliary_lm_weight: float,
    lora: ULMFiTLoraArguments | None,
    lm_bias: torch.Tensor | None = None,
    trained_tokens: Sequence[int] | None = None,
) -> nn.Module:
    """The model the Trainer trains for `method`: LoRA-wrapped for `"lora"` (a `MultiSequenceClassifier`'s
    classifier inside it; `trained_tokens`: ids of tokens added to the tokenizer, whose embeddings train in full),
    inside `ClassifierWithAuxiliaryLM` with an auxiliary LM loss."""
    if method == "lora":
        target = model.classifier if isinstance(model, MultiSequenceClassifier) else model
        try:
            adapted = ulmfit_lora_model(target, lora, trained_tokens)
        except ValueError as error:  # targets that do not fit the model: a setting, said in one line
            raise RecipeError(f"method 'lora': {error}") from error
        if isinstance(model, MultiSequenceClassifier):
            model.classifier = adapted
        else:
            model = adapted
    if auxiliary_lm_weight > 0:
        model = ClassifierWithAuxiliaryLM(model, auxiliary_lm_weight, lm_bias=lm_bias)
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """`{"trainable_parameters", "total_parameters"}` as they stand (before gradual unfreezing freezes groups)."""
    parameters = {id(p): p for p in model.parameters()}.values()
    return {
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "total_parameters": sum(p.numel() for p in parameters),
    }


def model_to_save(model: nn.Module, output_dir: Path, save_adapter: bool, is_main_process: bool) -> nn.Module:
    """The plain classifier a trained model saves as: without the auxiliary LM head, LoRA merged (the adapter goes
    to `output_dir/adapter` first with `save_adapter`)."""
    if isinstance(model, ClassifierWithAuxiliaryLM):
        model = model.classifier
    if isinstance(model, MultiSequenceClassifier):
        model.classifier = model_to_save(model.classifier, output_dir, save_adapter, is_main_process)
        return model
    if is_peft_model(model):
        if save_adapter and is_main_process:
            model.save_pretrained(output_dir / "adapter")
        model = model.merge_and_unload()
    return model


@torch.no_grad()
def load_feature_head_into_awd_lstm(classifier: nn.Module, head: nn.Sequential) -> None:
    """Writes a `FeatureExtractionClassifier` head (Standardize, Dropout, [Linear, ReLU, Dropout,] Linear) into an
    AWD-LSTM classifier's head (BatchNorm, Dropout, Linear[, ReLU, BatchNorm, Dropout, Linear]) with the same
    outputs in eval mode: the first BatchNorm standardises with the training features' statistics, a second one (MLP)
    is the identity."""
    linears = [module for module in head if isinstance(module, nn.Linear)]
    standardize = head[0]
    if not isinstance(standardize, Standardize):
        raise ValueError("the head does not start with Standardize: not a FeatureExtractionClassifier head")
    norms = [module for module in classifier.classifier.layers if isinstance(module, nn.BatchNorm1d)]
    targets = [module for module in classifier.classifier.layers if isinstance(module, nn.Linear)]
    if len(targets) != len(linears):
        raise ValueError(f"the AWD-LSTM head has {len(targets)} linear layers, the feature head {len(linears)}")
    for index, norm in enumerate(norms):
        if index == 0:
            mean, std = standardize.mean, standardize.std
        else:
            mean, std = torch.zeros(norm.num_features), torch.ones(norm.num_features)
        # eval BatchNorm: (x - running_mean) / sqrt(running_var + eps) * weight + bias == (x - mean) / std.
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(std**2)
        norm.weight.copy_((std**2 + norm.eps).sqrt() / std)
        norm.bias.zero_()
    for target, source in zip(targets, linears, strict=True):
        target.weight.copy_(source.weight)
        target.bias.copy_(source.bias)


def classifier_trainer(
    model: nn.Module,
    args: Any,
    train_dataset: Any,
    data_collator: Any,
    compute_metrics: Any,
    auxiliary_lm_weight: float,
) -> tuple[Any, NonFiniteLossCallback]:
    """The classifier stage's trainer (`AuxiliaryLMTrainer` with an auxiliary LM loss, else `ClassificationTrainer`)
    and its non-finite-loss guard."""
    guard = NonFiniteLossCallback()
    trainer = (AuxiliaryLMTrainer if auxiliary_lm_weight > 0 else ClassificationTrainer)(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator,
        compute_metrics=compute_metrics,
        callbacks=[guard],
    )
    return trainer, guard
