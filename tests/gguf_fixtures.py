"""A tiny Llama checkpoint written as a GGUF file with the `gguf` package (no download): a byte-level BPE tokenizer
trained here, two decoder layers, the matrices stored as Q8_0 blocks so that loading has to dequantise them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

CORPUS = ["A great film, I loved it.", "Awful. I hated it.", "The cat sat on the mat."] * 8
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 32, 64, 2, 4, 2


def train_byte_level_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Writes the file and returns the float weights (GGUF names) before quantisation."""
    import gguf

    tokenizer = train_byte_level_bpe()
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    # The merges as the tokenizer serialises them ("a b" or ["a", "b"] depending on the tokenizers version).
    merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]]
    # Q8_0 blocks are 32 values along the last axis, so every width here is a multiple of 32.
    vocab_size = (len(tokens) + 31) // 32 * 32
    tokens += [f"<extra_{index}>" for index in range(vocab_size - len(tokens))]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t.startswith("<") else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<s>"])
    writer.add_eos_token_id(vocab["</s>"])
    writer.add_unk_token_id(vocab["<unk>"])
    writer.add_pad_token_id(vocab["</s>"])
    writer.add_add_bos_token(False)

    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}

    def matrix(name: str, rows: int, columns: int) -> None:
        # numpy shape (rows, columns) = torch's (out_features, in_features); GGUF stores the reverse order of dims.
        weights[name] = (rng.standard_normal((rows, columns)) * 0.2).astype(np.float32)
        quantized = gguf.quants.quantize(weights[name], gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def vector(name: str, size: int) -> None:
        weights[name] = (1.0 + 0.1 * rng.standard_normal(size)).astype(np.float32)
        writer.add_tensor(name, weights[name])

    head_dim = HIDDEN // HEADS
    matrix("token_embd.weight", vocab_size, HIDDEN)
    for layer in range(LAYERS):
        vector(f"blk.{layer}.attn_norm.weight", HIDDEN)
        matrix(f"blk.{layer}.attn_q.weight", HIDDEN, HIDDEN)
        matrix(f"blk.{layer}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{layer}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{layer}.attn_output.weight", HIDDEN, HIDDEN)
        vector(f"blk.{layer}.ffn_norm.weight", HIDDEN)
        matrix(f"blk.{layer}.ffn_gate.weight", INTERMEDIATE, HIDDEN)
        matrix(f"blk.{layer}.ffn_up.weight", INTERMEDIATE, HIDDEN)
        matrix(f"blk.{layer}.ffn_down.weight", HIDDEN, INTERMEDIATE)
    vector("output_norm.weight", HIDDEN)
    matrix("output.weight", vocab_size, HIDDEN)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights
