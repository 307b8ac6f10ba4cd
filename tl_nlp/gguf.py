"""Models and tokenizers from GGUF files (llama.cpp's format) as plain Hugging Face models.

transformers reads a GGUF file with `from_pretrained(folder_or_repo, gguf_file=NAME)` once the `gguf` package is
installed, but the model it returns keeps a GGUF `quantization_config`, refuses `save_pretrained` and is marked as
not trainable. tl_nlp fine-tunes, saves, pushes and serves the models it starts from, so [`load_model`] dequantises a
GGUF checkpoint into a fresh model of the same class, built from the same config without `quantization_config`, and
loads the float weights into it: from then on it is an ordinary checkpoint (its folder has `model.safetensors` and a
`config.json` that any `from_pretrained` reads, with or without tl_nlp or `gguf`).

Every place in tl_nlp that names a model loads through [`load_model`] / [`load_tokenizer`] / [`load_config`], so a
`model_name_or_path` that ends in `.gguf` (a local file, or `user/repo/file.gguf` on the Hub), or a `gguf_file` given
next to the folder or repo, works wherever a checkpoint does: the recipe API, every `tl-nlp` command and the configs.
[`convert_gguf`] writes the plain folder once for tools that only take a folder.

```python
>>> from transformers import AutoModelForCausalLM
>>> from tl_nlp.gguf import load_model, load_tokenizer
>>> model = load_model(AutoModelForCausalLM, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
...                    gguf_file="smollm2-135m-instruct-q8_0.gguf")  # doctest: +SKIP
>>> model.save_pretrained("runs/smollm2")  # a plain safetensors checkpoint  # doctest: +SKIP
```
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

# What the error says to install; the extra is declared in pyproject.toml's optional-dependencies.
GGUF_EXTRA_HINT = "pip install 'tl_nlp[gguf]' (or: pip install gguf)"


class MissingGGUFPackageError(ImportError):
    """Raised when a GGUF file is named but the `gguf` package (tl_nlp's `gguf` extra) is not installed."""


def require_gguf(gguf_file: str) -> None:
    """Raises [`MissingGGUFPackageError`] with one line naming the extra when `gguf` is not installed."""
    if importlib.util.find_spec("gguf") is None:
        raise MissingGGUFPackageError(
            f"gguf_file={gguf_file!r} needs the `gguf` package, tl_nlp's optional `gguf` extra: {GGUF_EXTRA_HINT}."
        )


def split_gguf_path(model_name_or_path: str | Path, gguf_file: str | None = None) -> tuple[str, str | None]:
    """`(folder or Hub repo, GGUF file name or None)`: a path ending in `.gguf` (`"models/x.gguf"`,
    `"user/repo/x.gguf"`) names the file and the folder or repo holding it, so that every option that takes a
    `model_name_or_path` takes a GGUF file too; an explicit `gguf_file` is kept as it is."""
    path = str(model_name_or_path)
    if gguf_file is None and path.lower().endswith(".gguf"):
        folder, _, name = path.replace(os.sep, "/").rpartition("/")
        return folder or ".", name
    return path, gguf_file


def _dequantizing_config(gguf_file: str) -> dict[str, Any]:
    """`from_pretrained` keywords that unpack every GGUF block into float weights at load time.

    Recent transformers can keep GGUF weights packed (when the `kernels` package provides matmul kernels); a packed
    model cannot be trained or copied into a plain one, so tl_nlp always asks for the dense weights. Older versions
    dequantise anyway and have no such option.
    """
    config_class = getattr(transformers, "GgufConfig", None)
    if config_class is None or "dequantize" not in inspect.signature(config_class.__init__).parameters:
        return {}
    return {"quantization_config": config_class(gguf_file=gguf_file, dequantize=True)}


def load_model(
    model_class: Any, model_name_or_path: str, gguf_file: str | None = None, **kwargs: Any
) -> PreTrainedModel:
    """`model_class.from_pretrained(model_name_or_path, **kwargs)`, or from the GGUF file `gguf_file` in that folder
    or Hub repo, dequantised into a plain model of the same class that saves, trains and pushes like any other.

    Args:
        model_class: an Auto class (`AutoModelForCausalLM`, `AutoModelForSequenceClassification`...) or a model class.
        model_name_or_path: a folder or a Hub id; with `gguf_file`, the folder or repo that holds the file.
        gguf_file: the GGUF file's name in `model_name_or_path` (or a path to it); `None` for an ordinary checkpoint.
        kwargs: passed to `from_pretrained` (`num_labels`, `dtype`, `trust_remote_code`...).

    A `model_name_or_path` ending in `.gguf` names the file itself (see [`split_gguf_path`]).

    Raises:
        MissingGGUFPackageError: `gguf_file` is given and the `gguf` package is missing (one line naming the extra).
    """
    model_name_or_path, gguf_file = split_gguf_path(model_name_or_path, gguf_file)
    if gguf_file is None:
        return model_class.from_pretrained(model_name_or_path, **kwargs)
    require_gguf(gguf_file)
    loaded = model_class.from_pretrained(
        model_name_or_path, gguf_file=gguf_file, **_dequantizing_config(gguf_file), **kwargs
    )
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A fresh model of the loaded class, from the same config (architecture, labels, dtype): the GGUF quantizer, its
    # hooks and its refusal to save stay with the loaded copy, which is dropped.
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.to(dtype=loaded.dtype)
    if model.can_generate():
        model.generation_config = copy.deepcopy(loaded.generation_config)
    model.train(loaded.training)
    return model


def load_tokenizer(model_name_or_path: str, gguf_file: str | None = None, **kwargs: Any):
    """`AutoTokenizer.from_pretrained(model_name_or_path, **kwargs)`, or the tokenizer stored in the GGUF file
    (its vocabulary, merges, special tokens and chat template), which saves as an ordinary `tokenizer.json`."""
    model_name_or_path, gguf_file = split_gguf_path(model_name_or_path, gguf_file)
    if gguf_file is None:
        return AutoTokenizer.from_pretrained(model_name_or_path, **kwargs)
    require_gguf(gguf_file)
    return AutoTokenizer.from_pretrained(model_name_or_path, gguf_file=gguf_file, **kwargs)


def load_config(model_name_or_path: str, gguf_file: str | None = None, **kwargs: Any):
    """`AutoConfig.from_pretrained(model_name_or_path, **kwargs)`, or the config stated in the GGUF file's metadata
    (without `quantization_config`: the model [`load_model`] returns has none)."""
    model_name_or_path, gguf_file = split_gguf_path(model_name_or_path, gguf_file)
    if gguf_file is None:
        return AutoConfig.from_pretrained(model_name_or_path, **kwargs)
    require_gguf(gguf_file)
    config = AutoConfig.from_pretrained(model_name_or_path, gguf_file=gguf_file, **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def convert_gguf(model_name_or_path: str, gguf_file: str, output_dir: str | Path, model_class: Any = None) -> Path:
    """Writes the GGUF checkpoint as a plain Hugging Face folder (safetensors weights, config, tokenizer) and returns
    its path: what tools that take only a folder (`pipeline()`, another library) read.

    Args:
        model_name_or_path: the folder or Hub repo holding the file.
        gguf_file: the file's name there.
        output_dir: the folder to write.
        model_class: the class to load it as; `AutoModelForCausalLM` (GGUF files hold language models) by default.
    """
    model_class = model_class or transformers.AutoModelForCausalLM
    output_dir = Path(output_dir)
    load_model(model_class, model_name_or_path, gguf_file=gguf_file).save_pretrained(output_dir)
    load_tokenizer(model_name_or_path, gguf_file=gguf_file).save_pretrained(output_dir)
    return output_dir
