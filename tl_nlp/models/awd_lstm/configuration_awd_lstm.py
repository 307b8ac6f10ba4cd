"""AWD-LSTM configuration (Merity et al. 2017, as used by ULMFiT, Howard & Ruder 2018)."""

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

# fastai's dropouts by head (`awd_lstm_lm_config`, `awd_lstm_clas_config`), used where a config leaves them None.
# The classifier's `output_p` (0.4) is the first dropout of its head, `classifier_dropouts[0]`.
FASTAI_DROPOUTS = {
    "language_model": {
        "input_dropout": 0.25,
        "hidden_dropout": 0.15,
        "embedding_dropout": 0.02,
        "weight_dropout": 0.2,
        "output_dropout": 0.1,
    },
    "classifier": {
        "input_dropout": 0.4,
        "hidden_dropout": 0.3,
        "embedding_dropout": 0.05,
        "weight_dropout": 0.5,
        "output_dropout": 0.4,
    },
}
ENCODER_DROPOUTS = ("input_dropout", "hidden_dropout", "embedding_dropout", "weight_dropout", "output_dropout")


@strict
class AWDLSTMConfig(PretrainedConfig):
    r"""
    Configuration of an AWD-LSTM encoder with its language-model and classifier heads. The defaults are the
    paper's and fastai's (`awd_lstm_lm_config` / `awd_lstm_clas_config`, chosen by head), except that the classifier
    reads the document in chunks of 70 tokens (fastai: 72).

    Args:
        vocab_size (`int`, defaults to 60000):
            Number of tokens in the vocabulary (ULMFiT caps its word vocabulary at 60,000).
        embedding_size (`int`, defaults to 400):
            Size of the token embeddings, and of the last LSTM layer's output so that the decoder can be tied.
        hidden_size (`int`, defaults to 1152):
            Size of the hidden state of every LSTM layer except the last.
        num_hidden_layers (`int`, defaults to 3):
            Number of stacked LSTM layers.
        tie_word_embeddings (`bool`, defaults to `True`):
            Whether the language-model decoder shares its weight with the input embeddings.
        input_dropout (`float`, *optional*):
            Locked (variational) dropout on the embedding outputs, before the first LSTM layer.
        hidden_dropout (`float`, *optional*):
            Locked dropout between LSTM layers.
        embedding_dropout (`float`, *optional*):
            Probability of dropping a whole word (an embedding row) for a forward pass.
        weight_dropout (`float`, *optional*):
            DropConnect on the hidden-to-hidden matrices of each LSTM layer.
        output_dropout (`float`, *optional*):
            Locked dropout on the last LSTM layer's output before the language-model decoder; the classifier uses
            `classifier_dropouts` instead.
            The five dropouts above default (when `None`) to fastai's for the head the config builds, as fastai's
            `language_model_learner` and `text_classifier_learner` pick `awd_lstm_lm_config` or
            `awd_lstm_clas_config`: the language model gets input 0.25, hidden 0.15, embedding 0.02, weight 0.2,
            output 0.1; the classifier's encoder input 0.4, hidden 0.3, embedding 0.05, weight 0.5. A classifier
            loaded from a language model's folder thus gets the classifier's dropouts, as in fastai.
        dropout_multiplier (`float`, defaults to 1.0):
            fastai's `drop_mult`: scales the five dropouts above and the classifier head's first dropout, not its
            later ones (fastai's `get_text_classifier` scales `output_p`, which becomes the head's first dropout, and
            leaves `ps` alone).
        initializer_range (`float`, defaults to 0.1):
            Embeddings are initialised uniformly in `[-initializer_range, initializer_range]`.
        classifier_hidden_sizes (`list[int]`, defaults to `[50]`):
            Sizes of the hidden layers of the classifier head that sits on the concat-pooled features.
        classifier_dropouts (`list[float]`, defaults to `[0.4, 0.1]`):
            Dropout before each linear layer of the classifier head: one more entry than `classifier_hidden_sizes`
            (fastai: the classifier config's `output_p`, 0.4, then 0.1 before every later linear layer).
        bptt_chunk_length (`int`, defaults to 70):
            BPT3C: the classifier reads a document in consecutive chunks of this many tokens, carrying the state.
        max_len (`int`, defaults to 1440):
            BPT3C: gradients flow through (and pooling covers) only the last `max_len` tokens of a document.
        pad_token_id (`int`, defaults to 1):
            Id of the padding token (`xxpad` in the ULMFiT vocabulary).
        bos_token_id (`int`, defaults to 2):
            Id of the beginning-of-text token (`xxbos`).
        eos_token_id (`int`, defaults to 3):
            Id of the end-of-text token (`xxeos`).

    Example:

    ```python
    >>> from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM
    >>> config = AWDLSTMConfig(vocab_size=1000, embedding_size=32, hidden_size=64)
    >>> model = AWDLSTMForCausalLM(config)
    ```
    """

    model_type = "awd_lstm"
    keys_to_ignore_at_inference = ["state"]

    vocab_size: int = 60000
    embedding_size: int = 400
    hidden_size: int = 1152
    num_hidden_layers: int = 3
    tie_word_embeddings: bool = True
    input_dropout: float | None = None
    hidden_dropout: float | None = None
    embedding_dropout: float | None = None
    weight_dropout: float | None = None
    output_dropout: float | None = None
    dropout_multiplier: float = 1.0
    initializer_range: float = 0.1
    classifier_hidden_sizes: list[int] | None = None
    classifier_dropouts: list[float] | None = None
    bptt_chunk_length: int = 70
    max_len: int = 1440
    use_cache: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 3

    def __post_init__(self, **kwargs):
        if self.classifier_hidden_sizes is None:
            self.classifier_hidden_sizes = [50]
        if self.classifier_dropouts is None:
            # fastai: the classifier config's output_p (0.4) before the first linear, 0.1 before each later one.
            self.classifier_dropouts = [FASTAI_DROPOUTS["classifier"]["output_dropout"]] + [0.1] * len(
                self.classifier_hidden_sizes
            )
        # Checked here, not only in `validate_architecture`, because `@strict` wraps class-validator errors in its
        # own exception type and users expect a plain ValueError from a bad config value.
        self.check_values()
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation (also run by `config.validate()` after fields are changed)."""
        self.check_values()

    def check_values(self):
        """Raises `ValueError` naming the first field whose value is out of range."""
        for name in (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "bptt_chunk_length",
            "max_len",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AWDLSTMConfig.{name} must be a positive integer, got {value!r}")
        if self.dropout_multiplier < 0:
            raise ValueError(f"AWDLSTMConfig.dropout_multiplier must be >= 0, got {self.dropout_multiplier}")
        for name in ENCODER_DROPOUTS:
            for head in FASTAI_DROPOUTS:
                self._check_probability(name, self.scaled_dropout(name, head), head)
        if self.initializer_range < 0:
            raise ValueError(f"AWDLSTMConfig.initializer_range must be >= 0, got {self.initializer_range}")
        for i, size in enumerate(self.classifier_hidden_sizes):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(
                    f"AWDLSTMConfig.classifier_hidden_sizes[{i}] must be a positive integer, got {size!r}"
                )
        if len(self.classifier_dropouts) != len(self.classifier_hidden_sizes) + 1:
            raise ValueError(
                "AWDLSTMConfig.classifier_dropouts needs one entry per linear layer of the head "
                f"(len(classifier_hidden_sizes) + 1 = {len(self.classifier_hidden_sizes) + 1}), "
                f"got {len(self.classifier_dropouts)}"
            )
        for i in range(len(self.classifier_dropouts)):
            self._check_probability(f"classifier_dropouts[{i}]", self.classifier_dropout(i), "classifier")
        if self.max_len < self.bptt_chunk_length:
            raise ValueError(
                f"AWDLSTMConfig.max_len ({self.max_len}) must be at least bptt_chunk_length ({self.bptt_chunk_length})"
            )

    def _check_probability(self, name: str, scaled: float, head: str) -> None:
        if not 0.0 <= scaled < 1.0:
            unset = getattr(self, name, 0.0) is None
            raise ValueError(
                f"AWDLSTMConfig.{name} times dropout_multiplier must lie in [0, 1), got {scaled} for the {head} "
                f"(dropout_multiplier {self.dropout_multiplier}{', on fastai default' if unset else ''})"
            )

    def scaled_dropout(self, name: str, head: str = "language_model") -> float:
        """The dropout probability `name` (one of the five encoder/LM dropouts) after `dropout_multiplier`, for a
        model with `head` (`"language_model"` or `"classifier"`): fastai's value for that head when it is `None`."""
        value = getattr(self, name)
        if value is None:
            value = FASTAI_DROPOUTS[head][name]
        return value * self.dropout_multiplier

    def classifier_dropout(self, index: int) -> float:
        """The dropout before linear layer `index` of the classifier head: `dropout_multiplier` scales the first
        only, as fastai's `drop_mult` scales `output_p` and not `ps`."""
        p = self.classifier_dropouts[index]
        return p * self.dropout_multiplier if index == 0 else p


__all__ = ["AWDLSTMConfig"]
