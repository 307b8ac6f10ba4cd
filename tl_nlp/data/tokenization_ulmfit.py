"""The ULMFiT tokenizer as a transformers fast tokenizer.

ULMFiT's rules (`rules.py`) run in Python on the raw text; splitting into words and mapping to ids run in the Rust
`tokenizers` library (a word-level, BPE or unigram model). Two of the rules cannot be written as `tokenizers`
normalizers (`xxrep 4 !` and `xxwrep 3 very` need the length of a run), so the class is saved next to
`tokenizer.json` by `save_pretrained` and a saved folder loads with
`AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`, giving the same ids with or without tl_nlp
installed. This file imports only transformers, tokenizers and `rules.py` so that it can travel with the weights.
"""

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.tokenization_utils_base import BatchEncoding
from transformers.utils.generic import PaddingStrategy

from .rules import (
    BOS_TOKEN,
    EOS_TOKEN,
    FIELD_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNKNOWN_TOKEN,
    apply_rules,
    undo_rules,
)

# How the word-level model splits rule-processed text into words, written to agree with spaCy's English tokenizer
# (`spacy.blank("en")`, what fastai uses) on the cases that matter in practice. Spaces separate words and are dropped.
_PUNCTUATION = r"!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_{|}~…“”‘’«»—–"
# A word character: anything but whitespace and punctuation (digits, accents, `´` and control characters included).
_W = rf"[^\s{_PUNCTUATION}]"
_CLITIC = r"(?:s|m|re|ve|d|ll)"
# A run of word characters that stops before a final `n't` (`do|n't`): only an `n` needs the look-ahead.
_WORD_PART = rf"(?:[^\s{_PUNCTUATION}n]|n(?!'t(?!{_W})))+"
# Contractions written without an apostrophe, split where spaCy splits them (`can|not`, `gon|na`, `do|nt`).
_UNMARKED_CONTRACTIONS = {
    "nt": "ca|wo|do|does|did|is|was|are|were|have|has|had|could|should|would|ai",
    "not": "can",
    "na": "gon",
    "ta": "got",
    "s": "that|what",
    "m": "i",
    "d": "i",
}
WORD_SPLIT_PATTERN = "|".join(
    [
        # Whitespace other than a plain space (`\n\n` from `<br /><br />`) is a token, with one space after it.
        r"[^\S ]+ ?",
        # (Each alternative below first checks one character, a cheap test that fails at most positions.)
        rf"(?=[cdgitwha])(?<!{_W})(?:"
        + "|".join(rf"(?:{stems})(?={rest}(?!{_W}))" for rest, stems in _UNMARKED_CONTRACTIONS.items())
        + ")",
        # Numbers glued to a unit: `3|am`, `7|ft`.
        rf"(?=\d)(?<!{_W})\d+(?=(?:am|pm|ft|km|kg|cm|mm|mph|lbs?)(?!{_W}))",
        # Abbreviations that keep their period: single letters (`j.`), `co.`, `vs.`, `e.g.`, `i.e.`.
        rf"(?=[a-z]\.|co\.|vs\.|e\.g\.|i\.e\.)(?<!{_W})(?<!\.)(?:[a-z]|co|vs|e\.g|i\.e)\.(?!{_W}|\.)",
        rf"n't(?!{_W})",
        rf"'(?:{_CLITIC}|em|cause)(?!{_W})",
        # A word: inner apostrophes (`o'brien`), periods (`3.5`), `&` (`b&w`), `*` (`s**t`), commas between digits
        # (`1,000`) and hyphens before digits (`pg-13`) stay inside; a leading period and a final hyphen stick to it.
        rf"(?:(?<!\S)\.)?{_WORD_PART}(?:(?:'(?!{_CLITIC}(?!{_W}))|[.&](?={_W})|\*+(?={_W})|(?<=\d),(?=\d)"
        rf"|(?<=[a-z])-(?=\d)){_WORD_PART})*(?:-(?!-|{_W}))?",
        r"\.{2,}|-{2,}",
        rf"[:;=]-?[()dp](?!{_W})",
        r"\S",
    ]
)
MODEL_TYPES = ("word", "bpe", "unigram")


