"""Feature extraction: a frozen backbone read once, a small head trained on its cached features.

The backbone never trains, so each text goes through it once (no backward pass, no optimizer state for it) and the
head, a logistic regression or a one-hidden-layer MLP in torch, trains for many epochs on the cached features in
seconds. Features are pooled per document:

- AWD-LSTM: ULMFiT's concat pooling `[last, max, mean]` of the last LSTM layer, read with BPT3C
  (`AWDLSTMForSequenceClassification.pool_document`); a language model's encoder is read the same way.
- BERT-style encoders: the mean of the last hidden states over real tokens (`"mean"`), or the first token (`"cls"`).
- GPT-style decoders: the last real token (`"last"`) or the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedTokenizerBase

from .models.awd_lstm import AWDLSTMForSequenceClassification

POOLINGS = ("auto", "concat", "mean", "cls", "last")


@dataclass
class FeatureHeadArguments:
    """How the head on cached features is trained.

    Args:
        hidden_size (`int`, defaults to 0): 0 for logistic regression (one linear layer), else the width of the one
            hidden layer of an MLP (ReLU).
        dropout (`float`, defaults to 0.0): dropout on the features (and the hidden layer), in [0, 1).
        num_epochs (`int`, defaults to 100): passes over the cached features (>= 1).
        learning_rate (`float`, defaults to 0.01): AdamW learning rate (> 0).
        weight_decay (`float`, defaults to 0.0001): AdamW weight decay (>= 0).
        batch_size (`int`, defaults to 64): features per step (>= 1).
        seed (`int`, defaults to 0): head initialisation and batch order.
    """

    hidden_size: int = field(default=0, metadata={"help": "0: logistic regression; > 0: MLP hidden width."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the features and hidden layer, in [0, 1)."})
    num_epochs: int = field(default=100, metadata={"help": "Passes over the cached features (>= 1)."})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate (> 0)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (>= 0)."})
    batch_size: int = field(default=64, metadata={"help": "Features per optimizer step (>= 1)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head's initialisation and batch order."})

    def __post_init__(self):
        if self.hidden_size < 0:
            raise ValueError(f"hidden_size must be >= 0 (0: logistic regression), got {self.hidden_size}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {self.num_epochs}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")


def _resolve_pooling(model: nn.Module, pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    is_awd_lstm = getattr(getattr(model, "config", None), "model_type", None) == "awd_lstm"
    if pooling == "auto":
        return "concat" if is_awd_lstm else "mean"
    if (pooling == "concat") != is_awd_lstm:
        raise ValueError(
            f"pooling={pooling!r} does not fit a {type(model).__name__}: 'concat' is AWD-LSTM's pooling; use "
            "'mean', 'cls' or 'last' for other models (or 'auto')."
        )
    return pooling


@torch.no_grad()
def extract_features(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    pooling: str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
) -> torch.Tensor:
    """Pooled features of `texts` from a frozen backbone, in the order of `texts`.

    Args:
        model (`nn.Module`): AWD-LSTM (classifier or language model) or any transformers model whose base model
            returns `last_hidden_state` (BERT-style, GPT-style...).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        texts (`Sequence[str]`): the documents.
        pooling (`str`, defaults to `"auto"`): `"concat"` (AWD-LSTM's `[last, max, mean]`), `"mean"`, `"cls"` (first
            token) or `"last"` (last real token); `"auto"` is `"concat"` for AWD-LSTM and `"mean"` otherwise.
        batch_size (`int`, defaults to 32): texts per forward pass; texts are batched by length.
        max_length (`int`, *optional*): truncate each text to this many tokens (the end is dropped).

    Returns:
        `torch.Tensor` of shape `(len(texts), feature_size)`, float32 on the CPU.
    """
    pooling = _resolve_pooling(model, pooling)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), truncation=max_length is not None, max_length=max_length)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda index: len(encoded[index]), reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    features: list[torch.Tensor | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = [encoded[index] for index in order[start : start + batch_size]]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row_index, row in enumerate(rows):
            input_ids[row_index, : len(row)] = torch.tensor(row)
            mask[row_index, : len(row)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        if pooling == "concat":
            # `pool_document` reads only `awd_lstm` and `config`, which an AWD-LSTM language model has as well.
            pooled = AWDLSTMForSequenceClassification.pool_document(model, input_ids, mask)
        else:
            base = getattr(model, "base_model", model)
            hidden = base(input_ids=input_ids, attention_mask=mask).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            elif pooling == "last":
                pooled = hidden[torch.arange(len(rows), device=device), mask.sum(1) - 1]
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1)
        for row_index, index in enumerate(order[start : start + batch_size]):
            features[index] = pooled[row_index].float().cpu()
    model.train(was_training)
    return torch.stack(features)


class FeatureExtractionClassifier:
    """A frozen backbone plus a head trained on its cached features; called like `ZeroShotLMClassifier`.

    Args:
        model (`nn.Module`): the backbone (see `extract_features`); it is never updated.
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        label_names (`Sequence[str]`): the label of each class id, e.g. `["negative", "positive"]`.
        pooling (`str`, defaults to `"auto"`): see `extract_features`.
        head_arguments (`FeatureHeadArguments`, *optional*): the head and its training.
        batch_size (`int`, defaults to 32): texts per forward pass of the backbone.
        max_length (`int`, *optional*): truncate texts to this many tokens.

    Example:

    ```python
    >>> classifier = FeatureExtractionClassifier(encoder, tokenizer, ["negative", "positive"])  # doctest: +SKIP
    >>> classifier.fit(train_texts, train_labels)  # doctest: +SKIP
    >>> classifier(["A wonderful film."])  # doctest: +SKIP
    [{'label': 'positive', 'score': 0.93, 'scores': {'negative': 0.07, 'positive': 0.93}}]
    ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        label_names: Sequence[str],
        pooling: str = "auto",
        head_arguments: FeatureHeadArguments | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
    ):
        if len(label_names) < 2:
            raise ValueError(f"label_names must name at least 2 classes, got {list(label_names)}.")
        self.model = model
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.pooling = _resolve_pooling(model, pooling)
        self.head_arguments = head_arguments if head_arguments is not None else FeatureHeadArguments()
        self.batch_size = batch_size
        self.max_length = max_length
        self.head: nn.Sequential | None = None
        for parameter in model.parameters():
            parameter.requires_grad_(False)

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """The backbone's pooled features of `texts` (cache them to train several heads)."""
        return extract_features(self.model, self.tokenizer, texts, self.pooling, self.batch_size, self.max_length)

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> list[float]:
        """Extract the features of `texts` once and train the head on them; returns the mean loss of each epoch."""
        return self.fit_features(self.features(texts), labels)

    def fit_features(self, features: torch.Tensor, labels: Sequence[int] | torch.Tensor) -> list[float]:
        """Train a fresh head on cached `features` `(num_texts, feature_size)`; returns each epoch's mean loss."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (features.size(0),):
            raise ValueError(f"labels has shape {tuple(labels.shape)}, expected ({features.size(0)},): one per text.")
        if int(labels.min()) < 0 or int(labels.max()) >= len(self.label_names):
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            row = int((labels == bad).nonzero()[0, 0])
            raise ValueError(f"label {bad} in row {row} is outside 0..{len(self.label_names) - 1} (label_names).")
        arguments = self.head_arguments
        generator = torch.Generator().manual_seed(arguments.seed)
        torch.manual_seed(arguments.seed)
        size = features.size(1)
        # Standardised inputs: pooled features differ in scale by orders of magnitude (max vs mean pooling).
        mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
        layers: list[nn.Module] = [Standardize(mean, std), nn.Dropout(arguments.dropout)]
        if arguments.hidden_size:
            layers += [nn.Linear(size, arguments.hidden_size), nn.ReLU(), nn.Dropout(arguments.dropout)]
            size = arguments.hidden_size
        layers.append(nn.Linear(size, len(self.label_names)))
        head = nn.Sequential(*layers)
        optimizer = torch.optim.AdamW(
            head.parameters(), lr=arguments.learning_rate, weight_decay=arguments.weight_decay
        )
        history = []
        head.train()
        for _ in range(arguments.num_epochs):
            permutation = torch.randperm(features.size(0), generator=generator)
            total = 0.0
            for start in range(0, features.size(0), arguments.batch_size):
                batch = permutation[start : start + arguments.batch_size]
                loss = F.cross_entropy(head(features[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            history.append(total / features.size(0))
        self.head = head.eval()
        return history

    @torch.no_grad()
    def predict_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities `(num_texts, num_labels)` for cached features."""
        if self.head is None:
            raise ValueError("The head is not trained yet: call fit(texts, labels) or fit_features(...) first.")
        return self.head(features).softmax(-1)

    def __call__(self, texts: str | Sequence[str]) -> list[dict]:
        """Classify `texts`: per text `label`, `score` and `scores` (label -> probability)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return []
        results = []
        for row in self.predict_features(self.features(texts)).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append(
                {
                    "label": self.label_names[best],
                    "score": row[best],
                    "scores": dict(zip(self.label_names, row, strict=True)),
                }
            )
        return results


class Standardize(nn.Module):
    """`(x - mean) / std` with the training features' statistics, kept as buffers of the head."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std
