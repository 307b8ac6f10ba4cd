"""PyTorch AWD-LSTM (Merity et al. 2017) with the language-model and classifier heads of ULMFiT (Howard & Ruder 2018).

The file imports only torch, transformers and its own configuration, so that `save_pretrained` can ship it next to
the weights and a folder loads with `trust_remote_code=True` where tl_nlp is not installed.

Design notes:
- The recurrent state is explicit: every forward takes an optional `state` and returns the new one, a tuple of
  `(h, c)` pairs, one per layer, each of shape `(batch, size)`. Nothing is kept on the module between calls.
- Weight dropout never replaces a parameter: the LSTM op is called with the dropped hidden-to-hidden matrix as an
  argument, so `state_dict`, DDP, `torch.compile` and the fused (cuDNN) kernel all see ordinary parameters.
- Padding is handled exactly: rows are packed so that padding never reaches the recurrent state, whether a batch is
  padded on the right or on the left.
"""

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_awd_lstm import AWDLSTMConfig

# One (h, c) pair per layer, each (batch, size): the state carried between consecutive windows of a text.
LSTMState = tuple[tuple[torch.Tensor, torch.Tensor], ...]

# Written into every saved config so that one folder loads through all four Auto classes with trust_remote_code.
AWD_LSTM_AUTO_MAP = {
    "AutoConfig": "configuration_awd_lstm.AWDLSTMConfig",
    "AutoModel": "modeling_awd_lstm.AWDLSTMModel",
    "AutoModelForCausalLM": "modeling_awd_lstm.AWDLSTMForCausalLM",
    "AutoModelForSequenceClassification": "modeling_awd_lstm.AWDLSTMForSequenceClassification",
}


