"""Learning-rate (and momentum) schedules: slanted triangular learning rates (ULMFiT section 3.2, equation 3) and
fastai's `fit_one_cycle`, over the whole run or restarted at each gradual-unfreezing stage.

Every schedule is a pure function of the step; `get_stlr_schedule` / `get_staged_schedule` wrap it in a `LambdaLR`
at the edge. The multiplier scales every optimizer group's own rate, so the discriminative ratios between groups hold
at every step. A momentum schedule sets Adam's beta1 (or SGD's momentum) of every group at every step, as fastai's
`fit_one_cycle` does (high momentum while the rate is low, low while it is high).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def stlr_multiplier(step: int, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """The STLR multiplier of the peak learning rate at `step` of `total_steps`.

    With `cut = floor(total_steps * cut_frac)` the multiplier rises linearly from `1 / ratio` at step 0 to 1 at
    `cut`, then falls linearly back to `1 / ratio` at `total_steps` (and stays there after it). The paper writes
    the fall as `p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))`; `cut * (1 / cut_frac - 1)` equals
    `total_steps - cut` whenever `total_steps * cut_frac` is whole, and we use `total_steps - cut` so that the
    rate ends exactly at `lr / ratio` for every `total_steps` (the paper's form dips below it otherwise).

    Args:
        step (`int`): the optimizer step, from 0.
        total_steps (`int`): T, the number of steps the triangle spans.
        cut_frac (`float`, defaults to 0.1): the fraction of steps spent rising.
        ratio (`float`, defaults to 32): how much smaller the lowest rate is than the peak.

    Example:

    ```python
    >>> stlr_multiplier(0, 100), stlr_multiplier(10, 100), stlr_multiplier(100, 100)
    (0.03125, 1.0, 0.03125)
    ```
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
    if not 0 < cut_frac < 1:
        raise ValueError(f"cut_frac must be in (0, 1), got {cut_frac}.")
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}.")
    cut = math.floor(total_steps * cut_frac)
    step = min(max(step, 0), total_steps)
    if step < cut:
        # Rising phase: from 0 at step 0 to 1 at `cut`.
        p = step / cut
    else:
        # Falling phase: from 1 at `cut` to 0 at `total_steps` (with cut == 0 the schedule starts at the peak).
        p = 1 - (step - cut) / (total_steps - cut)
    return (1 + p * (ratio - 1)) / ratio


def staged_stlr_multiplier(
    step: int, total_steps: int, stage_starts: Sequence[int], cut_frac: float = 0.1, ratio: float = 32.0
) -> float:
    """STLR restarted at each unfreezing stage: one triangle over each span `[start_k, start_k+1)`.

    Args:
        step (`int`): the optimizer step, from 0.
        total_steps (`int`): the number of steps of the whole run.
        stage_starts (`Sequence[int]`): the steps at which a new stage (and triangle) begins after step 0,
            increasing and inside `(0, total_steps)`.
        cut_frac (`float`, defaults to 0.1): the fraction of each stage spent rising.
        ratio (`float`, defaults to 32): how much smaller the lowest rate is than the peak.
    """
    bounds = [0, *[start for start in stage_starts if 0 < start < total_steps], total_steps]
    for begin, end in pairwise(bounds):
        if step < end:
            return stlr_multiplier(step - begin, end - begin, cut_frac, ratio)
    return stlr_multiplier(total_steps - bounds[-2], total_steps - bounds[-2], cut_frac, ratio)


def stlr_momentum(
    step: int, total_steps: int, momentums: Sequence[float] = (0.8, 0.7, 0.8), cut_frac: float = 0.1
) -> float:
    """The momentum (Adam's beta1) at `step` of an STLR triangle, mirroring the rate: linear from `momentums[0]` at
    step 0 to `momentums[1]` at the peak (`floor(total_steps * cut_frac)`), then linear to `momentums[2]` at the end.

    Example:

    ```python
    >>> [round(stlr_momentum(t, 100), 4) for t in (0, 5, 10, 55, 100)]
    [0.8, 0.75, 0.7, 0.75, 0.8]
    ```
    """
    start, peak, end = momentums
    cut = math.floor(total_steps * cut_frac)
    step = min(max(step, 0), total_steps)
    if step < cut:
        return start + (peak - start) * step / cut
    return peak + (end - peak) * (step - cut) / (total_steps - cut)


