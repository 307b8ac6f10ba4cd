"""ULMFiT layer groups: a model's parameters in ordered groups, bottom (embeddings) to top (head), in the order data
flows through the model.

One list of groups drives every technique: discriminative learning rates give each group its own rate, and gradual
unfreezing trains the top groups first. It is defined here once.

How the default groups are found, for any architecture:
- The stack(s) of blocks are the outermost `nn.ModuleList`s whose elements hold parameters (lists nested inside a
  block, such as MobileBERT's bottleneck FFNs, T5's sub-layers or a mixture of experts, are part of their block).
  Lists of bare embeddings or linear layers (one per codebook or output head) count only when there is nothing else.
  Equal-length lists whose elements are called interleaved (XLM's `attentions[i]`, `ffns[i]`, ...) form one block
  per index.
- One forward pass on a tiny input (the model's `dummy_inputs`, or `example_inputs`) records when each block is
  called and when each parameter is first and last read (a `TorchFunctionMode` sees every torch call that takes a
  parameter, whichever module owns it). Blocks are ordered by their first call: an encoder-decoder gets its encoder
  blocks, then its decoder blocks.
- Every parameter of a block goes with that block. Any other parameter goes, in this order of precedence: to the head
  when it is read after the last block (final norms, pooler, classifier, and a tied input/output embedding: fastai's
  `awd_lstm_lm_split` puts the tied embedding/decoder matrix in the top group too); to the embeddings when first read
  before the first block (embeddings, OPT's `project_in`, DeBERTa-v2's `rel_embeddings` when normalised there); to
  the block during whose call it is first read (DeBERTa-v2's `rel_embeddings` otherwise: not the head); between two
  blocks, to the earlier block when the module that holds it belongs to the earlier block's stack (T5's
  `encoder.final_layer_norm`) and to the later block otherwise (BART's `decoder.embed_positions`).
- A parameter the forward pass never reads goes with the parameters of its nearest enclosing module that the pass
  placed, when they are all in one group (PEFT's `original_module` next to `modules_to_save`). When even that fails,
  or the forward pass cannot run (a model without `dummy_inputs` and no `example_inputs`), parameters outside the
  blocks are placed by registration order and a warning names them.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..extras import is_peft_model

try:
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # torch built without distributed support
    _DTensor = None

EMBEDDINGS, HEAD = "embeddings", "head"


@dataclass(frozen=True)
class LayerGroup:
    """One ULMFiT layer group.

    Args:
        name (`str`): a label for tables and logs, e.g. `"embeddings"`, `"layer 3"`, `"decoder layer 0"`, `"head"`.
        parameter_names (`tuple[str, ...]`): names as `model.named_parameters()` spells them.
    """

    name: str
    parameter_names: tuple[str, ...]


def layer_groups(
    model: nn.Module,
    groups: Sequence[str | Sequence[str]] | None = None,
    example_inputs: Mapping[str, Any] | None = None,
) -> list[LayerGroup]:
    """Split a model's parameters into ULMFiT layer groups, ordered bottom (embeddings) to top (head).

    Without `groups`, the groups follow the order data flows through the model (see the module docstring for the
    rules): `"embeddings"` (everything read before the first block), one group per block (`"layer 0"`, ...; with
    several stacks, named after them: `"encoder layer 0"`, ..., `"decoder layer 0"`, ...), and `"head"` (everything
    read after the last block). A PEFT-wrapped model is grouped like the model it wraps: LoRA parameters land in the
    group of the layer they adapt. A wrapper that exposes `get_base_model()` (and is not a PEFT model) is grouped like
    the model it wraps, with its own parameters in the head. Tied weights appear once. Empty groups are dropped, so
    a language model whose embedding is tied to its decoder (AWD-LSTM, as fastai's `awd_lstm_lm_split`) starts with
    `"layer 0"`. The forward pass runs once per model (results are cached on the model object).

    Args:
        model (`nn.Module`): the model, possibly wrapped by PEFT or DDP.
        groups (`Sequence[str | Sequence[str]]`, *optional*): your own groups, bottom to top. Each group is one
            pattern or a list of patterns; a pattern matches a parameter name when it is a module prefix of it
            (`"bert.encoder.layer.1"` matches `bert.encoder.layer.1.output.dense.weight` but not layer 10's) or
            a regular expression matching the whole name (`r"bert\\.encoder\\.layer\\.[0-2]\\..*"`).
        example_inputs (`Mapping[str, Any]`, *optional*): keyword arguments for one forward pass that records the
            data flow; the model's `dummy_inputs` (transformers models) otherwise.

    Returns:
        `list[LayerGroup]`: every parameter of `model` in exactly one group.

    Raises:
        `ValueError`: if a custom group matches no parameter, or a parameter is matched by none or several groups,
            or no stack of blocks can be found.

    Example:

    ```python
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from tl_nlp import layer_groups
    >>> config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    ...                     intermediate_size=32)
    >>> [group.name for group in layer_groups(BertForSequenceClassification(config))]
    ['embeddings', 'layer 0', 'layer 1', 'head']
    ```
    """
    names = [name for name, _ in model.named_parameters()]
    if groups is not None:
        return _custom_layer_groups(names, groups)

    traced, extra_head = _traced_module(model)
    stacks = _find_stacks(traced)
    if not stacks:
        raise ValueError(
            f"Cannot find a stack of blocks (an nn.ModuleList) in {type(model).__name__}: pass the layer groups "
            "yourself with `groups=[[...embedding prefixes], [...layer 0 prefixes], ..., [...head prefixes]]`."
        )
    flow = _data_flow(traced, stacks, example_inputs)
    blocks = _ordered_blocks(stacks, flow)
    placement, guessed = _place_parameters(traced, blocks, flow)

    name_of = {id(parameter): name for name, parameter in model.named_parameters()}
    members: dict[str, list[str]] = {EMBEDDINGS: [], HEAD: []}
    members.update({block.name: [] for block in blocks})
    for parameter_id, group_name in placement.items():
        members[group_name].append(name_of[parameter_id])
    members[HEAD] += [name_of[id(parameter)] for parameter in extra_head]
    if guessed:
        reason = flow.error or "the forward pass did not read them and their module gives no hint"
        warnings.warn(
            f"layer_groups could not place {len(guessed)} parameter(s) of {type(model).__name__} by data flow "
            f"({reason}); guessed from registration order: "
            + ", ".join(f"{name_of[parameter_id]} -> {group}" for parameter_id, group in guessed.items())
            + ". Pass `example_inputs=` for a forward pass, or `groups=` to place them yourself.",
            stacklevel=2,
        )
    order = {name: position for position, name in enumerate(names)}
    ordered_names = [EMBEDDINGS, *(block.name for block in blocks), HEAD]
    result = [LayerGroup(name, tuple(sorted(members[name], key=order.__getitem__))) for name in ordered_names]
    return [group for group in result if group.parameter_names]


# ---- what to trace -----------------------------------------------------------------------------------------------


def _traced_module(model: nn.Module) -> tuple[nn.Module, list[nn.Parameter]]:
    """The module whose forward pass is traced, and the wrapper's own parameters (they join the head).

    DDP-style wrappers (`.module`) are looked through. A PEFT model is traced as it is (its forward adds the prompt
    and adapter computations); another wrapper exposing `get_base_model()` (such as an auxiliary LM head around a
    classifier) is traced through the model it wraps, and its own parameters go to the head."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    get_base_model = getattr(model, "get_base_model", None)
    if get_base_model is None or is_peft_model(model):
        return model, []
    base = get_base_model()
    inside = {id(parameter) for parameter in base.parameters()}
    return base, [parameter for parameter in model.parameters() if id(parameter) not in inside]


# ---- stacks of blocks ----------------------------------------------------------------------------------------------


@dataclass
class _Stack:
    path: str
    elements: list[nn.Module]


@dataclass
class _Block:
    name: str
    modules: list[nn.Module]
    stack_parents: list[str]
    parameter_ids: set[int] = field(default_factory=set)
    start: int | None = None
    end: int | None = None


def _holds_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _find_stacks(model: nn.Module) -> list[_Stack]:
    """The outermost ModuleLists whose elements hold parameters, in registration order."""
    candidates = [
        _Stack(path, list(module))
        for path, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and any(_holds_parameters(element) for element in module)
    ]
    candidates = [
        stack
        for stack in candidates
        if not any(other is not stack and stack.path.startswith(other.path + ".") for other in candidates)
    ]
    basic = (nn.Embedding, nn.EmbeddingBag, nn.Linear)

    def is_basic(stack: _Stack) -> bool:
        return all(isinstance(element, basic) for element in stack.elements if _holds_parameters(element))

    composite = [stack for stack in candidates if not is_basic(stack)]
    return composite or candidates


# ---- the forward pass --------------------------------------------------------------------------------------------


@dataclass
class _DataFlow:
    """Event counters of one forward pass: per block module its (first start, last end), per parameter its
    (first read, last read). `error` says why there is no trace."""

    module_spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    parameter_reads: dict[int, tuple[int, int]] = field(default_factory=dict)
    error: str | None = None


class _ParameterReads(TorchFunctionMode):
    """Records, by parameter name, the first and last torch call that reads each parameter of `model`.

    Parameters are recognised by identity, and the map is rebuilt when an unknown `nn.Parameter` is read: FSDP2
    registers gathered copies in place of its sharded parameters during the forward pass, under the same names.
    Reads of sharded DTensors are FSDP's own bookkeeping (the all-gather), not data flow, and are left out."""

    def __init__(self, model: nn.Module, clock: list[int], reads: dict[str, tuple[int, int]]):
        super().__init__()
        self.model, self.clock, self.reads = model, clock, reads
        self.names = {id(parameter): name for name, parameter in model.named_parameters()}
        self.unknown: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.clock[0] += 1
        now = self.clock[0]
        for value in _tensors(args, kwargs):
            if not isinstance(value, nn.Parameter) or _is_dtensor(value):
                continue
            if id(value) not in self.names and id(value) not in self.unknown:
                self.names.update({id(p): name for name, p in self.model.named_parameters()})
                if id(value) not in self.names:
                    self.unknown.add(id(value))
            name = self.names.get(id(value))
            if name is not None:
                first, _ = self.reads.get(name, (now, now))
                self.reads[name] = (first, now)
        return func(*args, **kwargs)


def _is_dtensor(value: torch.Tensor) -> bool:
    return _DTensor is not None and isinstance(value, _DTensor)


def _tensors(*values):
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(*value)
        elif isinstance(value, dict):
            yield from _tensors(*value.values())


# Traces by model object, reused while its parameter names stay the same (PEFT injection changes them).
_TRACE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _data_flow(model: nn.Module, stacks: list[_Stack], example_inputs: Mapping[str, Any] | None) -> _DataFlow:
    names = tuple(name for name, _ in model.named_parameters())
    if example_inputs is None:
        cached = _TRACE_CACHE.get(model)
        if cached is not None and cached[0] == names:
            return _trace_by_identity(model, stacks, cached[1])
    by_name = _trace(model, stacks, example_inputs)
    if example_inputs is None:
        _TRACE_CACHE[model] = (names, by_name)
    return _trace_by_identity(model, stacks, by_name)


def _trace(model: nn.Module, stacks: list[_Stack], example_inputs: Mapping[str, Any] | None) -> dict:
    """One forward pass; the result is keyed by names (parameters, block modules), which survive re-sharding."""
    parameters = dict(model.named_parameters())
    elements = [(f"{stack.path}.{index}", element) for stack in stacks for index, element in enumerate(stack.elements)]
    # Each block's span covers the calls of the block and of every module only it holds: a block that is a plain
    # container (Funnel's lists of layers) or whose own forward is bypassed is seen through what it holds.
    holders: dict[int, list[str]] = {}
    for path, element in elements:
        for module in element.modules():
            holders.setdefault(id(module), []).append(path)
    hooked = {id(m): (m, paths[0]) for _, e in elements for m in e.modules() if len(paths := holders[id(m)]) == 1}
    clock, reads, spans = [0], {}, {}
    handles = []

    def before(module, args):
        clock[0] += 1
        path = hooked[id(module)][1]
        start, end = spans.get(path, (clock[0], clock[0]))
        spans[path] = (start, end)

    def after(module, args, output):
        clock[0] += 1
        path = hooked[id(module)][1]
        start, _ = spans.get(path, (clock[0], clock[0]))
        spans[path] = (start, clock[0])

    error = None
    candidates = [example_inputs] if example_inputs is not None else _dummy_input_candidates(model)
    if not candidates:
        error = f"{type(model).__name__} has no `dummy_inputs` to run a forward pass with"
    training = {module: module.training for module in model.modules()}
    cuda_devices = sorted({p.device.index or 0 for p in parameters.values() if p.device.type == "cuda"})
    try:
        model.eval()
        for module, _ in hooked.values():
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after, always_call=True))
        for inputs in candidates:
            clock[0] = 0
            reads.clear()
            spans.clear()
            try:
                # A forked RNG: the trace must not change what training draws next.
                with (
                    torch.random.fork_rng(devices=cuda_devices),
                    torch.no_grad(),
                    _ParameterReads(model, clock, reads),
                ):
                    model(**inputs)
                error = None
                break
            except Exception as exception:  # any model may refuse a dummy input; we say why in the warning
                error = f"a forward pass on dummy inputs failed: {type(exception).__name__}: {exception}"[:300]
    finally:
        for handle in handles:
            handle.remove()
        for module, was_training in training.items():
            module.training = was_training
        _reshard(model)
    if error is not None:
        return {"error": error}
    return {
        "parameter_reads": dict(reads),
        "module_spans": dict(spans),
        "error": None,
    }