@dataclass
class AWDLSTMModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, seq_len, embedding_size)`):
            Output of the last LSTM layer, before any output dropout. Zero at padded positions.
        state (`tuple` of `(h, c)` pairs):
            The recurrent state after the last real token of each row; pass it as `state` to continue the text.
        hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`):
            The embedding output followed by the output of every LSTM layer.
    """

    last_hidden_state: torch.FloatTensor | None = None
    state: LSTMState | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AWDLSTMCausalLMOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` or `shift_labels` is given):
            Next-token cross-entropy. AR/TAR are not included: trainers add them from the two outputs below.
        logits (`torch.FloatTensor` of shape `(batch, seq_len, vocab_size)`):
            Next-token scores.
        state (`tuple` of `(h, c)` pairs):
            The recurrent state after the last token, to carry into the next window or generation step.
        hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`):
            The embedding output followed by the output of every LSTM layer.
        raw_last_hidden_state (`torch.FloatTensor` of shape `(batch, seq_len, embedding_size)`):
            Last-layer output before output dropout (temporal activation regularisation, TAR, reads it).
        dropped_last_hidden_state (`torch.FloatTensor` of shape `(batch, seq_len, embedding_size)`):
            Last-layer output after output dropout, as fed to the decoder (activation regularisation, AR, reads it).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    state: LSTMState | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    raw_last_hidden_state: torch.FloatTensor | None = None
    dropped_last_hidden_state: torch.FloatTensor | None = None


def keep_mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """A dropout mask of `shape` (on `like`'s device, in its dtype): `1 / (1 - p)` where kept, with probability
    `1 - p`, else 0. Drawn as `uniform >= p`, which on CPU is about three times faster than Bernoulli sampling (and
    than `F.dropout`); that matters for weight dropout, which masks millions of weights at every step."""
    return like.new_empty(shape).uniform_().ge_(p).div_(1.0 - p)


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence and feature, shared by every time step (batch-first input)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return hidden
        # The scaled (batch, 1, features) mask broadcasts over time: one pass over the activations.
        return hidden * keep_mask(hidden, (hidden.size(0), 1, hidden.size(2)), self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EmbeddingDropout(nn.Module):
    """Drops whole words: each vocabulary row is zeroed with probability p for one forward pass, wherever it occurs."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, input_ids: torch.Tensor, embedded: torch.Tensor, vocab_size: int) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return embedded
        # Masking the looked-up rows by token id equals masking the embedding matrix, without touching all of it.
        keep = keep_mask(embedded, (vocab_size,), self.p)
        return embedded * keep[input_ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WeightDropout(nn.Module):
    """DropConnect on a weight matrix: a fresh mask for each forward pass in training mode, identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return weight
        return weight * keep_mask(weight, weight.shape, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@functools.cache
def _cpu_lstm_autocasts() -> bool:
    """Whether `torch.lstm` runs under CPU autocast here: oneDNN builds its bf16 LSTM only on CPUs with bf16
    instructions (AVX512-BF16 or AMX), and elsewhere fails with "could not create a primitive descriptor"."""
    lstm_inputs = torch.zeros(1, 1, 1)
    weights = [torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(4), torch.zeros(4)]
    try:
        with torch.no_grad(), torch.autocast("cpu"):
            torch.lstm(lstm_inputs, (lstm_inputs, lstm_inputs), weights, True, 1, 0.0, False, False, True)
    except RuntimeError:
        return False
    return True


class AWDLSTMLayer(nn.Module):
    """One unidirectional LSTM layer whose hidden-to-hidden matrix gets weight dropout.

    The parameters have `nn.LSTM`'s shapes and gate order; the forward calls the same fused op that `nn.LSTM` uses,
    with the dropped matrix passed as an argument.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_dropout: float):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.weight_dropout = WeightDropout(weight_dropout)

    def forward(
        self,
        inputs: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            inputs: `(batch, seq_len, input_size)`.
            state: `(h, c)`, each `(batch, hidden_size)`; zeros when None.
            lengths: real length of each row (right padding) when the batch is padded; padded steps are skipped.

        Returns:
            The outputs `(batch, seq_len, hidden_size)` (zero at padded steps) and the state after each row's last
            real step.
        """
        if inputs.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not _cpu_lstm_autocasts():
            # This CPU's oneDNN has no reduced-precision LSTM: the recurrence runs in float32, the rest stays autocast.
            with torch.autocast("cpu", enabled=False):
                return self.forward(
                    inputs.float(), None if state is None else tuple(s.float() for s in state), lengths
                )
        batch_size, seq_len, _ = inputs.shape
        if state is None:
            zeros = inputs.new_zeros(1, batch_size, self.hidden_size)
            hx = (zeros, zeros)
        else:
            hx = (state[0].unsqueeze(0), state[1].unsqueeze(0))
        weights = [self.weight_ih, self.weight_dropout(self.weight_hh), self.bias_ih, self.bias_hh]
        if lengths is None:
            outputs, h_n, c_n = torch.lstm(inputs, hx, weights, True, 1, 0.0, self.training, False, True)
        else:
            packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
            hx = (hx[0].index_select(1, packed.sorted_indices), hx[1].index_select(1, packed.sorted_indices))
            data, h_n, c_n = torch.lstm(
                packed.data, packed.batch_sizes, hx, weights, True, 1, 0.0, self.training, False
            )
            packed_outputs = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
            outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=seq_len)
            h_n = h_n.index_select(1, packed.unsorted_indices)
            c_n = c_n.index_select(1, packed.unsorted_indices)
        return outputs, (h_n.squeeze(0), c_n.squeeze(0))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class AWDLSTMPreTrainedModel(PreTrainedModel):
    config_class = AWDLSTMConfig
    base_model_prefix = "awd_lstm"
    main_input_name = "input_ids"
    _no_split_modules = ["AWDLSTMLayer"]
    # A recurrent state cannot be rewound, so assisted decoding is refused by `generate`.
    _is_stateful = True

    def __init__(self, config: AWDLSTMConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # Entries already there (e.g. "repo--module.Class" from a Hub load) win over ours.
        config.auto_map = {**AWD_LSTM_AUTO_MAP, **(getattr(config, "auto_map", None) or {})}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # fastai's initialisation: embeddings U(-0.1, 0.1), LSTM weights as nn.LSTM, linear layers as nn.Linear.
        if isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -self.config.initializer_range, self.config.initializer_range)
        elif isinstance(module, AWDLSTMLayer):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for param in (module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh):
                init.uniform_(param, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.uniform_(module.bias, -1.0 / math.sqrt(module.in_features), 1.0 / math.sqrt(module.in_features))
        elif isinstance(module, nn.BatchNorm1d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)


class AWDLSTMModel(AWDLSTMPreTrainedModel):
    """The AWD-LSTM encoder: embeddings with embedding dropout, then stacked weight-dropped LSTM layers with locked
    dropout before the first layer and between layers.

    Example:

    ```python
    >>> import torch
    >>> from tl_nlp import AWDLSTMConfig, AWDLSTMModel
    >>> model = AWDLSTMModel(AWDLSTMConfig(vocab_size=100, embedding_size=8, hidden_size=16)).eval()
    >>> first = model(torch.tensor([[5, 6, 7]]))
    >>> second = model(torch.tensor([[8, 9]]), state=first.state)  # continues the same text
    >>> second.last_hidden_state.shape
    torch.Size([1, 2, 8])
    ```
    """

    def __init__(self, config: AWDLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.embedding_dropout = EmbeddingDropout(config.scaled_dropout("embedding_dropout"))
        self.input_dropout = LockedDropout(config.scaled_dropout("input_dropout"))
        sizes = (
            [config.embedding_size] + [config.hidden_size] * (config.num_hidden_layers - 1) + [config.embedding_size]
        )
        weight_p = config.scaled_dropout("weight_dropout")
        self.layers = nn.ModuleList(
            AWDLSTMLayer(n_in, n_out, weight_p) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        hidden_p = config.scaled_dropout("hidden_dropout")
        self.hidden_dropouts = nn.ModuleList(LockedDropout(hidden_p) for _ in range(config.num_hidden_layers - 1))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def initial_state(self, batch_size: int) -> LSTMState:
        """An all-zero state for `batch_size` rows, on the model's device and dtype."""
        weight = self.embeddings.weight
        return tuple(
            (weight.new_zeros(batch_size, layer.hidden_size), weight.new_zeros(batch_size, layer.hidden_size))
            for layer in self.layers
        )

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        state: LSTMState | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AWDLSTMModelOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`):
                Token ids.
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)` or `(batch, past_len + seq_len)`, *optional*):
                1 for real tokens, 0 for padding, on either side. Only its last `seq_len` columns are read, as
                `generate` passes the mask of the whole text with only the new tokens.
            state (`tuple` of `(h, c)` pairs, *optional*):
                State to continue from (from a previous call's `state`); zeros when None.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_inputs(input_ids, state)

        lengths, order = None, None
        if attention_mask is not None:
            attention_mask = attention_mask[:, -input_ids.size(1) :].bool()
            if not bool(attention_mask.all()):
                lengths = attention_mask.sum(1)
                if bool((lengths == 0).any()):
                    row = int((lengths == 0).nonzero()[0, 0])
                    raise ValueError(f"attention_mask row {row} has no real token (all zeros): drop that row")
                # Move each row's real tokens to the front (stable, so their order is kept): left, right and
                # interleaved padding then all become right padding, which packing skips.
                order = torch.argsort((~attention_mask).to(torch.int8), dim=1, stable=True)
                input_ids = input_ids.gather(1, order)

        hidden = self.embeddings(input_ids)
        hidden = self.embedding_dropout(input_ids, hidden, self.config.vocab_size)
        hidden = self.input_dropout(hidden)
        all_hidden = (hidden,) if output_hidden_states else None
        new_state = []
        for index, layer in enumerate(self.layers):
            hidden, layer_state = layer(hidden, None if state is None else state[index], lengths)
            new_state.append(layer_state)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden,)
            if index < len(self.hidden_dropouts):
                hidden = self.hidden_dropouts[index](hidden)

        if order is not None:
            # Put outputs back where their tokens were; padded positions stay zero.
            hidden = torch.zeros_like(hidden).scatter(1, order.unsqueeze(-1).expand_as(hidden), hidden)
            if output_hidden_states:
                all_hidden = tuple(
                    torch.zeros_like(h).scatter(1, order.unsqueeze(-1).expand_as(h), h) for h in all_hidden
                )
        new_state = tuple(new_state)
        if not return_dict:
            return tuple(v for v in (hidden, new_state, all_hidden) if v is not None)
        return AWDLSTMModelOutput(last_hidden_state=hidden, state=new_state, hidden_states=all_hidden)

    def _check_inputs(self, input_ids: torch.Tensor, state: LSTMState | None) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        if torch.compiler.is_compiling() or input_ids.numel() == 0:
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            row, col = (input_ids == bad).nonzero()[0].tolist()
            raise ValueError(
                f"token id {bad} at input_ids[{row}, {col}] is outside the vocabulary (0 to "
                f"{self.config.vocab_size - 1}); was the text tokenized with this model's tokenizer?"
            )
        if state is not None and len(state) != len(self.layers):
            raise ValueError(f"state has {len(state)} layers, the model has {len(self.layers)}")


class AWDLSTMForCausalLM(AWDLSTMPreTrainedModel, GenerationMixin):
    """AWD-LSTM language model: the encoder, output dropout and a linear decoder tied to the embeddings.

    `labels` are shifted inside, as in every transformers causal LM; pass `shift_labels` instead when the targets are
    already aligned with the inputs (a stream read in windows). `generate()` carries the LSTM state from step to
    step instead of re-reading the prefix.

    Example:

    ```python
    >>> import torch
    >>> from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM
    >>> model = AWDLSTMForCausalLM(AWDLSTMConfig(vocab_size=100, embedding_size=8, hidden_size=16))
    >>> ids = torch.randint(4, 100, (2, 12))
    >>> out = model(ids, labels=ids)
    >>> out.logits.shape, out.loss.shape
    (torch.Size([2, 12, 100]), torch.Size([]))
    ```
    """

    _tied_weights_keys = {"decoder.weight": "awd_lstm.embeddings.weight"}
    # The loss divides by `num_items_in_batch` when Trainer passes it, so the logged loss is the true token mean
    # under gradient accumulation and DDP.
    accepts_loss_kwargs = True

    def __init__(self, config: AWDLSTMConfig):
        super().__init__(config)
        self.awd_lstm = AWDLSTMModel(config)
        self.output_dropout = LockedDropout(config.scaled_dropout("output_dropout"))
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self.decoder:
            init.zeros_(module.bias)

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.decoder = new_embeddings

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The cache is the LSTM state (`state`), not attention keys and values.
        return False

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        state: LSTMState | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> AWDLSTMCausalLMOutput | tuple:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*):
                Target ids, shifted inside (`labels[:, t + 1]` is the target at position t); -100 is ignored.
            shift_labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*, passed as a keyword):
                Targets already aligned with `input_ids` (the target at position t); -100 is ignored. It travels in
                `**kwargs`, as in transformers' own causal LMs, so that Trainer's default `label_names` stay
                `["labels"]` and `evaluate()` reports `eval_loss` for ordinary causal-LM batches.
            use_cache (`bool`, *optional*):
                The state is returned unless this is `False`; `generate(use_cache=False)` re-reads the
                whole prefix at each step instead.
            logits_to_keep (`int`, *optional*):
                If > 0, compute logits for the last `logits_to_keep` positions only (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # Only an explicit False drops the state: `config.use_cache` is not read, because Trainer sets it to False
        # for training, where the state must still be returned so that it can be carried to the next window.
        return_state = use_cache is not False
        outputs = self.awd_lstm(
            input_ids,
            attention_mask=attention_mask,
            state=state,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        raw = outputs.last_hidden_state
        dropped = self.output_dropout(raw)
        logits = self.decoder(dropped[:, -logits_to_keep:] if logits_to_keep else dropped)

        loss = None
        shift_labels = kwargs.get("shift_labels")
        if labels is not None or shift_labels is not None:
            loss_kwargs = {k: kwargs[k] for k in ("num_items_in_batch", "ignore_index") if k in kwargs}
            if shift_labels is not None:
                shift_labels = shift_labels.contiguous()  # a slice of a stream is not, and the loss views it
            loss = self.loss_function(
                logits, labels, vocab_size=self.config.vocab_size, shift_labels=shift_labels, **loss_kwargs
            )

        output = AWDLSTMCausalLMOutput(
            loss=loss,
            logits=logits,
            state=outputs.state if return_state else None,
            hidden_states=outputs.hidden_states,
            raw_last_hidden_state=raw,
            dropped_last_hidden_state=dropped,
        )
        return output if return_dict else output.to_tuple()


class AWDLSTMPoolingClassifier(nn.Module):
    """ULMFiT's head: [last, max, mean] pooled features through BatchNorm -> Dropout -> Linear (-> ReLU) blocks."""

    def __init__(self, config: AWDLSTMConfig):
        super().__init__()
        sizes = [3 * config.embedding_size] + list(config.classifier_hidden_sizes) + [config.num_labels]
        blocks = []
        for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            p = config.classifier_dropouts[index] * config.dropout_multiplier
            blocks += [nn.BatchNorm1d(n_in), nn.Dropout(p), nn.Linear(n_in, n_out)]
            if index < len(sizes) - 2:
                blocks.append(nn.ReLU())
        self.layers = nn.Sequential(*blocks)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.layers(pooled)


class AWDLSTMForSequenceClassification(AWDLSTMPreTrainedModel):
    """AWD-LSTM classifier with concat pooling and BPT3C (ULMFiT's stage 3).

    A document is read in consecutive chunks of `config.bptt_chunk_length` tokens with the state carried between
    them; the last state, the max and the mean are taken over the real tokens of the last `config.max_len` tokens of
    each document, and gradients flow only through the chunks that hold them. Padding (left, right, any) never
    changes a row's answer. `problem_type` is single-label, multi-label or regression, as in transformers.

    `from_pretrained(lm_folder, num_labels=2)` on a language-model folder takes its encoder and initialises a new
    head (ULMFiT's stage-2 to stage-3 hand-off).

    Example:

    ```python
    >>> import torch
    >>> from tl_nlp import AWDLSTMConfig, AWDLSTMForSequenceClassification
    >>> config = AWDLSTMConfig(vocab_size=100, embedding_size=8, hidden_size=16, num_labels=3)
    >>> model = AWDLSTMForSequenceClassification(config).eval()
    >>> model(torch.randint(4, 100, (2, 30))).logits.shape
    torch.Size([2, 3])
    ```
    """

    accepts_loss_kwargs = False
    # Loading a language-model folder: its decoder is not part of a classifier.
    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]

    def __init__(self, config: AWDLSTMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.awd_lstm = AWDLSTMModel(config)
        self.classifier = AWDLSTMPoolingClassifier(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        Args:
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*):
                1 for real tokens, 0 for padding (either side). Every row needs at least one real token.
            labels (`torch.Tensor`, *optional*):
                Class ids `(batch,)` for single-label, multi-hot floats `(batch, num_labels)` for multi-label, floats
                for regression.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.training and input_ids.size(0) == 1:
            raise ValueError(
                "a training batch of one document cannot go through the head's BatchNorm: use batches of 2 or more "
                "(drop_last in the dataloader avoids a last batch of one), or call model.eval() for inference"
            )
        pooled = self.pool_document(input_ids, attention_mask)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            self._check_labels(labels)
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        output = SequenceClassifierOutput(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()

    def pool_document(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """BPT3C and concat pooling: `(batch, 3 * embedding_size)` features `[last, max, mean]` per document."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        lengths = mask.sum(1)
        if bool((lengths == 0).any()):
            row = int((lengths == 0).nonzero()[0, 0])
            raise ValueError(f"row {row} of the batch has no real token (empty text or all padding)")
        # Real tokens first in each row, rows longest first: the rows still reading at any chunk are then a prefix
        # of the batch, and chunk boundaries fall at the same offsets of a document whatever batch it is in.
        token_order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        lengths, row_order = lengths.sort(descending=True)
        input_ids = input_ids.gather(1, token_order)[row_order]

        chunk, max_len = self.config.bptt_chunk_length, self.config.max_len
        longest = int(lengths[0])
        # Chunks that end before every document's last `max_len` tokens only move the state: no graph is kept.
        first_pooled = max(0, int(lengths[-1]) - max_len) // chunk * chunk
        state, pooled_chunks = None, []
        for start in range(0, longest, chunk):
            active = int((lengths > start).sum())
            chunk_ids = input_ids[:active, start : start + chunk]
            chunk_mask = torch.arange(chunk_ids.size(1), device=chunk_ids.device) < (lengths[:active, None] - start)
            keep = start >= first_pooled
            if state is not None:
                state = tuple((h[:active], c[:active]) for h, c in state)
            with torch.set_grad_enabled(keep and torch.is_grad_enabled()):
                out = self.awd_lstm(chunk_ids, attention_mask=chunk_mask, state=state, return_dict=True)
            state = out.state
            if keep:
                pooled_chunks.append(F.pad(out.last_hidden_state, (0, 0, 0, 0, 0, input_ids.size(0) - active)))

        hidden = torch.cat(pooled_chunks, dim=1)
        positions = torch.arange(first_pooled, first_pooled + hidden.size(1), device=hidden.device)
        in_window = (positions < lengths[:, None]) & (positions >= lengths[:, None] - max_len)
        last = hidden[torch.arange(hidden.size(0), device=hidden.device), lengths - 1 - first_pooled]
        max_pool = hidden.masked_fill(~in_window.unsqueeze(-1), float("-inf")).max(dim=1).values
        mean_pool = (hidden * in_window.unsqueeze(-1)).sum(dim=1) / in_window.sum(dim=1, keepdim=True)
        pooled = torch.cat([last, max_pool, mean_pool], dim=1)
        return pooled[torch.argsort(row_order)]

    def _check_labels(self, labels: torch.Tensor) -> None:
        if torch.compiler.is_compiling():
            return
        single_label = self.config.problem_type == "single_label_classification" or (
            self.config.problem_type is None and self.num_labels > 1 and labels.dtype in (torch.long, torch.int)
        )
        if single_label and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_labels):
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            row = int((labels.view(-1) == bad).nonzero()[0, 0])
            raise ValueError(
                f"label {bad} in row {row} is outside 0..{self.num_labels - 1} (num_labels={self.num_labels})"
            )


__all__ = [
    "AWDLSTMForCausalLM",
    "AWDLSTMForSequenceClassification",
    "AWDLSTMModel",
    "AWDLSTMPreTrainedModel",
]