def _cosine(start: float, end: float, position: float) -> float:
    # fastai's SchedCos: from `start` at position 0 to `end` at position 1 along half a cosine.
    return start + (1 + math.cos(math.pi * (1 - position))) * (end - start) / 2


def one_cycle_multiplier(
    step: int, total_steps: int, pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5
) -> float:
    """fastai's `fit_one_cycle` rate at `step` of `total_steps`, as a multiplier of the peak: half a cosine from
    `1 / div` up to 1 over the first `pct_start` of the steps, then half a cosine down to `1 / div_final`.

    fastai reads the schedule at `step / total_steps` (`pct_train`, before the step), and so does this.

    Example:

    ```python
    >>> one_cycle_multiplier(0, 100), one_cycle_multiplier(25, 100)
    (0.04, 1.0)
    ```
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start}.")
    position = min(max(step, 0), total_steps) / total_steps
    if position < pct_start:
        return _cosine(1 / div, 1.0, position / pct_start)
    return _cosine(1.0, 1 / div_final, (position - pct_start) / (1 - pct_start))


def one_cycle_momentum(
    step: int, total_steps: int, momentums: Sequence[float] = (0.95, 0.85, 0.95), pct_start: float = 0.25
) -> float:
    """fastai's `fit_one_cycle` momentum at `step`: half a cosine from `momentums[0]` down to `momentums[1]` while
    the rate rises, then back up to `momentums[2]` (fastai's default `moms=(0.95, 0.85, 0.95)`; its text learners
    use `(0.8, 0.7, 0.8)`)."""
    start, low, end = momentums
    position = min(max(step, 0), total_steps) / total_steps
    if position < pct_start:
        return _cosine(start, low, position / pct_start)
    return _cosine(low, end, (position - pct_start) / (1 - pct_start))


def per_stage(
    step: int,
    stage_bounds: Sequence[int],
    function: Callable[[int, int], float],
    scales: Sequence[float] | None = None,
) -> float:
    """`function(step - begin, end - begin)` in the stage `[begin, end)` that holds `step`, times that stage's scale.

    Args:
        step (`int`): the optimizer step, from 0.
        stage_bounds (`Sequence[int]`): `[0, start_1, ..., total_steps]`, increasing.
        function (`Callable[[int, int], float]`): `(step within the stage, steps of the stage) -> value`.
        scales (`Sequence[float]`, *optional*): one factor per stage (1.0 for each when not given).
    """
    stage = len(stage_bounds) - 2
    for index in range(len(stage_bounds) - 1):
        if step < stage_bounds[index + 1]:
            stage = index
            break
    begin, end = stage_bounds[stage], stage_bounds[stage + 1]
    scale = scales[stage] if scales is not None else 1.0
    return scale * function(min(step, end) - begin, end - begin)


class LambdaLRWithMomentum(LambdaLR):
    """`LambdaLR` that also sets every group's momentum (Adam's beta1, or SGD's `momentum`) to `momentum(step)`.

    Args:
        optimizer (`Optimizer`): the optimizer.
        lr_lambda (`Callable[[int], float]`): the rate multiplier of the step.
        momentum (`Callable[[int], float]`, *optional*): the momentum of the step; the optimizer's own when None.
        last_epoch (`int`, defaults to -1): the index of the last step, when resuming.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float],
        momentum: Callable[[int], float] | None = None,
        last_epoch: int = -1,
    ):
        self.momentum = momentum
        super().__init__(optimizer, lr_lambda, last_epoch)

    def step(self, epoch: int | None = None) -> None:  # noqa: D102
        if epoch is None:
            super().step()
        else:
            super().step(epoch)
        if self.momentum is None:
            return
        value = self.momentum(self.last_epoch)
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (value, *group["betas"][1:])
            elif "momentum" in group:
                group["momentum"] = value

    def state_dict(self) -> dict:
        # The momentum function is rebuilt from the arguments, as LambdaLR's lambdas are.
        state = super().state_dict()
        state.pop("momentum", None)
        return state


