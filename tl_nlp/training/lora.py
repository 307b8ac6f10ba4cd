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
- Any other architecture: every linear layer (`nn.Linear`, transformers' `Conv1D`; not a mixture-of-experts router)
  outside the head, as peft's `target_modules="all-linear"` picks them (QLoRA's finding, Dettmers et al. 2023:
  adapting every linear layer is what matches full fine-tuning), but with the whole head left out: peft's shorthand
  leaves out only a head module named `classifier` or `score` itself, and would adapt the layers inside a head such
  as RoBERTa's or T5's. `tests/test_peft_ulmfit.py` checks this against peft on every sequence-classification
  architecture of transformers that builds small.

The head trained in full is every child of the model beside its backbone (`base_model_prefix`) that has parameters,
and the pooler: `classifier` / `score`, but also DistilBERT's `pre_classifier`, T5's and BART's
`classification_head`, DeBERTa's `pooler`. peft's `task_type="SEQ_CLS"` saves `classifier` and `score` only, so
the others would stay at their random initialisation, frozen. A language model's output layer is never part of it.

Adapters save, load (`PeftModel.from_pretrained`), merge (`merge_and_unload`) and push as peft does it; see
`tl_nlp.hub_adapters` for a folder with a model card.
"""

from __future__ import annotations

from collections.abc import Sequence
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
# Heads that a classifier trains in full (they are new, so there is nothing to adapt), for a model that does not say
# which of its children is the backbone (`head_modules`).
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


def _output_embeddings(model: nn.Module) -> nn.Module | None:
    """A language model's output layer (never adapted, never a head to train in full); None for a classifier."""
    return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None


def head_modules(model: nn.Module) -> list[str]:
    """The names of the modules a LoRA classifier trains in full: every top-level child with parameters beside the
    backbone (the child `base_model_prefix` names) and the output embeddings, or, for a model without a backbone
    child, those of `CLASSIFIER_HEADS` it has; then `pooler` wherever the model has one (a BERT-style classifier reads
    the pooler, a dense layer that pretraining may have left untrained)."""
    output_embeddings = _output_embeddings(model)
    backbone = getattr(model, "base_model_prefix", "")
    children = dict(model.named_children())
    if backbone and backbone in children:
        heads = [
            name
            for name, child in children.items()
            if name != backbone and child is not output_embeddings and any(True for _ in child.parameters())
        ]
    else:
        heads = [name for name in CLASSIFIER_HEADS if name in children]
    if heads and "pooler" not in heads and any(name.split(".")[-1] == "pooler" for name, _ in model.named_modules()):
        heads.append("pooler")
    return heads


def linear_targets(model: nn.Module, heads: list[str]) -> list[str]:
    """Every linear layer (`nn.Linear`, `Conv1D`) of `model` outside `heads` and its output embeddings, as peft's
    `target_modules` names them: by their last name part (`q_proj`) where no other module's name ends the same way
    (peft would adapt it too: a head's `dense`, a block list's `0`), by their full name otherwise."""
    from transformers.pytorch_utils import Conv1D

    output_embeddings = _output_embeddings(model)

    def in_head(name: str) -> bool:
        parts = name.split(".")
        return parts[0] in heads or ("pooler" in heads and "pooler" in parts)

    # A mixture-of-experts router chooses experts (some are nn.Linear subclasses returning a tuple): not adapted.
    linears = [
        (name, module)
        for name, module in model.named_modules()
        if name and isinstance(module, (nn.Linear, Conv1D)) and "router" not in type(module).__name__.lower()
    ]
    targets = [name for name, module in linears if not in_head(name) and module is not output_embeddings]
    short = {name.split(".")[-1] for name in targets}
    chosen = set(targets)
    ambiguous = any(name.split(".")[-1] in short and name not in chosen for name, _ in model.named_modules())
    return targets if ambiguous else sorted(short)


def ulmfit_lora_config(
    model: nn.Module, arguments: ULMFiTLoraArguments | None = None, trained_tokens: Sequence[int] | None = None
) -> LoraConfig:
    """The `LoraConfig` that adapts `model`'s blocks (and AWD-LSTM's embeddings) and trains a classifier's head.

    Args:
        model (`nn.Module`): a transformers model (AWD-LSTM, BERT-style, GPT-2, Llama-style...).
        arguments (`ULMFiTLoraArguments`, *optional*): rank, scale, dropout, targets.
        trained_tokens (`Sequence[int]`, *optional*): token ids whose input embeddings train in full, the rest of
            the embedding matrix frozen (peft's `trainable_token_indices`): tokens added to the tokenizer, such as
            GPT's delimiter and extract tokens, have no pretrained embedding to keep.

    Returns:
        `peft.LoraConfig`.

    Raises:
        `ValueError`: for a model with no linear layer to adapt outside its head when `arguments.target_modules` is
            not given, or for a name in `arguments.target_modules` that no module of the model has.
    """
    arguments = arguments if arguments is not None else ULMFiTLoraArguments()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    heads = head_modules(model)
    target_modules = arguments.target_modules
    target_parameters = None
    if target_modules is not None:
        # peft matches a name in the list to a module whose full name is it or ends with "." + it.
        names = [name for name, _ in model.named_modules() if name]
        unmatched = [t for t in target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
        if unmatched:
            linears = sorted({name.split(".")[-1] for name in linear_targets(model, heads)})
            raise ValueError(
                f"target_modules {unmatched} name no module of {type(model).__name__}; its linear layers outside "
                f"the head end in: {', '.join(linears) or 'none'}"
            )
    elif model_type in LORA_TARGET_MODULES_BY_MODEL_TYPE:
        target_modules = list(LORA_TARGET_MODULES_BY_MODEL_TYPE[model_type])
    else:
        target_modules = linear_targets(model, heads)
        if not target_modules:
            raise ValueError(
                f"No linear layer to adapt outside the head ({', '.join(heads) or 'none'}) of "
                f"{type(model).__name__}: set ULMFiTLoraArguments.target_modules."
            )
    if model_type == "awd_lstm":
        target_parameters = list(AWD_LSTM_TARGET_PARAMETERS)
        if not arguments.adapt_embeddings and arguments.target_modules is None:
            target_modules = []
    modules_to_save = heads if arguments.train_head else []
    return import_extra("peft", "LoRA").LoraConfig(
        r=arguments.r,
        lora_alpha=arguments.lora_alpha,
        lora_dropout=arguments.lora_dropout,
        target_modules=target_modules,
        target_parameters=target_parameters,
        modules_to_save=modules_to_save or None,
        trainable_token_indices=list(trained_tokens) if trained_tokens else None,
        fan_in_fan_out=model_type == "gpt2",
    )


def ulmfit_lora_model(
    model: nn.Module, arguments: ULMFiTLoraArguments | None = None, trained_tokens: Sequence[int] | None = None
) -> PeftModel:
    """Wrap `model` with LoRA adapters (see `ulmfit_lora_config`); only adapters and a classifier head train.

    The result trains with `ULMFiTTrainer` like the full model: the adapters of layer k get layer k's rate, and
    gradual unfreezing unfreezes adapters from the top down.

    Args:
        model (`nn.Module`): the model to adapt (it is modified in place, as `peft.get_peft_model` does).
        arguments (`ULMFiTLoraArguments`, *optional*): rank, scale, dropout, targets.
        trained_tokens (`Sequence[int]`, *optional*): token ids whose input embeddings train in full (see
            `ulmfit_lora_config`).

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
    return import_extra("peft", "LoRA").get_peft_model(model, ulmfit_lora_config(model, arguments, trained_tokens))
