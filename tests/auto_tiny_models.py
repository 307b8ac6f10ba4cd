"""Tiny models for every architecture in transformers' text Auto mappings, and an independent check of layer groups.

`auto_model_classes()` lists (mapping, model type, class name) for the sequence-classification, causal-LM and
masked-LM mappings. `build_tiny_model` shrinks the architecture's default configuration (every size argument its
config accepts set small) and builds the class; architectures that cannot be built that way (composite multimodal
configs, extra packages, sizes that must satisfy their own constraints) raise `Unbuildable` with the reason, so the
sweep can count them.

`data_flow_violations` checks groups against module forward hooks (a different mechanism from the one
`layer_groups` uses): block groups are entered in order, the embeddings are called before the first block, and
every parameter of the head is used after the last block has begun.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

import torch
from torch import nn
from transformers.models.auto import configuration_auto, modeling_auto

from tl_nlp.training.layer_groups import _dummy_input_candidates

MAPPINGS = (
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
)

# Size arguments under the names configs use for them; each config gets those its __init__ accepts.
SIZES = {
    "vocab_size": 99,
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "emb_dim": 32, "dim": 32, "embed_dim": 32, "n_embed": 32,
    "word_embed_proj_dim": 32, "embedding_size": 32, "input_embedding_size": 32,
    "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "n_layers": 2, "encoder_layers": 2, "decoder_layers": 2,
    "num_decoder_layers": 2, "num_encoder_layers": 2,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
    "num_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "d_kv": 8,
    "intermediate_size": 64, "ffn_dim": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "d_ff": 64,
    "hidden_dim": 64, "n_inner": 64, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "max_position_embeddings": 128, "n_positions": 128, "n_ctx": 128,
    # Rotary and multi-head latent attention sizes that must fit the tiny heads.
    "rotary_dim": 4, "qk_rope_head_dim": 4, "qk_nope_head_dim": 4, "v_head_dim": 8, "kv_lora_rank": 16,
    "q_lora_rank": 16,
    # Hybrid stacks: at least one attention layer among two (or the attention mask has nothing to size it).
    "full_attention_interval": 2, "attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2,
    "expert_layer_offset": 1, "block_types": ["recurrent", "attention"],
    # Perceiver's defaults build a 200M-parameter model.
    "d_latents": 32, "num_latents": 8, "num_self_attends_per_block": 2, "num_blocks": 1,
    "num_self_attention_heads": 2, "num_cross_attention_heads": 2,
    # Vocabularies and state sizes that default to hundreds of thousands of rows or a large Mamba mixer.
    "entity_vocab_size": 10, "entity_emb_size": 16, "vocab_size_per_layer_input": 99,
    "hidden_size_per_layer_input": 8, "mamba_d_ssm": 32, "mamba_n_heads": 4, "mamba_d_state": 8,
    "mamba_chunk_size": 8,
    "num_labels": 2, "pad_token_id": 0, "tie_word_embeddings": True,
}  # fmt: skip


class Unbuildable(Exception):
    """This architecture cannot be built here with a tiny generic configuration (the message says why)."""


def auto_model_classes() -> list[tuple[str, str, str]]:
    rows = []
    for mapping in MAPPINGS:
        for model_type, class_name in getattr(modeling_auto, mapping).items():
            if isinstance(class_name, (list, tuple)):
                class_name = class_name[0]
            rows.append(
                (mapping.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").lower(), model_type, class_name)
            )
    return rows


def build_tiny_model(model_type: str, class_name: str) -> nn.Module:
    try:
        config_class = configuration_auto.CONFIG_MAPPING[model_type]
        module = importlib.import_module(
            f"transformers.models.{configuration_auto.model_type_to_module_name(model_type)}"
        )
        model_class = getattr(module, class_name)
    except Exception as exception:
        raise Unbuildable(f"import: {type(exception).__name__}: {exception}") from None
    if getattr(config_class, "sub_configs", None):
        raise Unbuildable("composite configuration (sub-configs)")
    accepted = set(inspect.signature(config_class.__init__).parameters) | set(
        getattr(config_class, "attribute_map", {})
    )
    kwargs = {key: value for key, value in SIZES.items() if key in accepted}
    torch.manual_seed(0)
    try:
        config = config_class(**kwargs)
        return model_class(config).eval()
    except Exception as exception:
        raise Unbuildable(f"tiny build: {type(exception).__name__}: {str(exception)[:120]}") from None


def data_flow_violations(model: nn.Module, groups, inputs: dict) -> list[str]:
    """What contradicts data-flow order in `groups`, seen through module forward hooks (empty when none).

    Module hooks do not see a weight read without calling its module (MobileBERT's decoder reads the tied word
    embeddings directly): a head parameter held by a module that is never called is not counted against."""
    calls: dict[int, list[int]] = {}
    clock = [0]

    def record(module, args):
        clock[0] += 1
        calls.setdefault(id(module), []).append(clock[0])

    handles = [module.register_forward_pre_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    # Modules holding each parameter directly (a tied parameter has several).
    holders: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            holders.setdefault(id(parameter), []).append(module)
    parameters = dict(model.named_parameters())

    def times(name):
        return [t for module in holders[id(parameters[name])] for t in calls.get(id(module), [])]

    problems = []
    blocks = [group for group in groups if group.name not in ("embeddings", "head")]
    entries = []
    for group in blocks:
        used = [min(times(name)) for name in group.parameter_names if times(name)]
        entries.append(min(used) if used else None)
    called = [entry for entry in entries if entry is not None]
    if called != sorted(called):
        problems.append(f"blocks entered out of order: {[g.name for g in blocks]} at {entries}")
    if not called:
        return problems
    first_block, last_block = min(called), max(called)
    for group in groups:
        for name in group.parameter_names:
            used = times(name)
            if not used:
                continue
            if group.name == "embeddings" and min(used) > first_block:
                problems.append(f"{name} is in the embeddings but first used after the first block")
            bypassed = any(id(module) not in calls for module in holders[id(parameters[name])])
            if group.name == "head" and max(used) < last_block and not bypassed:
                problems.append(f"{name} is in the head but never used after the last block begins")
    return problems


def runnable_inputs(model: nn.Module) -> dict | None:
    """The first of the inputs `layer_groups` tries that the model runs on (None if none does)."""
    for inputs in _dummy_input_candidates(model):
        try:
            with torch.no_grad():
                model(**inputs)
        except Exception:  # noqa: S112 (the next candidate may work)
            continue
        return inputs
    return None


def one_class_per_model_type() -> list[tuple[str, str, str]]:
    """(mapping, model type, class) with each model type once, from the first mapping that has it."""
    seen, rows = set(), []
    for row in auto_model_classes():
        if row[1] not in seen:
            seen.add(row[1])
            rows.append(row)
    return rows


def runnable_tiny_models(mapping: str) -> Iterator[tuple[str, str, nn.Module, dict]]:
    """(model type, class name, tiny model, inputs it runs on) for each model type of `mapping` (as
    `one_class_per_model_type` lists them) that builds and runs on the tiny inputs; the others are skipped. Torch uses
    one thread meanwhile (tiny models: far faster than two threads fighting over a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for row_mapping, model_type, class_name in one_class_per_model_type():
            if row_mapping != mapping:
                continue
            try:
                model = build_tiny_model(model_type, class_name)
            except Unbuildable:
                continue
            inputs = runnable_inputs(model)
            if inputs is not None:
                yield model_type, class_name, model, inputs
    finally:
        torch.set_num_threads(threads)