def _reshard(model: nn.Module) -> None:
    """Put FSDP2-sharded modules back in their sharded state: without a backward, the root module would keep its
    parameters gathered (unsharded) after the traced forward."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _trace_by_identity(model: nn.Module, stacks: list[_Stack], by_name: dict) -> _DataFlow:
    if by_name["error"] is not None:
        return _DataFlow(error=by_name["error"])
    parameters = dict(model.named_parameters())
    block_ids = {
        f"{stack.path}.{index}": id(element) for stack in stacks for index, element in enumerate(stack.elements)
    }
    return _DataFlow(
        module_spans={block_ids[path]: span for path, span in by_name["module_spans"].items() if path in block_ids},
        parameter_reads={id(parameters[name]): span for name, span in by_name["parameter_reads"].items()},
    )


def _dummy_input_candidates(model: nn.Module) -> list[dict[str, Any]]:
    """Inputs to try, in order: the model's `dummy_inputs`, its first row alone (sequence classifiers without a
    padding token take one row only), one short row ending with the end-of-sequence token, with decoder inputs
    for encoder-decoder models, and the dummy rows as two choices each (multiple-choice heads)."""
    dummy = getattr(model, "dummy_inputs", None)
    if not isinstance(dummy, Mapping) or "input_ids" not in dummy:
        return []
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dummy = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in dummy.items()}
    first_row = {key: value[:1] if isinstance(value, torch.Tensor) else value for key, value in dummy.items()}
    config = getattr(model, "config", None)
    vocab_size = getattr(config, "vocab_size", None) or 8
    eos = getattr(config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, list) else eos
    row = [(3 + index) % vocab_size for index in range(7)] + [eos if isinstance(eos, int) else 2 % vocab_size]
    ids = torch.tensor([row], device=device)
    own = {"input_ids": ids}
    if getattr(config, "is_encoder_decoder", False):
        own["decoder_input_ids"] = ids
    # Multiple-choice heads (`*ForMultipleChoice`) read (batch, choices, length): the dummy rows as two choices each.
    choices = {
        key: value.unsqueeze(1).repeat(1, 2, 1) if isinstance(value, torch.Tensor) and value.dim() == 2 else value
        for key, value in dummy.items()
    }
    return [dummy, first_row, own, choices]


# ---- placing the parameters ----------------------------------------------------------------------------------------


def _ordered_blocks(stacks: list[_Stack], flow: _DataFlow) -> list[_Block]:
    """The blocks in data-flow order: each stack's elements (zipped with interleaved stacks), by first call."""
    families = _interleaved_families(stacks, flow)
    labels = _stack_labels([family[0].path for family in families])
    blocks: list[_Block] = []
    for family, label in zip(families, labels, strict=True):
        for index in range(len(family[0].elements)):
            modules = [stack.elements[index] for stack in family]
            spans = [flow.module_spans[id(module)] for module in modules if id(module) in flow.module_spans]
            block = _Block(
                name=f"{label}layer {index}",
                modules=modules,
                stack_parents=[stack.path.rpartition(".")[0] for stack in family],
                parameter_ids={id(parameter) for module in modules for parameter in module.parameters()},
            )
            if spans:
                block.start, block.end = min(span[0] for span in spans), max(span[1] for span in spans)
            blocks.append(block)
    # By first call; a block never called stays right after the block registered before it.
    keyed, previous_key = [], (-1, -1)
    for position, block in enumerate(blocks):
        key = (block.start, position) if block.start is not None else (previous_key[0], position)
        keyed.append((key, block))
        previous_key = key
    return [block for _, block in sorted(keyed, key=lambda item: item[0])]