def get_staged_schedule(
    optimizer: Optimizer,
    stage_bounds: Sequence[int],
    shape: str = "stlr",
    peak_scales: Sequence[float] | None = None,
    momentums: Sequence[float] | None = None,
    cut_frac: float = 0.1,
    ratio: float = 32.0,
    last_epoch: int = -1,
) -> LambdaLRWithMomentum:
    """One rate shape per stage (`stage_bounds = [0, start_1, ..., total_steps]`), each stage's peak scaled by
    `peak_scales`, with the momentum mirroring the rate when `momentums` (start, extreme, end) is given.

    Args:
        optimizer (`Optimizer`): each group's rate when the schedule is created is its peak.
        stage_bounds (`Sequence[int]`): where each stage begins, and the total number of steps last.
        shape (`str`, defaults to `"stlr"`): `"stlr"` (ULMFiT's triangle, `cut_frac`, `ratio`) or `"one_cycle"`
            (fastai's `fit_one_cycle` with its defaults: `pct_start` 0.25, `div` 25, `div_final` 1e5).
        peak_scales (`Sequence[float]`, *optional*): the peak of each stage as a share of the optimizer's rates.
        momentums (`Sequence[float]`, *optional*): the momentum at the start, at the peak rate and at the end of
            each stage; the optimizer's own momentum is left alone when None.
        cut_frac (`float`, defaults to 0.1), ratio (`float`, defaults to 32): STLR's.
        last_epoch (`int`, defaults to -1): the index of the last step, when resuming.
    """
    bounds = list(stage_bounds)
    if len(bounds) < 2 or bounds[0] != 0 or any(b >= e for b, e in pairwise(bounds)):
        raise ValueError(f"stage_bounds must start at 0 and increase, got {bounds}.")
    if shape == "stlr":
        rate = partial(stlr_multiplier, cut_frac=cut_frac, ratio=ratio)
        momentum = partial(stlr_momentum, momentums=momentums, cut_frac=cut_frac) if momentums else None
    elif shape == "one_cycle":
        rate = one_cycle_multiplier
        momentum = partial(one_cycle_momentum, momentums=momentums) if momentums else None
    else:
        raise ValueError(f"shape must be 'stlr' or 'one_cycle', got {shape!r}.")
    multiplier = partial(per_stage, stage_bounds=bounds, function=rate, scales=peak_scales)
    multiplier(0)  # validate now rather than at the first step
    momentum_of_step = partial(per_stage, stage_bounds=bounds, function=momentum) if momentum else None
    return LambdaLRWithMomentum(optimizer, multiplier, momentum_of_step, last_epoch)


def get_stlr_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    cut_frac: float = 0.1,
    ratio: float = 32.0,
    stage_starts: Sequence[int] | None = None,
    last_epoch: int = -1,
) -> LambdaLR:
    """A `LambdaLR` that applies STLR to every group of `optimizer`, each around its own initial rate.

    Args:
        optimizer (`Optimizer`): the optimizer; each group's `initial_lr` (its rate when the schedule is created) is
            its peak.
        num_training_steps (`int`): T.
        cut_frac (`float`, defaults to 0.1): the fraction of steps spent rising.
        ratio (`float`, defaults to 32): how much smaller the lowest rate is than the peak.
        stage_starts (`Sequence[int]`, *optional*): restart the triangle at these steps (one per unfreezing stage).
        last_epoch (`int`, defaults to -1): the index of the last step, when resuming.

    Example:

    ```python
    >>> import torch
    >>> optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.32)
    >>> scheduler = get_stlr_schedule(optimizer, num_training_steps=100)
    >>> round(optimizer.param_groups[0]["lr"], 4)
    0.01
    ```
    """
    if stage_starts:
        multiplier = partial(
            staged_stlr_multiplier,
            total_steps=num_training_steps,
            stage_starts=list(stage_starts),
            cut_frac=cut_frac,
            ratio=ratio,
        )
    else:
        multiplier = partial(stlr_multiplier, total_steps=num_training_steps, cut_frac=cut_frac, ratio=ratio)
    # Validate now rather than at the first step.
    multiplier(0)
    return LambdaLR(optimizer, multiplier, last_epoch)
