"""Warmup adaptation of a kernel: Stan's windows, dual averaging of the step size, a diagonal mass.

The step size follows dual averaging (:mod:`pyro_relax.ops.adaptation`,
Hoffman and Gelman 2014) on every warmup step; the diagonal inverse mass
matrix is the regularized variance of the positions in each slow window of
Stan's schedule (a fast buffer of 75 steps, windows of 25, 50, 100, ...
steps, a final fast buffer of 50), after which the step size search and the
dual averaging start again. At the end of warmup the averaged step size is
kept.

References:
    Stan Reference Manual, "HMC algorithm parameters" (adaptation windows).
"""

from __future__ import annotations

__all__ = ["WindowedAdapter", "adaptation_windows"]

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int
from pyro_relax.ops.adaptation import (
    DualAveragingState,
    dual_averaging_init,
    dual_averaging_update,
)


def adaptation_windows(warmup_steps: int) -> list[tuple[int, int]]:
    """Stan's warmup windows ``(first, last)`` (inclusive): fast buffer, slow windows, fast buffer.

    Fewer than 20 warmup steps make one window; too few for the default buffers
    (75 + 25 + 50) take 15% / 75% / 10% of them.

    Example:
        >>> adaptation_windows(300)
        [(0, 74), (75, 99), (100, 149), (150, 249), (250, 299)]
    """
    warmup_steps = check_int(warmup_steps, "warmup_steps", "adaptation_windows", minimum=0)
    if warmup_steps < 20:
        return [(0, warmup_steps - 1)] if warmup_steps else []
    start, end, first = 75, 50, 25
    if start + end + first > warmup_steps:
        start, end = int(0.15 * warmup_steps), int(0.1 * warmup_steps)
        first = warmup_steps - start - end
    windows = [(0, start - 1)]
    end_start = warmup_steps - end
    size, begin = first, start
    while begin < end_start:
        if 3 * size <= end_start - begin:
            cur, size = size, 2 * size
        else:
            cur = end_start - begin
        windows.append((begin, begin + cur - 1))
        begin += cur
    windows.append((end_start, warmup_steps - 1))
    return windows


class WindowedAdapter:
    """Step size and diagonal inverse mass adaptation during a kernel's warmup.

    Arguments:
        step_size: the initial step size.
        target_accept_prob: the acceptance probability dual averaging aims at.
        adapt_step_size: adapt the step size.
        adapt_mass_matrix: estimate the diagonal inverse mass matrix.
        min_step_size: lower clip of the step size.
        max_step_size: upper clip of the step size.
    """

    def __init__(
        self,
        step_size: float,
        target_accept_prob: float,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        min_step_size: float = 1e-10,
        max_step_size: float = 1e10,
    ) -> None:
        self.step_size = step_size
        self.target_accept_prob = target_accept_prob
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.min_step_size, self.max_step_size = min_step_size, max_step_size
        self.inverse_mass: Tensor | None = None
        self.windows: list[tuple[int, int]] = []
        self.window = 0
        self.dual: DualAveragingState | None = None
        self.find_step_size: Callable[[], float] | None = None
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def configure(
        self, warmup_steps: int, inverse_mass: Tensor, find_step_size: Callable[[], float]
    ) -> None:
        """Start a warmup of ``warmup_steps`` from ``inverse_mass`` (a diagonal).

        Arguments:
            warmup_steps: the number of warmup steps.
            inverse_mass: the initial diagonal inverse mass (device and dtype of the chain).
            find_step_size: the step-size search from the current point (algorithm 4).
        """
        self.windows = adaptation_windows(warmup_steps)
        self.window = 0
        self.inverse_mass = inverse_mass
        self.find_step_size = find_step_size
        self._restart_welford(inverse_mass)
        if self.adapt_step_size:
            self.restart_step_size()

    def _restart_welford(self, like: Tensor) -> None:
        self.count = 0
        self.mean = torch.zeros_like(like)
        self.m2 = torch.zeros_like(like)

    def restart_step_size(self) -> None:
        """Search a reasonable step size and restart dual averaging there (``mu = log 10 eps``)."""
        assert self.find_step_size is not None
        self.step_size = self.find_step_size()
        self.dual = dual_averaging_init(self.step_size)

    def _clip(self, log_step: Tensor) -> float:
        return min(max(math.exp(float(log_step)), self.min_step_size), self.max_step_size)

    def update(self, t: int, position: Tensor, accept_prob: Tensor) -> None:
        """Adapt after warmup step ``t`` (0-based) at ``position`` with ``accept_prob``."""
        if self.window >= len(self.windows):
            return
        first, last = self.windows[self.window]
        slow = self.adapt_mass_matrix and 0 < self.window < len(self.windows) - 1
        if self.adapt_step_size and self.dual is not None:
            self.dual = dual_averaging_update(self.dual, accept_prob, self.target_accept_prob)
            self.step_size = self._clip(self.dual.log_step_size)
        if slow:  # Welford's running variance
            assert self.mean is not None and self.m2 is not None
            self.count += 1
            delta = position - self.mean
            self.mean = self.mean + delta / self.count
            self.m2 = self.m2 + delta * (position - self.mean)
        if t != last:
            return
        if self.window == len(self.windows) - 1:
            if self.adapt_step_size and self.dual is not None:
                self.step_size = self._clip(self.dual.log_step_size_avg)
        elif slow and self.count > 1:
            assert self.m2 is not None
            n = self.count
            var = self.m2 / (n - 1)
            self.inverse_mass = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
            self._restart_welford(var)
            if self.adapt_step_size:
                self.restart_step_size()
        self.window += 1
