"""An auxiliary language-model objective while fine-tuning a classifier (GPT, Radford et al. 2018, section 3.2).

`ClassifierWithAuxiliaryLM` wraps a classifier and adds a next-token head that shares the classifier's backbone and
is tied to its input embeddings; its loss is `classification_loss + auxiliary_lm_weight * lm_loss` on the same text.
`AuxiliaryLMTrainer` trains it with every ULMFiT technique and logs both parts next to `loss`.

- GPT-style classifiers (GPT-2, Llama...): one forward pass; the last hidden states feed both the classifier's own
  head and the tied LM head (GPT-2's `lm_head`).
- AWD-LSTM: the classifier reads a document with BPT3C and concat pooling, which keeps no per-token outputs, so the
  LM term comes from a second pass of the same encoder over the batch, through output dropout and a decoder tied to
  the embeddings (the LM's decoder), as in ULMFiT's language model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput

from ..models.awd_lstm.modeling_awd_lstm import LockedDropout
from .classification_trainer import ClassificationTrainer

LOSS_PARTS = ("classification_loss", "lm_loss")


@dataclass
class AuxiliaryLMOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, with `labels`): `classification_loss + weight * lm_loss`.
        logits (`torch.FloatTensor` of shape `(batch, num_labels)`): the classifier's scores.
        classification_loss (`torch.FloatTensor` of shape `()`, with `labels`): the classifier's own loss.
        lm_loss (`torch.FloatTensor` of shape `()`, with `labels` and a weight > 0): next-token cross-entropy over
            the real tokens of the batch.
        raw_last_hidden_state, dropped_last_hidden_state (`torch.FloatTensor`, AWD-LSTM in training mode): the
            classifier's, passed on so that the trainer adds AR/TAR as it does for the classifier alone.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    raw_last_hidden_state: torch.FloatTensor | None = None
    dropped_last_hidden_state: torch.FloatTensor | None = None


class ClassifierWithAuxiliaryLM(nn.Module):
    """A classifier trained with an auxiliary next-token loss on its input text, sharing its backbone.

    The LM head is the transpose of the classifier's input embeddings (tied, as in GPT-2 and AWD-LSTM language
    models) plus, for AWD-LSTM, a bias and output dropout. Its only new parameter is that bias, so the state dict is
    the classifier's plus `lm_head.bias`; `save_pretrained` saves the classifier alone, ready for `from_pretrained`.

    Args:
        classifier (`nn.Module`): an `AWDLSTMForSequenceClassification` or a transformers
            `...ForSequenceClassification` of a causal LM (GPT-2, Llama...), possibly wrapped by PEFT.
        auxiliary_lm_weight (`float`, defaults to 0.5): lambda in `classification_loss + lambda * lm_loss` (>= 0);
            0 skips the LM term entirely (exactly plain classifier training).
        lm_bias (`torch.Tensor`, *optional*): AWD-LSTM only: the decoder bias of the language model the classifier
            came from (`lm.decoder.bias`); zeros otherwise.

    Example:

    ```python
    >>> import torch
    >>> from transformers import GPT2Config, GPT2ForSequenceClassification
    >>> from tl_nlp import ClassifierWithAuxiliaryLM
    >>> config = GPT2Config(vocab_size=100, n_embd=16, n_layer=2, n_head=2, pad_token_id=0)
    >>> model = ClassifierWithAuxiliaryLM(GPT2ForSequenceClassification(config), auxiliary_lm_weight=0.5)
    >>> out = model(torch.randint(1, 100, (2, 10)), labels=torch.tensor([0, 1]))
    >>> bool(torch.isclose(out.loss, out.classification_loss + 0.5 * out.lm_loss))
    True
    ```
    """

    # The loss is a batch mean: Trainer must not rescale it by `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(self, classifier: nn.Module, auxiliary_lm_weight: float = 0.5, lm_bias: torch.Tensor | None = None):
        super().__init__()
        if not auxiliary_lm_weight >= 0:
            raise ValueError(
                f"auxiliary_lm_weight must be >= 0 (GPT uses 0.5; 0 is plain classifier training), got "
                f"{auxiliary_lm_weight}."
            )
        config = classifier.config
        self.classifier = classifier
        self.auxiliary_lm_weight = float(auxiliary_lm_weight)
        self.is_awd_lstm = config.model_type == "awd_lstm"
        vocab_size = classifier.get_input_embeddings().weight.size(0)
        if lm_bias is not None and not self.is_awd_lstm:
            raise ValueError("lm_bias is for AWD-LSTM; GPT-style LM heads have no bias.")
        if lm_bias is not None and lm_bias.shape != (vocab_size,):
            raise ValueError(
                f"lm_bias has shape {tuple(lm_bias.shape)}, the vocabulary has {vocab_size} tokens: pass the decoder "
                "bias of the language model this classifier was made from."
            )
        # Registered after the classifier, so that `layer_groups` puts its bias in the top group.
        self.lm_head = TiedLMHead(
            vocab_size,
            output_dropout=config.scaled_dropout("output_dropout") if self.is_awd_lstm else 0.0,
            bias=(lm_bias if lm_bias is not None else torch.zeros(vocab_size)) if self.is_awd_lstm else None,
        )
        self.train(classifier.training)  # the LM head's dropout follows the classifier's mode

    @property
    def config(self):
        """The classifier's configuration."""
        return self.classifier.config

    def get_base_model(self) -> nn.Module:
        """The wrapped classifier (`layer_groups` groups the wrapper like it; the LM bias joins the head)."""
        return self.classifier

    def get_input_embeddings(self) -> nn.Module:
        return self.classifier.get_input_embeddings()

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Save the classifier (without the auxiliary LM head) as `save_pretrained` does."""
        self.classifier.save_pretrained(save_directory, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> AuxiliaryLMOutput:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): token ids (right padding for GPT-style
                classifiers, which read the last real token).
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*): 1 for real tokens.
            labels (`torch.Tensor`, *optional*): class labels; the LM term is computed only with them.
        """
        with_lm = labels is not None and self.auxiliary_lm_weight > 0
        # Rows of several sequences (multiple choice, a pair in both orders): the LM term reads each sequence.
        lm_ids = input_ids.reshape(-1, input_ids.size(-1))
        lm_mask = attention_mask.reshape(lm_ids.shape) if attention_mask is not None else None
        if self.is_awd_lstm:
            outputs = self.classifier(input_ids, attention_mask=attention_mask, labels=labels, return_dict=True)
            hidden = None
            if with_lm:
                encoder = self.classifier.awd_lstm
                hidden = encoder(lm_ids, attention_mask=lm_mask, return_dict=True).last_hidden_state
        else:
            outputs = self.classifier(
                input_ids,
                attention_mask=attention_mask,
                labels=labels,
                output_hidden_states=with_lm,
                return_dict=True,
                **kwargs,
            )
            hidden = outputs.hidden_states[-1] if with_lm else None

        lm_loss = None
        if hidden is not None:
            logits = self.lm_head(hidden[:, :-1], self.get_input_embeddings().weight)
            targets = lm_ids[:, 1:]
            if lm_mask is not None:
                targets = targets.masked_fill(~lm_mask[:, 1:].bool(), -100)
            lm_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        loss = outputs.loss
        if loss is not None and lm_loss is not None:
            loss = loss + self.auxiliary_lm_weight * lm_loss
        return AuxiliaryLMOutput(
            loss=loss,
            logits=outputs.logits,
            classification_loss=outputs.loss,
            lm_loss=lm_loss,
            raw_last_hidden_state=getattr(outputs, "raw_last_hidden_state", None),
            dropped_last_hidden_state=getattr(outputs, "dropped_last_hidden_state", None),
        )