def _interleaved_families(stacks: list[_Stack], flow: _DataFlow) -> list[list[_Stack]]:
    """Stacks of equal length whose i-th elements are all called before any (i+1)-th element form one family."""
    families: list[list[_Stack]] = []
    for stack in stacks:
        for family in families:
            if _interleaved(family[0], stack, flow):
                family.append(stack)
                break
        else:
            families.append([stack])
    return families


def _interleaved(first: _Stack, second: _Stack, flow: _DataFlow) -> bool:
    if len(first.elements) != len(second.elements) or len(first.elements) < 2:
        return False
    spans = [
        (flow.module_spans.get(id(a)), flow.module_spans.get(id(b)))
        for a, b in zip(first.elements, second.elements, strict=True)
    ]
    if any(a is None or b is None for a, b in spans):
        return False
    return all(
        max(a[0], b[0]) < min(next_a[0], next_b[0]) for (a, b), (next_a, next_b) in zip(spans, spans[1:], strict=False)
    )


def _stack_labels(paths: list[str]) -> list[str]:
    """`""` for a single stack; otherwise the first path component that tells the stacks apart, plus a space."""
    if len(paths) == 1:
        return [""]
    parts = [path.split(".") for path in paths]
    labels = []
    for own in parts:
        others = [other for other in parts if other is not own]
        position = next(
            (i for i in range(len(own)) if any(i >= len(other) or other[i] != own[i] for other in others)),
            len(own) - 1,
        )
        labels.append(own[position] + " ")
    if len(set(labels)) < len(labels):  # not told apart by one component: use the whole path
        labels = [path + " " for path in paths]
    return labels


