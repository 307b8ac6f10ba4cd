"""Package attributes imported on first use (PEP 562), as transformers' `_LazyModule` does for its own names.

A package lists what it exports, module by module; `lazy_exports` returns the package's `__all__`, a module-level
`__getattr__` that imports the defining module when a name is first read (and caches it in the package), and a
`__dir__` for tab completion. `import tl_nlp` then costs what this file costs, and `from tl_nlp import X` pays for
X's module only.

This file imports only the standard library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, list[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """`__all__`, `__getattr__` and `__dir__` for `package`, whose names live in the submodules named in `exports`.

    Args:
        package: the package's `__name__`.
        exports: submodule (relative to `package`, e.g. `"models.awd_lstm"`) -> the names it defines that the package
            exports. A name may appear under one submodule only.

    Example:

    ```python
    >>> __all__, __getattr__, __dir__ = lazy_exports(__name__, {"metrics": ["Accuracy"]})  # doctest: +SKIP
    ```
    """
    module_of: dict[str, str] = {}
    for submodule, names in exports.items():
        for name in names:
            if name in module_of:
                raise ValueError(f"{package}: {name} is exported by both .{module_of[name]} and .{submodule}")
            module_of[name] = submodule
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        submodule = module_of.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{submodule}", package), name)
        namespace[name] = value  # later reads find it without calling this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return sorted(module_of), __getattr__, __dir__
