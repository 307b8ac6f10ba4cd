"""How frozen layer groups are kept out of training when the model is wrapped for data parallelism.

- One process: frozen parameters get `requires_grad=False`, so autograd stops below the lowest trainable group and
  frozen groups cost no backward computation.
- DDP: DDP registers the parameters that require a gradient when it wraps the model (transformers' Trainer wraps it
  before `on_train_begin`, with every parameter trainable). Switching a registered parameter to
  `requires_grad=False` afterwards is safe when DDP looks for unused parameters (`find_unused_parameters=True`, the
  Trainer's default for transformers models without activation checkpointing): the frozen parameter is absent from
  the autograd graph, DDP marks it unused on every rank alike, leaves its gradient untouched (`None`), and all-reduces
  it again once it is switched back on. So DDP costs no frozen backward either. With `find_unused_parameters=False`
  (or `static_graph=True`) DDP would wait for gradients that never come and fail; there, and under FSDP or any other
  wrapper, every parameter stays in the graph and frozen gradients are dropped before the optimizer step.
- DeepSpeed: refused for gradual unfreezing (see `check_deepspeed_supports_ulmfit`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn


def freeze_method_for(wrapped_model: nn.Module) -> str:
    """`"requires_grad"` when frozen groups can leave the autograd graph in this (possibly wrapped) model, else
    `"drop_grads"`.

    Args:
        wrapped_model (`nn.Module`): the model as the training step runs it (`Trainer.model_wrapped`, the
            `model` argument of `training_step`): a DDP wrapper under DDP.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_world_size() == 1:
        return "requires_grad"
    if isinstance(wrapped_model, nn.parallel.DistributedDataParallel):
        if wrapped_model.find_unused_parameters and not wrapped_model.static_graph:
            return "requires_grad"
    return "drop_grads"


def check_deepspeed_supports_ulmfit(deepspeed_config: dict | str | Path | None, gradual_unfreezing: bool) -> None:
    """Refuse the ULMFiT settings that DeepSpeed would silently break.

    - Gradual unfreezing: ZeRO keeps gradients in its own partitioned buffers, so setting `p.grad = None` does not
      stop a frozen group from being updated, and its hooks are registered once, on the parameters that required a
      gradient at initialisation. Refused: use DDP or FSDP2 (`accelerate_configs/`), which tl_nlp tests.
    - An `optimizer` block in the DeepSpeed configuration: DeepSpeed then builds its own optimizer over all
      parameters with one learning rate, discarding the discriminative per-group rates. Refused: remove the block,
      and DeepSpeed wraps the optimizer `ULMFiTTrainer` builds (its parameter groups and their rates are kept).

    Args:
        deepspeed_config (`dict | str | Path`, *optional*): the DeepSpeed configuration (a dict or a JSON file).
        gradual_unfreezing (`bool`): whether the run unfreezes gradually.

    Raises:
        `ValueError`: naming the setting and what to do instead.
    """
    if isinstance(deepspeed_config, str | Path):
        deepspeed_config = json.loads(Path(deepspeed_config).read_text())
    if gradual_unfreezing:
        raise ValueError(
            "gradual_unfreezing does not work under DeepSpeed: ZeRO keeps gradients in its own buffers, so frozen "
            "layer groups would still be updated. Train with DDP or FSDP2 (accelerate_configs/multi_gpu.yaml, "
            "accelerate_configs/fsdp.yaml), or set gradual_unfreezing=False."
        )
    if isinstance(deepspeed_config, dict) and "optimizer" in deepspeed_config:
        raise ValueError(
            "The DeepSpeed configuration has an `optimizer` block: DeepSpeed would build its own optimizer with one "
            "learning rate and discard the discriminative per-group rates. Remove the `optimizer` block; DeepSpeed "
            "then wraps the optimizer that ULMFiTTrainer builds (args.optim), with its per-group rates."
        )


def deepspeed_config_of(accelerator: Any) -> dict | None:
    """The DeepSpeed configuration Accelerate runs with, or None when DeepSpeed is not in use."""
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if plugin is None:
        return None
    config = getattr(plugin, "deepspeed_config", None)
    return config if isinstance(config, dict) else {}