class TiedLMHead(nn.Module):
    """Next-token logits from hidden states and the (tied) input embedding matrix, passed in at each call so that
    no weight is shared between modules (the state dict saves as safetensors): `dropout(hidden) @ E.T + bias`."""

    def __init__(self, vocab_size: int, output_dropout: float = 0.0, bias: torch.Tensor | None = None):
        super().__init__()
        self.output_dropout = LockedDropout(output_dropout)
        self.bias = nn.Parameter(bias.detach().clone().float()) if bias is not None else None
        self.vocab_size = vocab_size

    def forward(self, hidden: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(hidden.dtype) if self.bias is not None else None
        return F.linear(self.output_dropout(hidden), embedding_weight, bias)


class AuxiliaryLMTrainer(ClassificationTrainer):
    """A `ClassificationTrainer` that logs the parts of an auxiliary-LM loss: `classification_loss` and `lm_loss`
    (means over the batches since the last log, next to Trainer's `loss`), and `eval_classification_loss` /
    `eval_lm_loss` at evaluation. Use it with a `ClassifierWithAuxiliaryLM`; everything else is `ULMFiTTrainer`'s
    (discriminative rates, STLR, gradual unfreezing), with the LM bias in the top layer group.

    Example:

    ```python
    >>> model = ClassifierWithAuxiliaryLM(classifier, auxiliary_lm_weight=0.5)  # doctest: +SKIP
    >>> trainer = AuxiliaryLMTrainer(model=model, args=args, train_dataset=train)  # doctest: +SKIP
    >>> trainer.train()  # logs loss, classification_loss and lm_loss  # doctest: +SKIP
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._loss_parts: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None
    ):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        parts = self._loss_parts["train" if model.training else "eval"]
        for key in LOSS_PARTS:
            value = outputs.get(key) if isinstance(outputs, dict) else None
            if value is not None:
                parts[key].append(value.detach().float())
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if ignore_keys is None:
            ignore_keys = list(getattr(self.model.config, "keys_to_ignore_at_inference", ["past_key_values"]))
        # The loss parts are logged, not predictions: keep them out of the logits that compute_metrics sees.
        return super().prediction_step(model, inputs, prediction_loss_only, list(ignore_keys) + list(LOSS_PARTS))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs or any(key.startswith("eval_") for key in logs):
            kind, prefix = ("train", "") if "loss" in logs else ("eval", "eval_")
            parts = self._loss_parts[kind]
            for key in LOSS_PARTS:
                if parts[key]:
                    mean = torch.stack(parts[key]).mean()
                    logs[prefix + key] = round(float(self.accelerator.gather(mean).mean()), 6)
            parts.clear()
        super().log(logs, start_time)
