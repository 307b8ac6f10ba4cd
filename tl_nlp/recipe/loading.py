"""Loading what a stage starts from: the one check that a path is a saved model folder, the checkpoint's config and
tokenizer, its language-model objective and its model family (which decides the default learning rates).

A new way to load a model (a GGUF file, a model from another library) belongs here: `check_model_path` says what a
path must hold, `load_config`, `load_tokenizer` and `load_model` turn it into what transformers loads, and the stages
call nothing else. A GGUF file (`folder/x.gguf`, `user/repo/x.gguf`) works wherever a checkpoint does
(`tl_nlp.gguf`).
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from .. import gguf
from ..data import backward_tokenizer
from ..model_folders import ModelFolderError, check_model_folder, folder_kind
from .data import RecipeError

# Path prefixes that can only mean a local path, never a Hub id.
LOCAL_PREFIXES = (".", "/", "~")


def check_model_path(
    model_name_or_path: str | Path,
    kind: str | None = None,
    trust_remote_code: bool = False,
    tokenizer=None,
    not_kind: str | None = None,
) -> None:
    """Raises `RecipeError` when `model_name_or_path` is meant as a local folder but is not a saved model folder
    (it does not exist, has no `config.json`, its weights are empty or cut short, it needs code that was not
    allowed, its tokenizer outgrows the embeddings, or it is the wrong kind: see `tl_nlp.model_folders`). A Hub id
    (`"user/name"`) passes: loading it says what is wrong.

    Args:
        model_name_or_path: a folder written by `save_pretrained`, or a Hub id.
        kind: `"classifier"` or `"language model"` when only that kind will do.
        trust_remote_code: whether the user allowed the folder's own code.
        tokenizer: the folder's tokenizer, once loaded, to check against the embeddings.
        not_kind: a kind that will not do (a stage that starts from a base model or a language model refuses a
            classifier).
    """
    local = Path(model_name_or_path).expanduser()
    if gguf.split_gguf_path(model_name_or_path)[1] is not None:  # a GGUF file: no folder to check
        if not local.is_file() and (local.parent.exists() or str(model_name_or_path).startswith(LOCAL_PREFIXES)):
            raise RecipeError(f"{model_name_or_path} is not a GGUF file: it does not exist")
        return
    if not local.exists():
        if str(model_name_or_path).startswith(LOCAL_PREFIXES):
            raise RecipeError(f"{model_name_or_path} is not a saved model folder: it does not exist")
        return
    try:
        config = check_model_folder(local, kind, trust_remote_code, tokenizer)
    except ModelFolderError as error:
        raise RecipeError(str(error)) from None
    if not_kind is not None and folder_kind(config) == not_kind:
        architectures = ", ".join(config.get("architectures") or [])
        raise RecipeError(
            f"{model_name_or_path} holds a {not_kind} ({architectures}); this stage starts from a language model "
            "(or a base model): name the language-model folder."
        )


def load_config(
    model_name_or_path: str, trust_remote_code: bool = False, kind: str | None = None, not_kind: str | None = None
):
    """The checkpoint's config, with errors that say what is wrong with the path or the name (`kind`, `not_kind`:
    see [`check_model_path`])."""
    check_model_path(model_name_or_path, kind, trust_remote_code, not_kind=not_kind)
    try:
        return gguf.load_config(model_name_or_path, trust_remote_code=trust_remote_code)
    except gguf.MissingGGUFPackageError as error:
        raise RecipeError(str(error)) from error
    except (OSError, ValueError, KeyError) as error:
        raise RecipeError(f"cannot load model {model_name_or_path!r}: {str(error).splitlines()[0]}") from error


def load_model(model_class, model_name_or_path: str, **kwargs) -> PreTrainedModel:
    """`model_class.from_pretrained(model_name_or_path, **kwargs)`; a GGUF file is dequantised into a plain model
    that trains, saves and pushes like any other (`tl_nlp.gguf.load_model`)."""
    try:
        return gguf.load_model(model_class, model_name_or_path, **kwargs)
    except gguf.MissingGGUFPackageError as error:
        raise RecipeError(str(error)) from error


def load_tokenizer(model_name_or_path: str, backwards: bool = False, trust_remote_code: bool = False):
    """The checkpoint's tokenizer (turned into a backward one with `backwards=True`), with a pad token."""
    try:
        tokenizer = gguf.load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
    except gguf.MissingGGUFPackageError as error:
        raise RecipeError(str(error)) from error
    except (OSError, ValueError) as error:
        raise RecipeError(
            f"cannot load the tokenizer of {model_name_or_path!r}: {str(error).splitlines()[0]}"
        ) from error
    # A tokenizer that can produce ids past the embeddings would fail at the first forward pass.
    check_model_path(model_name_or_path, trust_remote_code=trust_remote_code, tokenizer=tokenizer)
    if backwards and not getattr(tokenizer, "reverse", False):
        tokenizer = backward_tokenizer(tokenizer)
    if tokenizer.pad_token is None:
        # GPT-style tokenizers have no pad token; padding with end-of-text is the usual choice (masked out anyway).
        if tokenizer.eos_token is None:
            raise RecipeError(f"the tokenizer of {model_name_or_path} has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_family(config) -> str:
    """`"awd_lstm"` or `"transformer"`: which default learning rates a checkpoint gets (`tl_nlp.recipe.config`)."""
    return "awd_lstm" if config.model_type == "awd_lstm" else "transformer"


def language_model_objective(config, tokenizer, requested: str = "auto") -> str:
    """`"stream"` (AWD-LSTM), `"masked"` (BERT-style) or `"causal"` (GPT-style) for a checkpoint's config."""
    if requested != "auto":
        if requested not in ("stream", "masked", "causal"):
            raise RecipeError(f'lm_objective must be "auto", "stream", "masked" or "causal", got {requested!r}')
        return requested
    if config.model_type == "awd_lstm":
        return "stream"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and tokenizer.mask_token is not None:
        return "masked"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise RecipeError(
        f"model type {config.model_type!r} has neither a masked-LM nor a causal-LM head in transformers; "
        "use an AWD-LSTM, BERT-style or GPT-style checkpoint"
    )


def objective_or_none(config, tokenizer) -> str:
    """The checkpoint's language-model objective for error messages and checks (`"none"` without an LM head)."""
    try:
        return language_model_objective(config, tokenizer)
    except RecipeError:
        return "none"
