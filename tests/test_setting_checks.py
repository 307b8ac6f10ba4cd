"""Settings that transformers would accept and misuse are refused with one line naming the field."""

import math

import pytest

from tl_nlp.setting_checks import (
    SettingError,
    check_class_names,
    check_positive_number,
    check_seed,
    check_training_settings,
    check_whole_number,
)


@pytest.mark.parametrize("value", [0, -1e-3, math.nan, math.inf, None, "1e-3", True])
def test_learning_rates_and_epochs_must_be_finite_and_positive(value):
    for name in ("learning_rate", "num_train_epochs"):
        with pytest.raises(SettingError, match=f"^{name} must be a number above 0, got "):
            check_training_settings(**{name: value if value is not None else math.nan}, seed=0)
    with pytest.raises(SettingError):
        check_positive_number("learning_rate", value)


def test_good_settings_pass():
    check_training_settings(learning_rate=2e-5, num_train_epochs=0.5, per_device_train_batch_size=8, seed=0)
    check_positive_number("weight_decay", 0, allow_zero=True)
    check_positive_number("stlr_cut_frac", 0.1, maximum=1)
    check_class_names(["negative", "positive"])
    check_class_names(None)


@pytest.mark.parametrize("value", [8.5, 8.0, 0, -2, "8", None, False])
def test_batch_sizes_are_whole_numbers(value):
    with pytest.raises(SettingError, match="^per_device_train_batch_size must be a whole number of at least 1"):
        check_training_settings(per_device_train_batch_size=value if value is not None else 1.5, seed=0)
    with pytest.raises(SettingError):
        check_whole_number("per_device_train_batch_size", value)


def test_seed_null_is_refused():
    with pytest.raises(SettingError, match=r"^seed must be a whole number of at least 0, got null \(None\)"):
        check_seed(None)
    with pytest.raises(SettingError, match="seed must be"):
        check_training_settings(seed=None)
    check_seed(0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("negative", "single string 'negative'"),
        ("negative,positive", "single string"),
        (["positive"], "at least two classes"),
        (["negative", ""], r"class_names\[1\] must be a non-empty string"),
        (["negative", 1], r"class_names\[1\] must be a non-empty string, got 1"),
        (["a", "b", "a"], r"repeats \['a'\]"),
    ],
)
def test_class_names(value, expected):
    with pytest.raises(SettingError, match=expected):
        check_class_names(value)
