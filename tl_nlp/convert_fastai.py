"""Conversion of fastai ULMFiT checkpoints (AWD-LSTM language models and classifiers) into tl_nlp folders.

A fastai checkpoint is two files: the weights (`learn.save(...)` or `torch.save(model.state_dict(), ...)`) and the
vocabulary (a pickled list of strings, `learn.dls.vocab`). Neither file can run code here: the weights are read with
`torch.load(weights_only=True)` and the vocabulary with an unpickler that builds nothing but lists and strings.

The converted folder holds an [`AWDLSTMForCausalLM`] or [`AWDLSTMForSequenceClassification`] whose config is read
from the tensor shapes, and a [`ULMFiTTokenizerFast`] with the same vocabulary in the same order, so every token id
means what it meant in fastai.

Example:

```python
>>> from tl_nlp import convert_fastai_checkpoint
>>> model = convert_fastai_checkpoint("models/lm.pth", "models/vocab.pkl", "wt103-fwd")  # doctest: +SKIP
```

Command line: `tl-nlp convert-fastai --weights lm.pth --vocab vocab.pkl --output_dir converted/` (`tl_nlp.cli.convert`).
"""

import io
import logging
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import models, processors
from transformers import PreTrainedModel

from .data.rules import BOS_TOKEN, FIELD_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, UNKNOWN_TOKEN
from .data.tokenization_ulmfit import ULMFiTTokenizerFast, ulmfit_backend
from .models.awd_lstm import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification

logger = logging.getLogger(__name__)

# fastai pads its vocabulary to a multiple of 8 with this token and never maps text to it.
FASTAI_FILLER_TOKEN = "xxfake"

# Dropouts are not stored in a checkpoint: a converted model gets fastai's defaults for its kind
# (`awd_lstm_lm_config` / `awd_lstm_clas_config`), which training scripts may scale with `dropout_multiplier`.
FASTAI_LM_DROPOUTS = dict(
    input_dropout=0.25, hidden_dropout=0.15, embedding_dropout=0.02, weight_dropout=0.2, output_dropout=0.1
)
FASTAI_CLASSIFIER_DROPOUTS = dict(
    input_dropout=0.4, hidden_dropout=0.3, embedding_dropout=0.05, weight_dropout=0.5, output_dropout=0.4
)
# fastai's `get_text_classifier(seq_len=72, max_len=72 * 20)`.
FASTAI_BPTT = 72
FASTAI_MAX_LEN = 72 * 20


class _FastaiOptimizerState:
    """Inert stand-in for `fastcore.foundation.L`, which `learn.save(with_opt=True)` pickles in the optimizer state.

    Allow-listing this class under that name lets `torch.load(weights_only=True)` read such files: the unpickler
    only sets attributes on an instance of this empty class, no fastai or fastcore code is imported or run.
    """


