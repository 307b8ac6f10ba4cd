"""Tiny models and datasets shared by the ULMFiT-technique tests (layer groups, LRs, unfreezing, trainer, DDP)."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification

VOCAB = 64


def tiny_bert(num_labels: int = 2, dropout: float = 0.1, layers: int = 2) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


def tiny_awd_lstm_lm() -> AWDLSTMForCausalLM:
    return AWDLSTMForCausalLM(AWDLSTMConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=24, num_hidden_layers=3))


def tiny_awd_lstm_classifier() -> AWDLSTMForSequenceClassification:
    config = AWDLSTMConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=24, num_hidden_layers=3, num_labels=2)
    return AWDLSTMForSequenceClassification(config)


def tiny_models() -> dict:
    """name -> (factory, expected group names). Every factory builds in well under a second."""
    decoder = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    two_layers = ["embeddings", "layer 0", "layer 1", "head"]
    return {
        "awd_lstm_lm": (tiny_awd_lstm_lm, ["layer 0", "layer 1", "layer 2", "head"]),  # as fastai: tied matrix on top
        "awd_lstm_classifier": (tiny_awd_lstm_classifier, ["embeddings", "layer 0", "layer 1", "layer 2", "head"]),
        "bert": (tiny_bert, two_layers),
        "roberta": (
            lambda: RobertaForSequenceClassification(
                RobertaConfig(
                    vocab_size=VOCAB,
                    hidden_size=16,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=32,
                    max_position_embeddings=40,
                    pad_token_id=1,
                )
            ),
            two_layers,
        ),
        "distilbert": (
            lambda: DistilBertForSequenceClassification(
                DistilBertConfig(
                    vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=32
                )
            ),
            two_layers,
        ),
        "electra": (
            lambda: ElectraForSequenceClassification(
                ElectraConfig(
                    vocab_size=VOCAB,
                    embedding_size=8,
                    hidden_size=16,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=32,
                    max_position_embeddings=32,
                )
            ),
            two_layers,
        ),
        "gpt2": (
            lambda: GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32)),
            two_layers,
        ),
        "llama_lm": (lambda: LlamaForCausalLM(LlamaConfig(**decoder)), two_layers),
        "llama_classifier": (lambda: LlamaForSequenceClassification(LlamaConfig(**decoder, num_labels=2)), two_layers),
        "mistral": (lambda: MistralForCausalLM(MistralConfig(**decoder)), two_layers),
        "qwen2": (lambda: Qwen2ForCausalLM(Qwen2Config(**decoder)), two_layers),
    }


def classification_dataset(size: int = 32, length: int = 8, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, VOCAB, (size, length), generator=generator)
    # A learnable rule so that losses move: the label is whether token 5 appears more than token 6.
    labels = ((input_ids == 5).sum(1) > (input_ids == 6).sum(1)).long()
    return Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": labels.tolist()})


def language_model_dataset(size: int = 16, length: int = 12, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB, (size, length), generator=generator)
    return Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": input_ids.tolist()})


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
