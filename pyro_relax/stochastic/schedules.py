"""Annealing schedules: the lambdas of the intermediate densities, fixed or learned."""

from __future__ import annotations

__all__ = ["LearnedSchedule", "ScheduleEntry", "geometric_schedule", "linear_schedule"]

import numbers

import torch
from torch import Tensor, nn


def linear_schedule(n: int) -> list[float]:
    """``lambda_k = k / n`` for ``k = 1..n`` (the last block targets the target).

    Example:
        >>> linear_schedule(4)
        [0.25, 0.5, 0.75, 1.0]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"linear_schedule: expected an int n >= 1, got {n!r}")
    return [k / n for k in range(1, n + 1)]


def geometric_schedule(n: int, start: float = 1e-3) -> list[float]:
    """``lambda_k = start^((n - k) / (n - 1))``: geometric from ``start`` up to 1.

    Example:
        >>> [round(v, 3) for v in geometric_schedule(3, start=0.01)]
        [0.01, 0.1, 1.0]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"geometric_schedule: expected an int n >= 1, got {n!r}")
    if not isinstance(start, numbers.Real) or not 0.0 < float(start) <= 1.0:
        raise ValueError(f"geometric_schedule: expected start in (0, 1], got {start!r}")
    if n == 1:
        return [1.0]
    return [float(start) ** ((n - k) / (n - 1)) for k in range(1, n + 1)]


class LearnedSchedule(nn.Module):
    r"""``n`` increasing lambdas in ``(0, 1]`` learned through a softmax of increments.

    ``lambda_k = sum_{j <= k} softmax(a)_j``; with ``end_at_one`` the last one is
    exactly 1 (the last block targets the target), otherwise there is one
    slack increment and all ``n`` lambdas lie in ``(0, 1)``. Give block ``k``
    the module :meth:`entry` ``(k)``: all entries share these parameters.

    Arguments:
        n: number of lambdas.
        end_at_one: whether ``lambda_n = 1``.
        init: initial lambdas (increasing, in ``(0, 1]``); evenly spaced by default.

    Example:
        >>> s = LearnedSchedule(4)
        >>> [round(v, 2) for v in s().tolist()]
        [0.25, 0.5, 0.75, 1.0]
    """

    def __init__(self, n: int, end_at_one: bool = True, init: list[float] | None = None) -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"LearnedSchedule: expected an int n >= 1, got {n!r}")
        if init is None:
            init = linear_schedule(n) if end_at_one else linear_schedule(n + 1)[:n]
        lams = [float(v) for v in init]
        if len(lams) != n:
            raise ValueError(f"LearnedSchedule: expected {n} initial lambdas, got {len(lams)}")
        if end_at_one and lams[-1] != 1.0:
            raise ValueError(f"LearnedSchedule: end_at_one needs init ending at 1, got {lams[-1]}")
        if not end_at_one:
            lams = lams + [1.0]
        inc = torch.tensor(lams, dtype=torch.float64).diff(
            prepend=torch.zeros(1, dtype=torch.float64)
        )
        if not bool((inc > 0).all()) or lams[-1] > 1.0:
            raise ValueError(f"LearnedSchedule: expected increasing lambdas in (0, 1], got {lams}")
        self.n = n
        self.end_at_one = end_at_one
        self.logits = nn.Parameter(inc.log().to(torch.get_default_dtype()))

    def forward(self) -> Tensor:
        """The ``n`` lambdas as a tensor (device and dtype of the parameters)."""
        return self.logits.softmax(-1).cumsum(-1)[: self.n]

    def entry(self, k: int) -> ScheduleEntry:
        """A module returning ``lambda_k`` (0-based), to hand to block ``k``."""
        if not isinstance(k, int) or not 0 <= k < self.n:
            raise ValueError(f"LearnedSchedule.entry: expected 0 <= k < {self.n}, got {k!r}")
        return ScheduleEntry(self, k)


class ScheduleEntry(nn.Module):
    """One lambda of a :class:`LearnedSchedule` (shares its parameters).

    Example:
        >>> entry = LearnedSchedule(2).entry(0)
        >>> round(float(entry().detach()), 2)
        0.5
    """

    def __init__(self, schedule: LearnedSchedule, k: int) -> None:
        super().__init__()
        self.schedule = schedule
        self.k = k

    def forward(self) -> Tensor:
        """``lambda_k`` as a 0-dim tensor."""
        return self.schedule()[self.k]

    def extra_repr(self) -> str:
        """The module's settings, for ``repr``."""
        return f"k={self.k}"

