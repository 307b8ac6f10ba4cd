"""`tl-nlp zero-shot`: classify texts with a causal language model and label words, no training
(`tl_nlp.zero_shot.ZeroShotLMClassifier`), one JSON line per text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM

from ..gguf import MissingGGUFPackageError, load_model, load_tokenizer
from ..recipe.data import RecipeError
from ..recipe.loading import check_model_path
from ..zero_shot import ZeroShotLMClassifier
from .io import UsageError, read_texts, write_output


@dataclass
class ZeroShotArguments:
    """Classify texts without training: the label whose word a causal language model finds most likely."""

    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of a causal language model with tokenizer."})
    labels: list[str] = field(metadata={"help": "The labels, e.g. --labels positive negative."})
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "A GGUF file in that folder or repo to read the model and tokenizer from (needs `gguf`)."},
    )
    label_words: list[str] | None = field(
        default=None,
        metadata={"help": "Word(s) for each label, in order, '|' between several: --label_words 'great|good' bad."},
    )
    template: list[str] | None = field(
        default=None,
        metadata={
            "help": "The prompt, with {text} where the text goes (with --chat: the user's message), or several "
            "(their label log-probabilities averaged, one pass each); default: three review prompts (with --chat, "
            "a question)."
        },
    )
    chat: bool = field(
        default=False, metadata={"help": "Ask in the tokenizer's chat template (measured worse for small models)."}
    )
    calibration_text: list[str] | None = field(
        default=None,
        metadata={
            "help": "Content-free text(s) (e.g. 'N/A', or a few unlabelled texts of the task) whose mean label "
            "scores are subtracted: --calibration_text 'N/A' '[MASK]'."
        },
    )
    input_file: str | None = field(
        default=None, metadata={"help": "Text file with one text per line; standard input when not given."}
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write the JSON lines; standard output when not given."}
    )
    batch_size: int = field(default=16, metadata={"help": "Texts per forward pass (>= 1)."})
    max_length: int | None = field(default=None, metadata={"help": "Keep the last this many prompt tokens (>= 1)."})
    device: str | None = field(default=None, metadata={"help": "'cpu', 'cuda'...; the best available when not given."})
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Run code shipped in the model folder (off, as in transformers: AWD-LSTM folders need none with "
            "tl_nlp installed; turn it on only for a folder whose code you have read)."
        },
    )

    def __post_init__(self):
        if len(self.labels) < 2:
            raise ValueError(f"labels must name at least 2 labels, got {self.labels}.")
        if self.label_words is not None and len(self.label_words) != len(self.labels):
            raise ValueError(
                f"label_words has {len(self.label_words)} entries for {len(self.labels)} labels: give one entry "
                "(words separated by '|') per label, in the order of --labels."
            )
        for template in self.template or []:
            if "{text}" not in template:
                raise ValueError(f"template must contain '{{text}}', got {template!r}.")
        blank = [i + 1 for i, text in enumerate(self.calibration_text or []) if not text.strip()]
        if blank:
            raise ValueError(
                f"calibration_text: text {blank[0]} of {len(self.calibration_text)} is empty; give non-empty "
                "content-free texts such as 'N/A'."
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 or not given, got {self.max_length}.")


def run_zero_shot(arguments: ZeroShotArguments) -> None:
    """`tl-nlp zero-shot`: read texts, classify them, write one JSON line per text."""
    path, trust = arguments.model_name_or_path, arguments.trust_remote_code
    if arguments.gguf_file is not None:
        path = f"{path.rstrip('/')}/{arguments.gguf_file}"  # one reference: tl_nlp.gguf reads folder/file.gguf
    try:
        check_model_path(path, "language model", trust)
        tokenizer = load_tokenizer(path, trust_remote_code=trust)
        check_model_path(path, "language model", trust, tokenizer=tokenizer)
        model = load_model(AutoModelForCausalLM, path, trust_remote_code=trust)
    except MissingGGUFPackageError as error:
        raise UsageError(str(error)) from error
    except RecipeError as error:
        raise UsageError(f"cannot load a causal language model from {path!r}: {error}") from error
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load a causal language model from {path!r}: {str(error).splitlines()[0]}") from error
    if arguments.device is not None:
        model = model.to(arguments.device)
    words = arguments.label_words or arguments.labels
    labels = {label: entry.split("|") for label, entry in zip(arguments.labels, words, strict=True)}
    texts = read_texts(arguments.input_file)
    classifier = ZeroShotLMClassifier(
        model,
        tokenizer,
        labels,
        template=arguments.template,
        batch_size=arguments.batch_size,
        max_length=arguments.max_length,
        calibration_text=arguments.calibration_text,
        chat=arguments.chat,
    )
    lines = [
        json.dumps({"text": text, **result}, ensure_ascii=False)
        for text, result in zip(texts, classifier(texts), strict=True)
    ]
    write_output("\n".join(lines) + "\n", arguments.output_file)
