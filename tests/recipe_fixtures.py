"""Tiny data and checkpoints for the recipe tests: labelled reviews, a general corpus, BERT/GPT-2 folders."""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

GOOD = ["great", "wonderful", "moving", "funny", "superb"]
BAD = ["awful", "dull", "boring", "terrible", "bad"]


def write_corpora(root: Path) -> dict[str, Path]:
    """train.csv (60 rows, string labels neg/pos), test.jsonl (20 rows), general.txt (200 lines)."""
    rng = random.Random(0)
    rows = []
    for index in range(80):
        label = index % 2
        words = [rng.choice(GOOD if label else BAD) for _ in range(3)]
        rows.append(
            {
                "text": f"The film was {words[0]} and {words[1]} , really {words[2]} .",
                "label": "neg pos".split()[label],
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    paths = {"train": root / "train.csv", "test": root / "test.jsonl", "general": root / "general.txt"}
    datasets.Dataset.from_list(rows[:60]).to_csv(paths["train"])
    datasets.Dataset.from_list(rows[60:]).to_json(paths["test"])
    lines = [f"the cat sat on the mat number {i} and it was {rng.choice(GOOD + BAD)} ." for i in range(200)]
    paths["general"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def _word_tokenizer(texts: list[str], special: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token=special[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special, show_progress=False))
    return tokenizer


def save_tiny_bert(folder: Path, texts: list[str]) -> Path:
    """A 2-layer BertForMaskedLM with a word-level tokenizer ([CLS] text [SEP]) trained on `texts`."""
    backend = _word_tokenizer(texts, ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _save_word_level_lm(folder: Path, texts: list[str], special_tokens: dict[str, str], build) -> Path:
    """`build(vocab_size)`'s model (seeded), saved with a word-level tokenizer trained on `texts` whose special tokens
    are `special_tokens` (`{"unk_token": "<unk>", ...}`, ids in that order)."""
    backend = _word_tokenizer(texts, list(special_tokens.values()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=64, **special_tokens)
    torch.manual_seed(0)
    build(backend.get_vocab_size()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_gpt2(folder: Path, texts: list[str]) -> Path:
    """A 2-layer GPT2LMHeadModel with a word-level tokenizer (no pad token, as GPT-2) trained on `texts`."""
    sizes = dict(n_embd=16, n_layer=2, n_head=2, n_positions=64, eos_token_id=1, bos_token_id=1)
    return _save_word_level_lm(
        folder,
        texts,
        {"unk_token": "<|unk|>", "eos_token": "<|endoftext|>"},
        lambda vocab_size: GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, **sizes)),
    )


def save_tiny_gemma3(folder: Path, texts: list[str]) -> Path:
    """A 2-layer Gemma-3 text model (an architecture without LoRA targets of our own) with a word-level tokenizer."""
    sizes = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=8, max_position_embeddings=64, pad_token_id=1, eos_token_id=2, bos_token_id=2,
    )  # fmt: skip
    return _save_word_level_lm(
        folder,
        texts,
        {"unk_token": "<unk>", "pad_token": "<pad>", "eos_token": "<eos>"},
        lambda vocab_size: Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=vocab_size, **sizes)),
    )
