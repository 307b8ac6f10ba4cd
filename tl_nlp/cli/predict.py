"""`tl-nlp predict` and `tl-nlp generate`: a saved classifier or language model through transformers' `pipeline()`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from ..recipe.data import RecipeError
from ..recipe.loading import check_model_path
from .io import UsageError, read_texts, write_output

TRUST_REMOTE_CODE_HELP = (
    "Run code shipped in the model folder (off, as in transformers: AWD-LSTM folders need none with tl_nlp "
    "installed; turn it on only for a folder whose code you have read)."
)


@dataclass
class PredictArguments:
    """Classify texts with a saved classifier (any `AutoModelForSequenceClassification` folder or Hub id)."""

    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of a text classifier with its tokenizer."})
    input_file: str | None = field(
        default=None, metadata={"help": "Text file with one text per line; standard input when not given."}
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write the JSON lines; standard output when not given."}
    )
    batch_size: int = field(default=16, metadata={"help": "Texts per forward pass (>= 1)."})
    device: str | None = field(
        default=None, metadata={"help": "'cpu', 'cuda', 'cuda:1'...; the best available when not given."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": TRUST_REMOTE_CODE_HELP})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class GenerateArguments:
    """Continue a prompt with a saved language model (any `AutoModelForCausalLM` folder or Hub id)."""

    model_name_or_path: str = field(
        metadata={"help": "Folder (or Hub id) of a causal language model with its tokenizer."}
    )
    prompt: str = field(default="", metadata={"help": "Text to continue; standard input when empty."})
    max_new_tokens: int = field(default=50, metadata={"help": "How many tokens to generate (>= 1)."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (True) or take the most likely token (False)."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (> 0)."})
    top_k: int = field(default=40, metadata={"help": "Sample among the k most likely tokens (0: no limit)."})
    top_p: float = field(
        default=1.0, metadata={"help": "Nucleus sampling: smallest set with this probability (0, 1]."}
    )
    num_return_sequences: int = field(default=1, metadata={"help": "How many continuations (>= 1)."})
    seed: int | None = field(default=None, metadata={"help": "Random seed, for repeatable samples."})
    device: str | None = field(default=None, metadata={"help": "'cpu', 'cuda'...; the best available when not given."})
    trust_remote_code: bool = field(default=False, metadata={"help": TRUST_REMOTE_CODE_HELP})

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:  # NaN included
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}")


KINDS = {"text-classification": "classifier", "text-generation": "language model"}


def load_pipeline(task: str, model_name_or_path: str, device: str | None, trust_remote_code: bool):
    """transformers' `pipeline(task)` for a model folder or Hub id, after the folder checks (`check_model_path`):
    the wrong kind of folder, damaged weights, code the user did not allow and a tokenizer larger than the
    embeddings are one-line errors, not a randomly initialised head or a traceback."""
    import torch
    from transformers import AutoTokenizer, pipeline

    kind = KINDS[task]
    try:
        check_model_path(model_name_or_path, kind, trust_remote_code)
        if device is not None:
            torch.device(device)
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
        check_model_path(model_name_or_path, kind, trust_remote_code, tokenizer=tokenizer)
        return pipeline(
            task, model=model_name_or_path, tokenizer=tokenizer, device=device, trust_remote_code=trust_remote_code
        )
    except RecipeError as error:
        raise UsageError(str(error)) from error
    except RuntimeError as error:  # torch: a device string it does not know
        raise UsageError(f"--device {device!r}: {str(error).splitlines()[0]}") from error
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load {model_name_or_path!r}: {str(error).splitlines()[0]}") from error


def run_predict(arguments: PredictArguments) -> None:
    classifier = load_pipeline(
        "text-classification", arguments.model_name_or_path, arguments.device, arguments.trust_remote_code
    )
    texts = read_texts(arguments.input_file)
    # Batches of texts of similar length carry little padding (what fastai's get_preds does); the answers are put
    # back in input order. A classifier's answer for a text does not depend on its batch.
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]), reverse=True)
    sorted_results = classifier([texts[index] for index in order], batch_size=arguments.batch_size, top_k=None)
    results = [None] * len(texts)
    for index, result in zip(order, sorted_results, strict=True):
        results[index] = result
    lines = []
    for text, scores in zip(texts, results, strict=True):
        best = max(scores, key=lambda item: item["score"])
        lines.append(
            json.dumps(
                {
                    "text": text,
                    "label": best["label"],
                    "score": best["score"],
                    "scores": {item["label"]: item["score"] for item in scores},
                },
                ensure_ascii=False,
            )
        )
    write_output("\n".join(lines) + "\n", arguments.output_file)


def run_generate(arguments: GenerateArguments) -> None:
    from transformers import set_seed

    generator = load_pipeline(
        "text-generation", arguments.model_name_or_path, arguments.device, arguments.trust_remote_code
    )
    prompt = arguments.prompt if arguments.prompt.strip() else sys.stdin.read().strip()
    if not prompt.strip():
        raise UsageError("no prompt: pass --prompt or write it to standard input")
    if arguments.seed is not None:
        set_seed(arguments.seed)
    outputs = generator(
        prompt,
        max_new_tokens=arguments.max_new_tokens,
        do_sample=arguments.do_sample,
        temperature=arguments.temperature,
        top_k=arguments.top_k,
        top_p=arguments.top_p,
        num_return_sequences=arguments.num_return_sequences,
    )
    print("\n".join(json.dumps({"generated_text": out["generated_text"]}, ensure_ascii=False) for out in outputs))