class _ListsAndStringsUnpickler(pickle.Unpickler):
    """Builds only what pickle builds without looking up a global (lists, tuples, dicts, strings, numbers)."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it asks for the global {module}.{name}; only lists and strings are accepted")


def load_fastai_vocab(path: str | Path) -> tuple[list[str], list[str] | None]:
    """Reads a fastai vocabulary pickle without running any code from it.

    Args:
        path: a pickled list of strings (`learn.dls.vocab` of a language model, `itos_wt103.pkl`), or a list of two
            such lists (a classifier's `[token vocab, class names]`).

    Returns:
        The token vocabulary and the class names (None when the file holds only tokens).

    Raises:
        ValueError: the file holds anything else, or asks pickle for a class or function (which is refused).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the fastai vocabulary {path}: {error}") from error
    try:
        vocab = _ListsAndStringsUnpickler(io.BytesIO(data)).load()
    except Exception as error:
        raise ValueError(
            f"refusing to load the fastai vocabulary {path}: {error}. Only a pickled list of strings is accepted; "
            "save one with `pickle.dump(list(learn.dls.vocab), f)` (classifiers: `list(learn.dls.vocab[0])`, and "
            "pass the class names with `labels`)."
        ) from error
    if isinstance(vocab, list) and len(vocab) == 2 and all(isinstance(part, list) for part in vocab):
        tokens, labels = vocab
        _check_strings(tokens, path, "[0]")
        _check_strings(labels, path, "[1]")
        return list(tokens), [str(label) for label in labels]
    _check_strings(vocab, path, "")
    return list(vocab), None


def _check_strings(values, path: Path, where: str) -> None:
    if not isinstance(values, list) or not values:
        raise ValueError(f"fastai vocabulary {path}{where} is {type(values).__name__}, expected a non-empty list")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(
                f"fastai vocabulary {path}{where} entry {index} is {type(value).__name__} ({value!r:.40}), "
                "expected a string"
            )


def load_fastai_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads fastai weights with `torch.load(weights_only=True)`: a bare state dict, or `learn.save`'s
    `{"model": state_dict, "opt": optimizer_state}` (the optimizer state is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fastai weights {path} do not exist")
    try:
        with torch.serialization.safe_globals([(_FastaiOptimizerState, "fastcore.foundation.L")]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"cannot load the fastai weights {path} safely (torch.load with weights_only=True): {error}"
        ) from error
    if isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"fastai weights {path} hold a {type(loaded).__name__}, expected a state dict of tensors")
    return dict(loaded)


def fastai_to_awd_lstm_state_dict(
    state_dict: dict[str, torch.Tensor], source: str = "state dict"
) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """Maps a fastai AWD-LSTM state dict onto tl_nlp's parameter names.

    Args:
        state_dict: weights of `get_language_model(AWD_LSTM, ...)` or `get_text_classifier(AWD_LSTM, ...)`.
        source: where the weights came from, for error messages.

    Returns:
        The kind (`"lm"` or `"classifier"`), the config values read from the shapes, and the state dict for
        [`AWDLSTMForCausalLM`] or [`AWDLSTMForSequenceClassification`].
    """
    if "0.module.encoder.weight" in state_dict:
        kind, encoder_prefix = "classifier", "0.module."
    elif "0.encoder.weight" in state_dict:
        kind, encoder_prefix = "lm", "0."
    elif "encoder.weight" in state_dict:
        raise ValueError(
            f"{source} holds only an encoder (`learn.save_encoder`): convert the language model saved with "
            "`learn.save` or the classifier instead"
        )
    else:
        raise ValueError(
            f"{source} is not a fastai AWD-LSTM: no `0.encoder.weight` (language model) or "
            f"`0.module.encoder.weight` (classifier) among its keys {sorted(state_dict)[:6]}..."
        )
    if any("_reverse" in key for key in state_dict):
        raise ValueError(f"{source} is a bidirectional AWD-LSTM (`bidir=True`), which tl_nlp does not support")
    if any(key.startswith(f"{encoder_prefix}rnns.0.layers") or ".linear." in key for key in state_dict):
        raise ValueError(f"{source} is a QRNN (`qrnn=True`) model, which tl_nlp does not support")

    def take(key: str) -> torch.Tensor:
        if key not in state_dict:
            raise ValueError(f"{source} has no tensor `{key}`; is it a fastai AWD-LSTM checkpoint?")
        return state_dict[key]

    embeddings = take(f"{encoder_prefix}encoder.weight")
    vocab_size, embedding_size = embeddings.shape
    layer_indices = sorted(
        {int(m.group(1)) for key in state_dict if (m := re.match(rf"{re.escape(encoder_prefix)}rnns\.(\d+)\.", key))}
    )
    if not layer_indices or layer_indices != list(range(len(layer_indices))):
        raise ValueError(f"{source} has LSTM layers {layer_indices}, expected 0, 1, 2...")
    num_layers = len(layer_indices)
    converted = {"awd_lstm.embeddings.weight": embeddings}
    hidden_size = None
    input_size = embedding_size
    for i in layer_indices:
        prefix = f"{encoder_prefix}rnns.{i}."
        # fastai's WeightDropout keeps the hidden-to-hidden matrix as `weight_hh_l0_raw` next to the wrapped LSTM.
        hh_key = (
            f"{prefix}weight_hh_l0_raw"
            if f"{prefix}weight_hh_l0_raw" in state_dict
            else f"{prefix}module.weight_hh_l0"
        )
        weight_hh = take(hh_key)
        size = weight_hh.shape[1]
        if i < num_layers - 1:
            hidden_size = size if hidden_size is None else hidden_size
            expected = hidden_size
        else:
            expected = embedding_size
        tensors = {
            "weight_ih": take(f"{prefix}module.weight_ih_l0"),
            "weight_hh": weight_hh,
            "bias_ih": take(f"{prefix}module.bias_ih_l0"),
            "bias_hh": take(f"{prefix}module.bias_hh_l0"),
        }
        shapes = {
            "weight_ih": (4 * expected, input_size),
            "weight_hh": (4 * expected, expected),
            "bias_ih": (4 * expected,),
            "bias_hh": (4 * expected,),
        }
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != shapes[name]:
                raise ValueError(
                    f"{source}: LSTM layer {i} `{name}` has shape {tuple(tensor.shape)}, expected {shapes[name]} "
                    f"(embedding size {embedding_size}, hidden size {hidden_size})"
                )
            converted[f"awd_lstm.layers.{i}.{name}"] = tensor
        input_size = expected
    values = dict(
        vocab_size=vocab_size,
        embedding_size=embedding_size,
        hidden_size=hidden_size if hidden_size is not None else embedding_size,
        num_hidden_layers=num_layers,
    )

    if kind == "lm":
        decoder = take("1.decoder.weight")
        if tuple(decoder.shape) != (vocab_size, embedding_size):
            raise ValueError(
                f"{source}: `1.decoder.weight` has shape {tuple(decoder.shape)}, expected {(vocab_size, embedding_size)}"
            )
        tied = torch.equal(decoder, embeddings)
        values["tie_word_embeddings"] = tied
        if not tied:
            converted["decoder.weight"] = decoder
        # fastai's `out_bias=False` decoder equals ours with a zero bias.
        converted["decoder.bias"] = state_dict.get("1.decoder.bias", torch.zeros(vocab_size, dtype=decoder.dtype))
        return kind, values, converted

    # fastai's head: LinBnDrop blocks `1.layers.{j}` = (0) BatchNorm1d, (1) Dropout, (2) Linear (no bias after a
    # BatchNorm), (3) ReLU except in the last block. Ours is the same sequence flattened, 4 modules per block.
    block_indices = sorted({int(m.group(1)) for key in state_dict if (m := re.match(r"1\.layers\.(\d+)\.", key))})
    if not block_indices or block_indices != list(range(len(block_indices))):
        raise ValueError(f"{source}: classifier head blocks {block_indices}, expected 1.layers.0, 1.layers.1...")
    sizes = [3 * embedding_size]
    for j in block_indices:
        linear = take(f"1.layers.{j}.2.weight")
        if linear.dim() != 2 or linear.shape[1] != sizes[-1]:
            raise ValueError(
                f"{source}: `1.layers.{j}.2.weight` has shape {tuple(linear.shape)}, expected (?, {sizes[-1]}); "
                "only fastai's PoolingLinearClassifier head (BatchNorm, Dropout, Linear blocks) is supported"
            )
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            converted[f"classifier.layers.{4 * j}.{name}"] = take(f"1.layers.{j}.0.{name}")
        converted[f"classifier.layers.{4 * j + 2}.weight"] = linear
        converted[f"classifier.layers.{4 * j + 2}.bias"] = state_dict.get(
            f"1.layers.{j}.2.bias", torch.zeros(linear.shape[0], dtype=linear.dtype)
        )
        sizes.append(linear.shape[0])
    values["classifier_hidden_sizes"] = sizes[1:-1]
    values["num_labels"] = sizes[-1]
    return kind, values, converted


def ulmfit_tokenizer_from_fastai_vocab(vocab: Sequence[str], reverse: bool = False) -> ULMFiTTokenizerFast:
    """A word-level ULMFiT tokenizer whose token ids are the positions in fastai's vocabulary.

    Text maps to ids as in fastai's `Numericalize`: a word's id is its position in `vocab` (its last position if it
    occurs twice), unknown words and fastai's `xxfake` fillers map to `xxunk`. Entries text can never reach (the
    fillers, earlier duplicates) keep their id under a name with a space in it (`"xxfake 57"`), which the word
    splitter never produces, so the vocabulary keeps fastai's length and order.
    """
    for token in (UNKNOWN_TOKEN, PAD_TOKEN, BOS_TOKEN):
        if token not in vocab:
            raise ValueError(f"the fastai vocabulary has no `{token}`; is it a ULMFiT vocabulary?")
    last_position = {token: index for index, token in enumerate(vocab)}
    names = {}
    for index, token in enumerate(vocab):
        reachable = token != FASTAI_FILLER_TOKEN and last_position[token] == index
        names[token if reachable else f"{token} {index}"] = index
    # The word splitter of `train_ulmfit_tokenizer`'s word-level model.
    backend = ulmfit_backend("word")
    backend.model = models.WordLevel(vocab=names, unk_token=UNKNOWN_TOKEN)
    special = [(BOS_TOKEN, last_position[BOS_TOKEN])]
    pair = f"{BOS_TOKEN} $A {BOS_TOKEN} $B"
    if FIELD_TOKEN in last_position:
        special.append((FIELD_TOKEN, last_position[FIELD_TOKEN]))
        pair = f"{BOS_TOKEN} $A {FIELD_TOKEN} $B"
    # fastai starts every text with xxbos (its `lowercase` rule adds it).
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS_TOKEN} $A", pair=pair, special_tokens=special)
    extra = [FIELD_TOKEN] if FIELD_TOKEN in last_position else []
    tokenizer = ULMFiTTokenizerFast(tokenizer_object=backend, reverse=reverse, additional_special_tokens=extra)
    missing_rules = [token for token in SPECIAL_TOKENS if token not in last_position]
    if missing_rules:
        logger.warning("the fastai vocabulary lacks %s: the rules' markers map to xxunk", missing_rules)
    return tokenizer