def _place_parameters(
    model: nn.Module, blocks: list[_Block], flow: _DataFlow
) -> tuple[dict[int, str], dict[int, str]]:
    """Group name per parameter id, and the ones guessed from registration order (named in a warning)."""
    placement: dict[int, str] = {}
    for block in blocks:  # in data-flow order: a parameter shared by two blocks goes with the lower one
        for parameter_id in block.parameter_ids:
            placement.setdefault(parameter_id, block.name)
    called = [block for block in blocks if block.start is not None]
    if flow.error is None and not called:
        flow.error = "the forward pass called none of the blocks"
    named = list(model.named_parameters())
    owner = {id(parameter): name.rpartition(".")[0] for name, parameter in named}
    unplaced = []
    for _, parameter in named:
        parameter_id = id(parameter)
        if parameter_id in placement:
            continue
        reads = flow.parameter_reads.get(parameter_id) if flow.error is None else None
        if reads is None:
            unplaced.append(parameter_id)
            continue
        first, last = reads
        if last > called[-1].end:
            placement[parameter_id] = HEAD
        elif first < called[0].start:
            placement[parameter_id] = EMBEDDINGS
        else:
            inside = next((block for block in called if block.start <= first <= block.end), None)
            if inside is not None:
                placement[parameter_id] = inside.name
            else:
                earlier = [block for block in called if block.end < first][-1]
                later = next(block for block in called if block.start > first)
                placement[parameter_id] = (
                    earlier.name
                    if _held_by_stack_parent(owner[parameter_id], earlier)
                    and not _held_by_stack_parent(owner[parameter_id], later)
                    else later.name
                )

    guessed: dict[int, str] = {}
    modules = dict(model.named_modules())
    for parameter_id in unplaced:
        group = _group_of_enclosing_module(owner[parameter_id], modules, placement) if flow.error is None else None
        if group is None:
            group = _group_by_registration(parameter_id, named, placement)
            guessed[parameter_id] = group
        placement[parameter_id] = group
    return placement, guessed


