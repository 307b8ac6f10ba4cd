"""STLR: the paper's formula at its boundary steps, and the learning rate of each layer group at steps 0, cut, T."""

import math
from itertools import pairwise

import pytest
import torch
from ulmfit_tiny_models import tiny_awd_lstm_lm

from tl_nlp.training import discriminative_param_groups, get_stlr_schedule, staged_stlr_multiplier, stlr_multiplier


def paper_stlr(t: int, T: int, cut_frac: float, ratio: float) -> float:
    """ULMFiT equation 3, written as in the paper (eta_t / eta_max)."""
    cut = math.floor(T * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


@pytest.mark.parametrize("T, cut_frac, ratio", [(100, 0.1, 32), (1000, 0.1, 32), (60, 0.25, 10), (8, 0.5, 4)])
def test_matches_the_paper_whenever_cut_is_whole(T, cut_frac, ratio):
    assert (T * cut_frac).is_integer()
    for t in range(T + 1):
        assert stlr_multiplier(t, T, cut_frac, ratio) == pytest.approx(paper_stlr(t, T, cut_frac, ratio), abs=1e-12)


def test_boundary_steps():
    T, ratio = 200, 32
    cut = 20
    assert stlr_multiplier(0, T) == 1 / ratio  # starts at lr / ratio
    assert stlr_multiplier(cut, T) == 1.0  # peaks at cut
    assert stlr_multiplier(T, T) == 1 / ratio  # back to lr / ratio at T
    assert stlr_multiplier(cut // 2, T) == pytest.approx((1 + 0.5 * 31) / 32)  # halfway up
    assert stlr_multiplier(cut + (T - cut) // 2, T) == pytest.approx((1 + 0.5 * 31) / 32)  # halfway down
    assert stlr_multiplier(T + 50, T) == 1 / ratio  # stays at the floor after T


def test_ends_at_the_floor_when_cut_is_rounded_down():
    # T * cut_frac = 2.5: the paper's denominator cut * (1/cut_frac - 1) = 18 != T - cut = 23 would dip below 1/32.
    T = 25
    values = [stlr_multiplier(t, T) for t in range(T + 1)]
    assert values[2] == 1.0 and values[-1] == 1 / 32 and min(values) == 1 / 32
    assert all(a >= b for a, b in pairwise(values[2:]))  # falls monotonically after the peak
    assert paper_stlr(T, T, 0.1, 32) < 0  # what the literal formula would do


def test_too_few_steps_to_rise_starts_at_the_peak():
    assert stlr_multiplier(0, 5) == 1.0  # cut = floor(0.5) = 0
    assert stlr_multiplier(5, 5) == 1 / 32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(step=0, total_steps=0), "total_steps"),
        (dict(step=0, total_steps=10, cut_frac=0.0), "cut_frac"),
        (dict(step=0, total_steps=10, cut_frac=1.0), "cut_frac"),
        (dict(step=0, total_steps=10, ratio=0.5), "ratio"),
    ],
)
def test_bad_values_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stlr_multiplier(**kwargs)


def test_each_group_learning_rate_at_steps_zero_cut_and_T():
    """The issue's setup: top rate 0.01, decay 2.6, T = 50 steps, cut_frac 0.1, ratio 32, through a real LambdaLR."""
    model = tiny_awd_lstm_lm()  # 4 groups, as fastai's awd_lstm_lm_split: 3 LSTM layers, head (tied embedding)
    optimizer = torch.optim.AdamW(discriminative_param_groups(model, lr=0.01, decay=2.6))
    scheduler = get_stlr_schedule(optimizer, num_training_steps=50, cut_frac=0.1, ratio=32)
    peaks = [0.01 / 2.6**3, 0.01 / 2.6**2, 0.01 / 2.6, 0.01]  # bottom to top

    def rates():
        by_group = {}
        for group in optimizer.param_groups:
            by_group.setdefault(group["layer_group"], set()).add(group["lr"])
        assert all(len(values) == 1 for values in by_group.values())  # decay / no-decay halves share a rate
        return [by_group[index].pop() for index in sorted(by_group)]

    seen = {}
    for step in range(51):
        seen[step] = rates()
        current = seen[step]
        for lower, upper in pairwise(current):
            assert upper / lower == pytest.approx(2.6)  # the ratios hold at every step
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx([peak / 32 for peak in peaks])
    assert seen[5] == pytest.approx(peaks)  # cut = floor(50 * 0.1)
    assert seen[50] == pytest.approx([peak / 32 for peak in peaks])


def test_one_triangle_per_stage():
    starts = [10, 30]
    values = [staged_stlr_multiplier(t, 60, starts, cut_frac=0.1, ratio=32) for t in range(61)]
    assert values[0] == values[10] == values[30] == 1 / 32  # each stage restarts at the floor
    assert values[1] == 1.0  # stage 0: 10 steps, cut 1
    assert values[12] == 1.0  # stage 1: 20 steps, cut 2
    assert values[33] == 1.0  # stage 2: 30 steps, cut 3
    assert values[9] == pytest.approx(stlr_multiplier(9, 10)) and values[60] == 1 / 32
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_stlr_schedule(optimizer, 60, stage_starts=starts)
    for t in range(60):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(values[t])
        optimizer.step()
        scheduler.step()
