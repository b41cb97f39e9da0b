"""Warmup helpers shared by the kernels: config checks and an initial step-size search.

The adaptation itself is Pyro's: :class:`pyro.infer.mcmc.adaptation.WarmupAdapter`
(dual averaging of the step size, Welford windows for a diagonal mass matrix).
These helpers run during setup and at the ends of adaptation windows only, so
the host synchronizations they make (Python floats) stay out of the per-step path.
"""

from __future__ import annotations

__all__ = [
    "check_initial_params",
    "check_positive",
    "check_probability",
    "find_reasonable_step_size",
]

import math
from collections.abc import Callable, Mapping

from torch import Tensor


def check_initial_params(params: object, where: str) -> dict[str, Tensor] | None:
    """Return ``params`` as a dict after checking it maps site names to tensors (or is None).

    Example:
        >>> check_initial_params(None, "MALA") is None
        True
    """
    if params is None:
        return None
    if not isinstance(params, Mapping) or not all(isinstance(v, Tensor) for v in params.values()):
        raise TypeError(f"{where}: expected initial_params to be a dict of tensors, got {params!r}")
    return dict(params)


def check_positive(name: str, value: object, where: str) -> float:
    """Return ``value`` as a float after checking it is a finite number ``> 0``.

    Arguments:
        name: the argument's name, for the message.
        value: the value to check.
        where: the caller, for the message.

    Returns:
        ``float(value)``.

    Example:
        >>> check_positive("step_size", 0.1, "MALA")
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: expected {name} to be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: expected a finite {name} > 0, got {value!r}")
    return float(value)


def check_probability(name: str, value: object, where: str) -> float:
    """Return ``value`` as a float after checking it lies in the open interval ``(0, 1)``.

    Arguments:
        name: the argument's name, for the message.
        value: the value to check.
        where: the caller, for the message.

    Returns:
        ``float(value)``.

    Example:
        >>> check_probability("target_accept_prob", 0.574, "MALA")
        0.574
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: expected {name} to be a float, got {type(value).__name__}")
    if not 0.0 < value < 1.0:
        raise ValueError(f"{where}: expected {name} in (0, 1), got {value!r}")
    return float(value)


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
    step_size = check_positive("step_size", step_size, "find_reasonable_step_size")
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
