"""LoRA adapters (via peft) that the ULMFiT techniques treat like the layers they adapt.

`layer_groups` puts each LoRA matrix in the group of the layer it adapts, so with a PEFT-wrapped model
`ULMFiTTrainer` gives the adapters of layer k layer k's discriminative rate, and gradual unfreezing keeps the adapters
of frozen groups still. This module picks sensible LoRA targets per architecture:

- AWD-LSTM: the LSTM matrices `weight_ih` and `weight_hh` through peft's `target_parameters` (the layer reads them
  as attributes and passes them to `torch.lstm`, so peft's parametrization supplies `W + B @ A`; the weight
  dropout then drops entries of the adapted matrix, as it does for the plain one), plus the embedding matrix as a
  LoRA embedding. The classifier head is trained in full (`modules_to_save`).
- BERT-style encoders: every attention and feed-forward projection; the pooler and classification head in full.
- GPT-2: `c_attn`, `c_proj` and `c_fc` (Conv1D, hence `fan_in_fan_out=True`); the score head in full.
- Llama-style decoders: the attention and MLP projections.

Adapters save, load (`PeftModel.from_pretrained`), merge (`merge_and_unload`) and push as peft does it; see
`tl_nlp.hub_adapters` for a folder with a model card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from ..extras import import_extra

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

# Modules (or parameters, for AWD-LSTM) that LoRA adapts, per model type.
LORA_TARGET_MODULES_BY_MODEL_TYPE = {
    "awd_lstm": ["embeddings"],
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "electra": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
}
# AWD-LSTM's recurrent matrices are parameters of `AWDLSTMLayer`, not `nn.Linear`s: peft's `target_parameters`.
AWD_LSTM_TARGET_PARAMETERS = ["weight_ih", "weight_hh"]
# Heads that a classifier trains in full: they are new, so there is nothing to adapt.
CLASSIFIER_HEADS = ["classifier", "score"]


@dataclass
class ULMFiTLoraArguments:
    """LoRA settings for `ulmfit_lora_model`.

    Args:
        r (`int`, defaults to 8): rank of each adapter (>= 1).
        lora_alpha (`float`, defaults to 16): scale; the update is `lora_alpha / r * B @ A` (> 0).
        lora_dropout (`float`, defaults to 0.0): dropout on the adapter input, in [0, 1).
        adapt_embeddings (`bool`, defaults to `True`): for AWD-LSTM, also adapt the embedding lookup (a language
            model's tied decoder keeps reading the base matrix: peft adapts the lookup only).
        train_head (`bool`, defaults to `True`): train a classifier's head (`classifier` / `score`, and a BERT-style
            pooler) in full.
        target_modules (`list[str]`, *optional*): your own module targets instead of the per-architecture ones.
    """

    r: int = field(default=8, metadata={"help": "Rank of each LoRA adapter (>= 1)."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale: update = lora_alpha / r * B @ A (> 0)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input, in [0, 1)."})
    adapt_embeddings: bool = field(
        default=True, metadata={"help": "AWD-LSTM: also adapt the embedding lookup (not the tied decoder)."}
    )
    train_head: bool = field(default=True, metadata={"help": "Train a classifier's new head in full."})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt instead of the per-architecture defaults."}
    )

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"r must be >= 1 (the LoRA rank), got {self.r}.")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("target_modules must name at least one module, or be None for the defaults.")


def ulmfit_lora_config(model: nn.Module, arguments: ULMFiTLoraArguments | None = None) -> LoraConfig:
    """The `LoraConfig` that adapts `model`'s blocks (and AWD-LSTM's embeddings) and trains a classifier's head.

    Args:
        model (`nn.Module`): a transformers model (AWD-LSTM, BERT-style, GPT-2, Llama-style...).
        arguments (`ULMFiTLoraArguments`, *optional*): rank, scale, dropout, targets.

    Returns:
        `peft.LoraConfig`.

    Raises:
        `ValueError`: for a model type without default targets when `arguments.target_modules` is not given.
    """
    arguments = arguments if arguments is not None else ULMFiTLoraArguments()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    target_modules = arguments.target_modules
    target_parameters = None
    if target_modules is None:
        if model_type not in LORA_TARGET_MODULES_BY_MODEL_TYPE:
            raise ValueError(
                f"No default LoRA targets for model type {model_type!r} (known: "
                f"{sorted(LORA_TARGET_MODULES_BY_MODEL_TYPE)}): set ULMFiTLoraArguments.target_modules."
            )
        target_modules = list(LORA_TARGET_MODULES_BY_MODEL_TYPE[model_type])
    if model_type == "awd_lstm":
        target_parameters = list(AWD_LSTM_TARGET_PARAMETERS)
        if not arguments.adapt_embeddings and arguments.target_modules is None:
            target_modules = []
    head_names = {name.split(".")[0] for name, _ in model.named_children()}
    modules_to_save = [name for name in CLASSIFIER_HEADS if name in head_names] if arguments.train_head else []
    if modules_to_save and any(name.endswith("pooler") for name, _ in model.named_modules()):
        # BERT-style classifiers read the pooler (a dense layer that pretraining may have left untrained): it is
        # part of the head.
        modules_to_save.append("pooler")
    return import_extra("peft", "LoRA").LoraConfig(
        r=arguments.r,
        lora_alpha=arguments.lora_alpha,
        lora_dropout=arguments.lora_dropout,
        target_modules=target_modules,
        target_parameters=target_parameters,
        modules_to_save=modules_to_save or None,
        fan_in_fan_out=model_type == "gpt2",
    )


def ulmfit_lora_model(model: nn.Module, arguments: ULMFiTLoraArguments | None = None) -> PeftModel:
    """Wrap `model` with LoRA adapters (see `ulmfit_lora_config`); only adapters and a classifier head train.

    The result trains with `ULMFiTTrainer` like the full model: the adapters of layer k get layer k's rate, and
    gradual unfreezing unfreezes adapters from the top down.

    Args:
        model (`nn.Module`): the model to adapt (it is modified in place, as `peft.get_peft_model` does).
        arguments (`ULMFiTLoraArguments`, *optional*): rank, scale, dropout, targets.

    Returns:
        `peft.PeftModel`.

    Example:

    ```python
    >>> from tl_nlp import AWDLSTMConfig, AWDLSTMForSequenceClassification, ulmfit_lora_model
    >>> model = AWDLSTMForSequenceClassification(AWDLSTMConfig(vocab_size=100, embedding_size=8, hidden_size=16))
    >>> peft_model = ulmfit_lora_model(model)
    >>> trainable, total = peft_model.get_nb_trainable_parameters()
    ```
    """
    return import_extra("peft", "LoRA").get_peft_model(model, ulmfit_lora_config(model, arguments))