def _held_by_stack_parent(module_path: str, block: _Block) -> bool:
    return any(parent and module_path.startswith(parent + ".") for parent in block.stack_parents)


def _group_of_enclosing_module(path: str, modules: dict[str, nn.Module], placement: dict[int, str]) -> str | None:
    """The one group of the placed parameters of the nearest enclosing module (not the whole model) that has any."""
    while path:
        placed = {placement[id(p)] for p in modules[path].parameters() if id(p) in placement}
        if placed:
            return placed.pop() if len(placed) == 1 else None
        path = path.rpartition(".")[0]
    return None


def _group_by_registration(parameter_id: int, named: list, placement: dict[int, str]) -> str:
    """Embeddings before the first placed parameter, else the group of the nearest placed one registered before."""
    position = next(index for index, (_, parameter) in enumerate(named) if id(parameter) == parameter_id)
    earlier = [placement[id(parameter)] for _, parameter in named[:position] if id(parameter) in placement]
    return earlier[-1] if earlier else EMBEDDINGS


def _pattern_matches(pattern: str, name: str) -> bool:
    if name == pattern or name.startswith(pattern + "."):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _custom_layer_groups(names: list[str], groups: Sequence[str | Sequence[str]]) -> list[LayerGroup]:
    patterns_per_group = [[group] if isinstance(group, str) else list(group) for group in groups]
    members: list[list[str]] = [[] for _ in patterns_per_group]
    unmatched, ambiguous = [], []
    for name in names:
        hits = [
            index
            for index, patterns in enumerate(patterns_per_group)
            if any(_pattern_matches(pattern, name) for pattern in patterns)
        ]
        if not hits:
            unmatched.append(name)
        elif len(hits) > 1:
            ambiguous.append(f"{name} (groups {hits})")
        else:
            members[hits[0]].append(name)
    if unmatched or ambiguous:
        problems = []
        if unmatched:
            problems.append(f"{len(unmatched)} parameter(s) match no group, e.g. {unmatched[:5]}")
        if ambiguous:
            problems.append(f"{len(ambiguous)} parameter(s) match several groups, e.g. {ambiguous[:5]}")
        raise ValueError(
            "Custom layer groups must put every parameter in exactly one group: "
            + "; ".join(problems)
            + ". Patterns are module prefixes or regular expressions matching the whole parameter name."
        )
    empty = [index for index, group in enumerate(members) if not group]
    if empty:
        raise ValueError(f"Custom layer groups {empty} ({[groups[i] for i in empty]}) match no parameter.")
    return [LayerGroup(f"group {index}", tuple(group)) for index, group in enumerate(members)]