def convert_fastai_checkpoint(
    weights_path: str | Path,
    vocab_path: str | Path,
    output_dir: str | Path,
    labels: Sequence[str] | None = None,
    backwards: bool = False,
    bptt: int = FASTAI_BPTT,
    max_len: int = FASTAI_MAX_LEN,
    config_overrides: dict | None = None,
) -> PreTrainedModel:
    """Turns a fastai AWD-LSTM language model or classifier into a tl_nlp folder (model, config, tokenizer).

    Args:
        weights_path: the `.pth` written by `learn.save` (with or without the optimizer) or
            `torch.save(model.state_dict())`.
        vocab_path: the pickled vocabulary (a list of strings, or `[tokens, class names]`).
        output_dir: folder to write; it loads with `AutoModelForCausalLM` / `AutoModelForSequenceClassification`
            and `AutoTokenizer` (with `trust_remote_code=True` where tl_nlp is not installed).
        labels: class names of a classifier, in fastai's order (`learn.dls.vocab[1]`); default: from the vocabulary
            file if it holds them, else `LABEL_0`, `LABEL_1`...
        backwards: the model reads text backwards (fastai's `backwards=True`): the tokenizer reverses the ids.
        bptt: fastai's `seq_len`, the chunk length of the classifier's reading (BPT3C).
        max_len: fastai's `max_len`, how many final tokens of a document the classifier pools over.
        config_overrides: other [`AWDLSTMConfig`] values (dropouts default to fastai's for the model's kind).

    Returns:
        The converted model, in eval mode.
    """
    state_dict = load_fastai_state_dict(weights_path)
    vocab, vocab_labels = load_fastai_vocab(vocab_path)
    kind, values, converted = fastai_to_awd_lstm_state_dict(state_dict, source=f"fastai weights {weights_path}")
    if len(vocab) != values["vocab_size"]:
        raise ValueError(
            f"the vocabulary {vocab_path} has {len(vocab)} tokens but the embeddings in {weights_path} have "
            f"{values['vocab_size']} rows: are they from the same model?"
        )
    values.update(FASTAI_LM_DROPOUTS if kind == "lm" else FASTAI_CLASSIFIER_DROPOUTS)
    values.update(
        pad_token_id=vocab.index(PAD_TOKEN),
        bos_token_id=vocab.index(BOS_TOKEN),
        eos_token_id=vocab.index("xxeos") if "xxeos" in vocab else None,
    )
    if kind == "classifier":
        hidden = values["classifier_hidden_sizes"]
        values.update(
            bptt_chunk_length=bptt,
            max_len=max_len,
            classifier_dropouts=[values["output_dropout"]] + [0.1] * len(hidden),
        )
        labels = list(labels) if labels is not None else vocab_labels
        if labels is not None:
            if len(labels) != values["num_labels"]:
                raise ValueError(
                    f"{len(labels)} labels given ({labels[:5]}...) but the classifier in {weights_path} has "
                    f"{values['num_labels']} outputs"
                )
            values["id2label"] = dict(enumerate(labels))
            values["label2id"] = {label: index for index, label in enumerate(labels)}
    elif labels is not None:
        raise ValueError(f"labels were given but {weights_path} is a language model, not a classifier")
    values.update(config_overrides or {})
    config = AWDLSTMConfig(**values)
    model_class = AWDLSTMForCausalLM if kind == "lm" else AWDLSTMForSequenceClassification
    model = model_class(config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    # A tied decoder is the embedding matrix itself, so it is not among the converted tensors.
    missing = [key for key in missing if not (key == "decoder.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"conversion bug: missing {missing}, unexpected {unexpected}")
    model.eval()
    tokenizer = ulmfit_tokenizer_from_fastai_vocab(vocab, reverse=backwards)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    logger.info("converted fastai %s %s into %s", kind, weights_path, output_dir)
    return model


__all__ = [
    "convert_fastai_checkpoint",
    "fastai_to_awd_lstm_state_dict",
    "load_fastai_state_dict",
    "load_fastai_vocab",
    "ulmfit_tokenizer_from_fastai_vocab",
]
