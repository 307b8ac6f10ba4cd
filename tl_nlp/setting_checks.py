"""Checks on the settings a user types (CLI flags, YAML files, recipe arguments), each failure one line naming the field.

YAML and argparse let through values that transformers accepts and then misuses: `num_train_epochs: 0` trains
nothing and saves an untrained model, `learning_rate: .nan` trains to NaN, `per_device_train_batch_size: 8.5`
fails deep in a dataloader, `seed: null` is a `TypeError` in `set_seed`, and `class_names: negative` (one string)
iterates into eight one-letter classes. The recipe's and the CLI's argument dataclasses call these functions from
`__post_init__`, so a bad value stops the run before anything loads, with a [`SettingError`] (a `ValueError`).

Example:

```python
>>> check_positive_number("learning_rate", 2e-5)
>>> check_positive_number("num_train_epochs", 0)
Traceback (most recent call last):
...
tl_nlp.setting_checks.SettingError: num_train_epochs must be a number above 0, got 0.

```
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence


class SettingError(ValueError):
    """A setting with a value that cannot work; the message (one line) names the field and the allowed values."""


def _shown(value) -> str:
    return "null (None)" if value is None else repr(value) if isinstance(value, str) else str(value)


def check_positive_number(name: str, value, allow_zero: bool = False, maximum: float | None = None) -> None:
    """A finite real number above 0 (or at least 0 with `allow_zero`), and at most `maximum` if given."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
        or (maximum is not None and value > maximum)
    ):
        bound = "at least 0" if allow_zero else "above 0"
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise SettingError(f"{name} must be a number {bound}{upper}, got {_shown(value)}.")


def check_whole_number(name: str, value, minimum: int = 1, optional: bool = False) -> None:
    """An integer (`8`, or a float with no fraction such as `8.0` from YAML is refused too: say `8`) of at least
    `minimum`; None passes only when `optional`."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SettingError(f"{name} must be a whole number of at least {minimum}, got {_shown(value)}.")


def check_seed(value, name: str = "seed") -> None:
    """A seed is a whole number of at least 0 (`seed: null` would break `set_seed` in the middle of a run)."""
    check_whole_number(name, value, minimum=0)


def check_class_names(value, name: str = "class_names") -> None:
    """None, or a list of at least two distinct non-empty strings (`class_names: negative` is one string)."""
    if value is None:
        return
    if isinstance(value, str):
        raise SettingError(
            f"{name} must be a list such as [negative, positive], got the single string {value!r}"
            + (" (write it as a list, comma-separated on the command line)." if "," not in value else ".")
        )
    if not isinstance(value, Sequence) or len(value) < 2:
        raise SettingError(f"{name} must list at least two classes, got {_shown(value)}.")
    for index, class_name in enumerate(value):
        if not isinstance(class_name, str) or not class_name.strip():
            raise SettingError(f"{name}[{index}] must be a non-empty string, got {_shown(class_name)}.")
    repeated = sorted({class_name for class_name in value if list(value).count(class_name) > 1})
    if repeated:
        raise SettingError(f"{name} repeats {repeated}; each class needs its own name.")


def check_training_settings(
    learning_rate=None,
    num_train_epochs=None,
    per_device_train_batch_size=None,
    per_device_eval_batch_size=None,
    seed=None,
    check_seed_value: bool = True,
    **other_positive_numbers,
) -> None:
    """The settings every training stage shares; fields left at None (not given) are not checked, except `seed`.

    Args:
        learning_rate: above 0 and finite.
        num_train_epochs: above 0 and finite (a fraction of an epoch is allowed, as in transformers).
        per_device_train_batch_size / per_device_eval_batch_size: whole numbers of at least 1.
        seed: a whole number of at least 0 (checked even when None, unless `check_seed_value=False`).
        other_positive_numbers: more `name=value` pairs that must be finite and above 0.
    """
    if learning_rate is not None:
        check_positive_number("learning_rate", learning_rate)
    if num_train_epochs is not None:
        check_positive_number("num_train_epochs", num_train_epochs)
    for name, value in (
        ("per_device_train_batch_size", per_device_train_batch_size),
        ("per_device_eval_batch_size", per_device_eval_batch_size),
    ):
        if value is not None:
            check_whole_number(name, value)
    if check_seed_value:
        check_seed(seed)
    for name, value in other_positive_numbers.items():
        if value is not None:
            check_positive_number(name, value)
