"""The optional dependencies, each installed by a pip extra of tl_nlp (see pyproject.toml).

A feature that needs one imports it through [`import_extra`], so that without it the feature fails with one line
that names the extra to install, and everything else works.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


class MissingExtraError(ImportError):
    """A feature's optional dependency is not installed; the message names the extra that installs it."""


# module -> the extra of tl_nlp that installs it
EXTRA_OF_MODULE = {"peft": "lora", "matplotlib": "plot", "matplotlib.pyplot": "plot"}


def import_extra(module: str, feature: str) -> ModuleType:
    """Imports `module`, or raises an ImportError saying that `feature` needs it and which extra installs it.

    Example:

    ```python
    >>> peft = import_extra("peft", "LoRA")  # doctest: +SKIP
    ImportError: LoRA needs peft, which is not installed: pip install 'tl_nlp[lora]'
    ```
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise MissingExtraError(
            f"{feature} needs {package}, which is not installed: pip install 'tl_nlp[{EXTRA_OF_MODULE[module]}]'"
        ) from error


def is_peft_model(model: object) -> bool:
    """Whether `model` is a `peft.PeftModel`, without importing peft: one exists only once peft is imported, and a
    run without LoRA never imports it."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)
