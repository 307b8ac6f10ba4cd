"""How many positions a model reads at once, from its config, whatever the family calls it."""

from __future__ import annotations


def context_length(config) -> int | None:
    """The most positions a transformer reads (`max_position_embeddings`, GPT-2's `n_positions`); None if unlimited
    (AWD-LSTM, and any config that names neither)."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
