"""Checks on a model folder before anything loads from it, each failure one line that names the folder and the fix.

transformers finds most of these problems late or not at all: a truncated `model.safetensors` fails deep inside
`from_pretrained`, a language model loaded as a classifier gets a randomly initialised head (a warning, exit status
0), a tokenizer with more tokens than the embeddings fails at the first forward pass, and a folder whose config names
code of its own fails with a long message. [`check_model_folder`] catches all of them at load time; the commands call
it before `from_pretrained`.

Kinds: `"classifier"` (`...ForSequenceClassification`), `"language model"` (`...ForCausalLM`, `...LMHeadModel`,
`...ForMaskedLM`), or None to accept either. A folder whose config lists no architecture (a base model such as
`BertModel`) is neither, and is accepted only where training starts from it (`kind=None`).

Example:

```python
>>> check_model_folder("runs/clas", kind="classifier")  # doctest: +SKIP
>>> check_model_folder("runs/lm", kind="classifier")  # doctest: +SKIP
ModelFolderError: runs/lm holds a language model (AWDLSTMForCausalLM), not a classifier: ...
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .training.output_folders import COMMIT_FILE, STAGING_PREFIX

KINDS = ("classifier", "language model")
_LANGUAGE_MODEL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration")


class ModelFolderError(ValueError):
    """A model folder that cannot be used as asked; the message (one line) says why and what to do."""


def folder_kind(config: dict) -> str | None:
    """`"classifier"`, `"language model"` or None (no architecture, or one of another kind) from a config's
    `architectures`."""
    for architecture in config.get("architectures") or []:
        if architecture.endswith("ForSequenceClassification"):
            return "classifier"
        if architecture.endswith(_LANGUAGE_MODEL_SUFFIXES):
            return "language model"
    return None


def read_config(folder: str | os.PathLike) -> dict:
    """The folder's `config.json` as a dict; a missing or unreadable one is a [`ModelFolderError`]."""
    folder = Path(folder)
    path = folder / COMMIT_FILE
    if not path.is_file():
        staging = any(entry.name.startswith(STAGING_PREFIX) for entry in folder.iterdir())
        why = ": a save into it was interrupted; save or train the model again" if staging else ""
        raise ModelFolderError(f"{folder} is not a saved model folder (no {COMMIT_FILE} in it){why}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path}: not valid JSON ({error}); save the model again.") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path}: not a model configuration (a JSON object); save the model again.")
    return config


def check_weights(folder: str | os.PathLike) -> None:
    """Opens the header of every safetensors file of the folder (sharded ones through their index): an empty or
    truncated file is a [`ModelFolderError`] naming it. A folder with only pickled weights (`pytorch_model.bin`)
    is refused: loading a pickle can run code."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ModelFolderError(f"{index}: not a valid safetensors index; save the model again.") from None
    elif (folder / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    elif (folder / "adapter_model.safetensors").is_file():
        shards = ["adapter_model.safetensors"]
    elif any((folder / name).is_file() for name in ("pytorch_model.bin", "adapter_model.bin")):
        raise ModelFolderError(
            f"{folder} holds only pickled weights (pytorch_model.bin), which can run code when loaded; convert them to "
            "safetensors (model.save_pretrained(folder) with transformers) and load that folder."
        )
    else:
        raise ModelFolderError(f"{folder}: no model.safetensors (the weights); save or train the model again.")
    for shard in shards:
        path = folder / shard
        if not path.is_file():
            raise ModelFolderError(f"{path}: missing (named in the folder's weight index); copy or save it again.")
        try:
            with safe_open(str(path), framework="pt") as weights:
                weights.keys()
        except (SafetensorError, OSError) as error:
            size = path.stat().st_size
            raise ModelFolderError(
                f"{path}: unreadable weights ({size} bytes: {str(error).splitlines()[0]}); the file is empty or was "
                "cut short: copy or save it again."
            ) from None


def check_remote_code(folder: str | os.PathLike, config: dict, trust_remote_code: bool) -> None:
    """A folder whose model type transformers (and tl_nlp, once imported) does not know needs the folder's own code;
    without `trust_remote_code` that is a one-line [`ModelFolderError`] saying how to opt in."""
    model_type = config.get("model_type")
    if trust_remote_code or model_type in CONFIG_MAPPING:
        return
    if config.get("auto_map"):
        raise ModelFolderError(
            f"{folder}: model type {model_type!r} is not built into transformers or tl_nlp and needs the code shipped "
            "in the folder; read that code, then pass --trust_remote_code (trust_remote_code=True) to run it."
        )
    raise ModelFolderError(f"{folder}: unknown model type {model_type!r} in config.json (no code known for it).")


def check_tokenizer_fits(folder: str | os.PathLike, tokenizer, config: dict) -> None:
    """A tokenizer that can produce ids past the model's embedding table fails at the first forward pass, far from
    the cause; this names both sizes at load time."""
    vocab_size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if vocab_size is None or tokenizer is None:
        return
    if len(tokenizer) > vocab_size:
        raise ModelFolderError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's embeddings hold {vocab_size} "
            "(config vocab_size); save the tokenizer the model was trained with, or resize the embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) before training."
        )


def check_model_folder(
    folder: str | os.PathLike, kind: str | None = None, trust_remote_code: bool = False, tokenizer=None
) -> dict:
    """Checks a local model folder before it is loaded and returns its config as a dict.

    A name that is not a local folder (a Hub id) is left to transformers and returns `{}`.

    Args:
        folder: the model folder.
        kind: `"classifier"`, `"language model"`, or None for either.
        trust_remote_code: whether the user allowed the folder's own code.
        tokenizer: the folder's tokenizer, when already loaded, to check it against the embeddings.

    Raises:
        ModelFolderError: the folder is incomplete, its weights are empty or truncated, it is the other kind of model,
            it needs code the user did not allow, or its tokenizer is larger than the model's vocabulary.
    """
    if kind not in (None, *KINDS):
        raise ValueError(f"kind={kind!r} is not one of {KINDS} or None.")
    path = Path(folder)
    if not path.exists():
        if os.sep in str(folder) and str(folder).startswith((".", os.sep, "~")):
            raise ModelFolderError(f"{folder}: no such folder.")
        return {}
    if not path.is_dir():
        raise ModelFolderError(f"{folder} is a file; name the folder that holds config.json and the weights.")
    config = read_config(path)
    check_remote_code(path, config, trust_remote_code)
    found = folder_kind(config)
    if kind is not None and found != kind:
        architectures = ", ".join(config.get("architectures") or []) or "no architecture named"
        what = f"a {found}" if found else "a base model without a task head"
        hint = {
            "classifier": "train a classifier from it first (tl-nlp train / the classifier stage)",
            "language model": "name the language-model folder (the one the classifier was fine-tuned from)",
        }[kind]
        raise ModelFolderError(f"{folder} holds {what} ({architectures}), not a {kind}: {hint}.")
    check_weights(path)
    check_tokenizer_fits(path, tokenizer, config)
    return config
