r"""Step-size adaptation: dual averaging (Hoffman and Gelman 2014) and the initial search.

Dual averaging (algorithm 5 of the NUTS paper) drives the acceptance
probability ``alpha_t`` towards a target ``delta`` by

.. math::
    \bar H_t = (1 - \tfrac{1}{t + t_0}) \bar H_{t-1} + \tfrac{1}{t + t_0} (\delta - \alpha_t),
    \qquad \log \epsilon_t = \mu - \frac{\sqrt t}{\gamma} \bar H_t,

    \log \bar\epsilon_t = t^{-\kappa} \log \epsilon_t + (1 - t^{-\kappa}) \log \bar\epsilon_{t-1},

with ``mu = log(10 eps_0)`` by default. Use ``eps_t`` while adapting and the
averaged ``bar eps_t`` afterwards. The state is a :class:`DualAveragingState`
of tensors, so it may be batched (one step size per block or chain) and lives
on the device and in the dtype of the step size it was started from; an
update never synchronizes with the host.
"""

from __future__ import annotations

__all__ = [
    "DualAveragingState",
    "dual_averaging_init",
    "dual_averaging_update",
    "find_reasonable_step_size",
]

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from pyro_relax.core.checks import check_positive, check_probability


class DualAveragingState(NamedTuple):
    """The state of dual averaging.

    Attributes:
        log_step_size: ``log eps_t``, the step size to use next while adapting.
        log_step_size_avg: ``log bar eps_t``, the step size to keep after adapting.
        h_bar: ``bar H_t``, the running mean of ``delta - alpha``.
        iteration: ``t``, the number of updates so far.
        mu: the shrinkage point ``mu``.
    """

    log_step_size: Tensor
    log_step_size_avg: Tensor
    h_bar: Tensor
    iteration: int
    mu: Tensor


def dual_averaging_init(
    step_size: float | Tensor, mu: float | Tensor | None = None
) -> DualAveragingState:
    """Start dual averaging at ``step_size`` (``mu = log(10 step_size)`` unless given).

    Arguments:
        step_size: the initial ``eps_0 > 0``; a float or a tensor (any shape:
            one step size per entry).
        mu: the shrinkage point (log scale); default ``log(10 eps_0)``.

    Returns:
        A :class:`DualAveragingState` with tensors of the step size's shape,
        device and dtype (float: the default dtype).

    Example:
        >>> s = dual_averaging_init(0.1)
        >>> round(float(s.mu.exp()), 6), s.iteration
        (1.0, 0)
    """
    if isinstance(step_size, Tensor):
        eps = step_size.detach()
        if not eps.is_floating_point():
            raise TypeError(f"dual_averaging_init: expected a floating step size, got {eps.dtype}")
    else:
        eps = torch.tensor(check_positive(step_size, "step_size", "dual_averaging_init"))
    log_eps = eps.log()
    if mu is None:
        mu_t = log_eps + math.log(10.0)
    else:
        mu_t = torch.as_tensor(mu, dtype=log_eps.dtype, device=log_eps.device).expand_as(log_eps)
    zero = torch.zeros_like(log_eps)
    return DualAveragingState(log_eps, zero, zero, 0, mu_t.clone())


def dual_averaging_update(
    state: DualAveragingState,
    acceptance: Tensor | float,
    target: float = 0.8,
    *,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveragingState:
    r"""One dual-averaging update with the acceptance probability ``alpha_t`` just observed.

    Arguments:
        state: the current state.
        acceptance: ``alpha_t`` in ``[0, 1]`` (a tensor broadcasting to the state,
            or a float); a NaN counts as 0 (a failed trial).
        target: the goal ``delta`` in ``(0, 1)``.
        gamma: the adaptation regularization ``gamma > 0``.
        t0: the early-iteration damping ``t_0 >= 0``.
        kappa: the averaging exponent in ``(0.5, 1]``.

    Returns:
        The new :class:`DualAveragingState`.

    References:
        Hoffman and Gelman. The No-U-Turn Sampler. JMLR 15, 2014, algorithm 5.

    Example:
        >>> s = dual_averaging_init(1.0)
        >>> for _ in range(200):  # acceptance exp(-eps): the fixed point is eps = log 2
        ...     s = dual_averaging_update(s, torch.exp(-s.log_step_size.exp()), target=0.5)
        >>> round(float(s.log_step_size_avg.exp()), 1)
        0.7
    """
    target = check_probability(target, "target", "dual_averaging_update")
    check_positive(gamma, "gamma", "dual_averaging_update")
    if not 0.5 < kappa <= 1.0 or t0 < 0:
        raise ValueError(
            f"dual_averaging_update: expected kappa in (0.5, 1] and t0 >= 0, got {kappa}, {t0}"
        )
    ref = state.log_step_size
    alpha = torch.as_tensor(acceptance, dtype=ref.dtype, device=ref.device)
    alpha = torch.nan_to_num(alpha, nan=0.0).clamp(0.0, 1.0)
    t = state.iteration + 1
    eta = 1.0 / (t + t0)
    h_bar = (1.0 - eta) * state.h_bar + eta * (target - alpha)
    log_eps = state.mu - math.sqrt(t) / gamma * h_bar
    weight = t ** (-kappa)
    log_avg = weight * log_eps + (1.0 - weight) * state.log_step_size_avg
    return DualAveragingState(log_eps, log_avg, h_bar, t, state.mu)


def find_reasonable_step_size(
    log_accept_ratio: Callable[[float], float],
    step_size: float,
    target_log_prob: float,
    min_step_size: float = 1e-10,
    max_step_size: float = 1e10,
) -> float:
    """Double or halve ``step_size`` until one trial's acceptance crosses the target.

    The heuristic of Hoffman and Gelman (2014, algorithm 4): if a trial move
    with the current step size has ``log r > target_log_prob``, keep doubling
    until it drops below; otherwise keep halving until it rises above. A NaN
    trial counts as "too large". The result is clipped to
    ``[min_step_size, max_step_size]``.

    Arguments:
        log_accept_ratio: runs one trial move with the given step size and
            returns its log acceptance ratio as a float.
        step_size: starting value.
        target_log_prob: the log acceptance probability to cross.
        min_step_size: lower bound.
        max_step_size: upper bound.

    Returns:
        The step size found.

    References:
        Hoffman and Gelman. The No-U-Turn Sampler. JMLR 15, 2014.

    Example:
        >>> find_reasonable_step_size(lambda eps: -eps, 1.0, math.log(0.5))
        0.5
    """
    step_size = check_positive(step_size, "step_size", "find_reasonable_step_size")
    if not 0 < min_step_size <= max_step_size:
        raise ValueError(
            "find_reasonable_step_size: expected 0 < min_step_size <= max_step_size, "
            f"got {min_step_size!r}, {max_step_size!r}"
        )

    def direction(eps: float) -> int:
        log_r = log_accept_ratio(eps)
        return 1 if log_r > target_log_prob else -1  # NaN compares False: shrink

    first = direction(step_size)
    scale = 2.0 if first > 0 else 0.5
    while min_step_size < step_size < max_step_size:
        step_size *= scale
        if direction(step_size) != first:
            break
    return min(max(step_size, min_step_size), max_step_size)