class ULMFiTTokenizerFast(PreTrainedTokenizerFast):
    r"""
    Tokenizer with ULMFiT's rules (HTML clean-up, `xxrep`, `xxwrep`, `xxup`, `xxmaj`, lower-casing) in front of a
    `tokenizers` word-level, BPE or unigram model. Every text starts with `xxbos`. Build one with
    [`train_ulmfit_tokenizer`]; load a saved one with `AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`.

    Args:
        tokenizer_file (`str`, *optional*):
            Path to a `tokenizer.json` holding the word splitting and the vocabulary.
        tokenizer_object (`tokenizers.Tokenizer`, *optional*):
            The backend tokenizer itself, instead of `tokenizer_file`.
        reverse (`bool`, defaults to `False`):
            Return every sequence's ids in reverse order (after truncation, before padding), for backward language
            models and classifiers, so that a backward model gets reversed ids from raw text in `pipeline()` too.

    A call on more than `pipeline_chunk_size` texts (1,024; a class attribute) without padding or tensors, as when a
    corpus is tokenized, runs the Python rules on one chunk while the Rust backend encodes the previous one; the ids
    are those of one call.

    Example:

    ```python
    >>> from tl_nlp.data import train_ulmfit_tokenizer
    >>> tokenizer = train_ulmfit_tokenizer(["The cat sat!!!", "The dog sat."] * 3, min_frequency=1)
    >>> tokenizer.tokenize("The CAT sat!!!")
    ['xxmaj', 'the', 'xxup', 'cat', 'sat', 'xxrep', '3', '!']
    >>> tokenizer.decode(tokenizer("The cat sat.")["input_ids"], skip_special_tokens=True)
    'The cat sat.'
    ```
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class = None
    # Texts per chunk when a larger unpadded batch is encoded as a pipeline (see `_encode_with_rules`).
    pipeline_chunk_size: int = 1024

    def __init__(self, tokenizer_file: str | None = None, reverse: bool = False, **kwargs):
        kwargs.setdefault("unk_token", UNKNOWN_TOKEN)
        kwargs.setdefault("pad_token", PAD_TOKEN)
        kwargs.setdefault("bos_token", BOS_TOKEN)
        kwargs.setdefault("eos_token", EOS_TOKEN)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        self.reverse = reverse
        super().__init__(tokenizer_file=tokenizer_file, reverse=reverse, **kwargs)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs) -> dict:
        # `tokenizer.json` holds the whole backend (word splitting, vocabulary, xxbos template): load it as saved,
        # rather than letting transformers rebuild a model from the vocabulary alone.
        return dict(kwargs)

    def _encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        if not self.reverse:
            return self._encode_with_rules(text, text_pair, **kwargs)
        # Reverse each sequence before padding so that padding stays on the tokenizer's padding side.
        padding_strategy = kwargs.pop("padding_strategy", PaddingStrategy.DO_NOT_PAD)
        return_tensors = kwargs.pop("return_tensors", None)
        return_attention_mask = kwargs.pop("return_attention_mask", None)
        kwargs.pop("return_offsets_mapping", None)
        encoded = self._encode_with_rules(
            text, text_pair, padding_strategy=PaddingStrategy.DO_NOT_PAD, return_tensors=None, **kwargs
        )
        is_batched = isinstance(text, (list, tuple))
        reversed_encoded = {}
        for key, values in encoded.items():
            if key in ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask"):
                values = [row[::-1] for row in values] if is_batched else values[::-1]
            reversed_encoded[key] = values
        padded = self.pad(
            reversed_encoded,
            padding=padding_strategy,
            max_length=kwargs.get("max_length"),
            pad_to_multiple_of=kwargs.get("pad_to_multiple_of"),
            padding_side=kwargs.get("padding_side"),
            return_attention_mask=return_attention_mask,
        )
        # One text with return_tensors gets a batch axis, as on the forward path (pipeline() calls it that way).
        return BatchEncoding(padded.data, tensor_type=return_tensors, prepend_batch_axis=not is_batched)

    def _encode_with_rules(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        """Applies the rules (unless the input is split into words already) and encodes with the Rust backend.

        A large unpadded batch of single texts (more than `pipeline_chunk_size` texts, as when a corpus is tokenized) is
        encoded in chunks as a pipeline: while one thread runs the Rust backend on a chunk (which releases the GIL and
        spreads the chunk over the `tokenizers` thread pool), this thread applies the Python rules to the next one.
        The ids are the same as in one call; only the wall-clock time differs.
        """
        encode = super()._encode_plus
        if kwargs.get("is_split_into_words", False):
            return encode(text, text_pair=text_pair, **kwargs)
        pipelined = (
            isinstance(text, (list, tuple))
            and len(text) > self.pipeline_chunk_size
            and text_pair is None
            and kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD) == PaddingStrategy.DO_NOT_PAD
            and kwargs.get("return_tensors") is None
            and not kwargs.get("return_overflowing_tokens", False)
        )
        if not pipelined:
            text = _apply_rules_to_input(text, "text")
            if text_pair is not None:
                text_pair = _apply_rules_to_input(text_pair, "text_pair")
            return encode(text, text_pair=text_pair, **kwargs)
        # One worker: chunks are encoded in order, one at a time, so the backend's settings are never shared.
        with ThreadPoolExecutor(max_workers=1) as worker:
            chunks = [
                worker.submit(
                    encode,
                    _apply_rules_to_input(text[start : start + self.pipeline_chunk_size], "text", start),
                    **kwargs,
                )
                for start in range(0, len(text), self.pipeline_chunk_size)
            ]
            encoded = [chunk.result() for chunk in chunks]
        data = {key: [row for chunk in encoded for row in chunk[key]] for key in encoded[0]}
        return BatchEncoding(data, [encoding for chunk in encoded for encoding in chunk.encodings])

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        token_ids = list(token_ids)
        if self.reverse:
            token_ids = token_ids[::-1]
        # Ids that do not begin a text (no xxbos) continue one, as the new tokens that the text-generation pipeline
        # decodes and appends to the prompt: they then start with the space that separates them from the text
        # before, like GPT-2's `Ġ` tokens, unless the first one attaches to the previous word (`.`, `n't`).
        continuation = bool(token_ids) and token_ids[0] != self.bos_token_id and not self.reverse
        if skip_special_tokens:
            # Only transformers' special tokens (xxbos, xxpad...) are skipped: xxmaj and friends are read by the rules.
            special_ids = set(self.all_special_ids)
            token_ids = [token_id for token_id in token_ids if token_id not in special_ids]
        tokens = self.convert_ids_to_tokens(token_ids)
        if not isinstance(self.backend_tokenizer.model, models.WordLevel):
            # Subword pieces: `▁` starts a new word; the rule tokens are whole words of their own.
            words: list[str] = []
            for token in tokens:
                if token in SPECIAL_TOKENS or token.startswith("▁") or not words or words[-1] in SPECIAL_TOKENS:
                    words.append(token.removeprefix("▁"))
                else:
                    words[-1] += token
            tokens = [word for word in words if word]
        if continuation and tokens:
            # The rules decide the spacing after a stand-in previous word, which is then dropped.
            return undo_rules(["x", *tokens])[1:]
        return undo_rules(tokens)


def _apply_rules_to_input(text, argument: str, first_row: int = 0):
    """Applies the rules to one text or a batch of texts, naming the row of any value that is not a string (rows
    count from `first_row`, for a chunk of a larger batch)."""
    if isinstance(text, str):
        return apply_rules(text)
    if isinstance(text, (list, tuple)):
        processed = []
        for row, value in enumerate(text, start=first_row):
            if not isinstance(value, str):
                raise TypeError(
                    f"ULMFiTTokenizerFast: `{argument}` row {row} is {type(value).__name__} ({value!r:.40}), "
                    "expected a string. Drop or fill missing texts before tokenizing."
                )
            processed.append(apply_rules(value))
        return processed
    raise TypeError(
        f"ULMFiTTokenizerFast: `{argument}` is {type(text).__name__}, expected a string or a list of strings."
    )


def ulmfit_backend(model_type: str) -> Tokenizer:
    """A blank backend tokenizer for `model_type`: word splitting (or Metaspace for subwords) and the model."""
    if model_type == "word":
        backend = Tokenizer(models.WordLevel(unk_token=UNKNOWN_TOKEN))
        # The pattern matches the tokens (`invert=True`); what lies between them (spaces) is dropped.
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_SPLIT_PATTERN), "removed", invert=True)
    elif model_type == "bpe":
        backend = Tokenizer(models.BPE(unk_token=UNKNOWN_TOKEN))
        backend.pre_tokenizer = _subword_pre_tokenizer()
    elif model_type == "unigram":
        backend = Tokenizer(models.Unigram())
        backend.pre_tokenizer = _subword_pre_tokenizer()
    else:
        raise ValueError(f"model_type={model_type!r} is not supported; choose one of {MODEL_TYPES}.")
    return backend


def _subword_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Words are the space-separated pieces left by the rules, each marked with a leading `▁` for decoding.
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Metaspace(prepend_scheme="always", split=False)]
    )


def _subword_trainer(model_type: str, vocab_size: int, min_frequency: int) -> trainers.Trainer:
    # The trainers add the special tokens first and as whole tokens, so `xxmaj` is never cut into pieces.
    if model_type == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
    return trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token=UNKNOWN_TOKEN, show_progress=False
    )


def train_ulmfit_tokenizer(
    texts: Iterable[str],
    model_type: str = "word",
    vocab_size: int = 60000,
    min_frequency: int = 3,
    reverse: bool = False,
    batch_size: int = 1000,
) -> ULMFiTTokenizerFast:
    """Builds a ULMFiT tokenizer whose vocabulary is learnt from `texts` (the rules are applied first).

    Args:
        texts: the training corpus, one document per item (a list, a generator or a `datasets` column).
        model_type: `"word"` (ULMFiT's word-level vocabulary), `"bpe"` or `"unigram"` (subword vocabularies, for
            languages and domains where words do not work well).
        vocab_size: maximum vocabulary size, special tokens included (ULMFiT: 60,000).
        min_frequency: a word needs at least this many occurrences to enter a word or BPE vocabulary (ULMFiT: 3).
        reverse: build a tokenizer for backward models (see [`ULMFiTTokenizerFast`]).
        batch_size: texts handed to the Rust trainer at a time.

    Returns:
        A [`ULMFiTTokenizerFast`] whose ids 0-8 are `xxunk xxpad xxbos xxeos xxfld xxrep xxwrep xxup xxmaj`.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r} is not supported; choose one of {MODEL_TYPES}.")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size={vocab_size} leaves no room next to the {len(SPECIAL_TOKENS)} special tokens.")
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency} must be at least 1.")
    backend = ulmfit_backend(model_type)
    if model_type == "word":
        # The word-level trainer leaves a gap in the ids when a special token also occurs in the corpus (xxmaj
        # always does), so the vocabulary is counted without them and rebuilt with the special tokens first.
        backend.train_from_iterator(
            _processed_batches(texts, batch_size),
            trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False),
        )
        by_frequency = sorted(backend.get_vocab().items(), key=lambda item: item[1])
        words = [word for word, _ in by_frequency if word not in SPECIAL_TOKENS][: vocab_size - len(SPECIAL_TOKENS)]
        vocab = {token: index for index, token in enumerate(list(SPECIAL_TOKENS) + words)}
        backend.model = models.WordLevel(vocab=vocab, unk_token=UNKNOWN_TOKEN)
    else:
        backend.train_from_iterator(
            _processed_batches(texts, batch_size), _subword_trainer(model_type, vocab_size, min_frequency)
        )
    for position, token in enumerate(SPECIAL_TOKENS):
        if backend.token_to_id(token) != position:
            raise RuntimeError(f"special token {token} landed at id {backend.token_to_id(token)}, expected {position}")
    # Every text starts with xxbos, as in fastai; a pair is joined with the field separator.
    bos_id = backend.token_to_id(BOS_TOKEN)
    field_id = backend.token_to_id(FIELD_TOKEN)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {FIELD_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id), (FIELD_TOKEN, field_id)],
    )
    return ULMFiTTokenizerFast(tokenizer_object=backend, reverse=reverse, additional_special_tokens=[FIELD_TOKEN])


def _processed_batches(texts: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    batch = []
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"train_ulmfit_tokenizer: text at row {row} is {type(text).__name__} ({text!r:.40}), expected a string."
            )
        batch.append(apply_rules(text))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


ULMFiTTokenizerFast.register_for_auto_class("AutoTokenizer")