def layer_group_summary(
    model: nn.Module,
    groups: Sequence[LayerGroup] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    num_trainable_groups: int | None = None,
) -> str:
    """A printable table of the layer groups: parameter count, learning rate and whether each group trains.

    Args:
        model (`nn.Module`): the model the groups were made from.
        groups (`Sequence[LayerGroup]`, *optional*): defaults to `layer_groups(model)`.
        optimizer (`torch.optim.Optimizer`, *optional*): an optimizer built from `discriminative_param_groups`;
            its current rate for each group fills the `lr` column (`-` without one).
        num_trainable_groups (`int`, *optional*): how many top groups train (gradual unfreezing); without it a
            group is frozen when none of its parameters requires a gradient.

    Returns:
        `str`: one line per group, bottom to top, and a total.
    """
    groups = list(groups) if groups is not None else layer_groups(model)
    parameters = dict(model.named_parameters())
    learning_rates = {}
    if optimizer is not None:
        for param_group in optimizer.param_groups:
            if "layer_group" in param_group:
                learning_rates[param_group["layer_group"]] = param_group["lr"]

    header = f"{'#':>3}  {'group':<14} {'parameters':>12}  {'lr':>10}  status"
    lines = [header, "-" * len(header)]
    total = 0
    for index, group in enumerate(groups):
        count = sum(parameters[name].numel() for name in group.parameter_names)
        total += count
        if num_trainable_groups is not None:
            trainable = index >= len(groups) - num_trainable_groups
        else:
            trainable = any(parameters[name].requires_grad for name in group.parameter_names)
        lr = f"{learning_rates[index]:.3g}" if index in learning_rates else "-"
        lines.append(f"{index:>3}  {group.name:<14} {count:>12,}  {lr:>10}  {'trainable' if trainable else 'frozen'}")
    lines.append(f"{'':>3}  {'total':<14} {total:>12,}")
    return "\n".join(lines)
