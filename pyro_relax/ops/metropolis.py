r"""The Metropolis-Hastings correction: log ratios, the accept step, and selection.

One rule for non-finite values, used by every sampler of the package:

* a NaN log ratio, a NaN or infinite ``log pi`` at the proposal, or a proposal
  with zero density gives ``log r = -inf``: a rejection;
* a current state with zero density (``log pi = -inf``, e.g. an arbitrary
  start) and a finite proposal gives ``log r = +inf``: an acceptance.

So :func:`metropolis_accept` never returns a NaN acceptance probability, and a
NaN from a model never enters a chain.
"""

from __future__ import annotations

__all__ = [
    "MetropolisInfo",
    "acceptance_probability",
    "imh_log_accept_ratio",
    "metropolis_accept",
    "metropolis_log_ratio",
    "select",
]

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pyro_relax.ops.gaussian import check_like


class MetropolisInfo(NamedTuple):
    """The outcome of a Metropolis accept step.

    Attributes:
        accepted: boolean, shape ``batch``.
        acceptance_probability: ``min(1, exp(log r))`` in ``[0, 1]``, never NaN.
        log_ratio: the log ratio used (NaN replaced by ``-inf``).
    """

    accepted: Tensor
    acceptance_probability: Tensor
    log_ratio: Tensor


def metropolis_log_ratio(
    log_p_current: Tensor,
    log_p_proposal: Tensor,
    log_q_forward: Tensor | None = None,
    log_q_backward: Tensor | None = None,
) -> Tensor:
    r"""``log r = log pi(y) + log q(x | y) - log pi(x) - log q(y | x)``, NaN-safe.

    Omit the ``q`` terms for a symmetric proposal (random walk, HMC with a
    momentum flip). Non-finite values follow the module's rule.

    Arguments:
        log_p_current: ``log pi(x)``, shape ``batch``.
        log_p_proposal: ``log pi(y)``, same shape.
        log_q_forward: ``log q(y | x)`` or ``None``.
        log_q_backward: ``log q(x | y)`` or ``None``.

    Returns:
        Tensor of shape ``batch``, never NaN.

    Example:
        >>> metropolis_log_ratio(torch.tensor([0.0, 0.0]), torch.tensor([-1.0, float("nan")]))
        tensor([-1., -inf])
    """
    check_like("log_p_proposal", log_p_proposal, log_p_current, "metropolis_log_ratio")
    log_r = log_p_proposal - log_p_current
    if log_q_forward is not None:
        log_r = log_r - log_q_forward
    if log_q_backward is not None:
        log_r = log_r + log_q_backward
    bad = torch.isnan(log_r) | ~torch.isfinite(log_p_proposal)
    return torch.where(bad, torch.full_like(log_r, -math.inf), log_r)


def imh_log_accept_ratio(log_w_proposal: Tensor, log_w_current: Tensor) -> Tensor:
    r"""Log ratio of independence Metropolis-Hastings, ``log w' - log w`` (NaN-safe).

    With importance weights ``w = pi(z) / q(z)`` the IMH ratio
    ``pi(z') q(z) / (pi(z) q(z'))`` is ``w' / w``; a current weight of ``-inf``
    (an arbitrary start) makes any finite proposal be accepted.

    Example:
        >>> imh_log_accept_ratio(torch.tensor([0.0, float("nan")]), torch.zeros(2))
        tensor([0., -inf])
    """
    check_like("log_w_current", log_w_current, log_w_proposal, "imh_log_accept_ratio")
    return metropolis_log_ratio(log_w_current, log_w_proposal)


def acceptance_probability(log_ratio: Tensor) -> Tensor:
    """``min(1, exp(log r))``, with 0 for NaN.

    Example:
        >>> acceptance_probability(torch.tensor([1.0, 0.0, float("nan")]))
        tensor([1., 1., 0.])
    """
    if not isinstance(log_ratio, Tensor):
        raise TypeError(
            f"acceptance_probability: expected a tensor, got {type(log_ratio).__name__}"
        )
    return torch.nan_to_num(log_ratio.clamp(max=0.0).exp(), nan=0.0)


def metropolis_accept(log_ratio: Tensor, uniform: Tensor | None = None) -> MetropolisInfo:
    r"""Accept where ``log u < log r`` (``u ~ U(0, 1)``); a NaN ratio is a rejection.

    The probability of acceptance is ``min(1, exp(log r))``.

    Arguments:
        log_ratio: log acceptance ratios, shape ``batch``.
        uniform: ``U(0, 1)`` draws of the same shape; drawn here if ``None``.

    Returns:
        A :class:`MetropolisInfo`.

    Example:
        >>> info = metropolis_accept(torch.tensor([0.0, -math.inf]), torch.full((2,), 0.5))
        >>> info.accepted, info.acceptance_probability
        (tensor([ True, False]), tensor([1., 0.]))
    """
    if not isinstance(log_ratio, Tensor):
        raise TypeError(f"metropolis_accept: expected a tensor, got {type(log_ratio).__name__}")
    if uniform is None:
        uniform = torch.rand_like(log_ratio)
    check_like("uniform", uniform, log_ratio, "metropolis_accept")
    log_ratio = torch.where(torch.isnan(log_ratio), -math.inf, log_ratio)
    accepted = uniform.log() < log_ratio
    return MetropolisInfo(accepted, acceptance_probability(log_ratio), log_ratio)


def select(accepted: Tensor, proposal: Tensor, current: Tensor, event_dim: int = 0) -> Tensor:
    """``where(accepted, proposal, current)`` with the batch mask broadcast over the event.

    Gradients flow through the chosen branch (the decision is not differentiated).

    Example:
        >>> select(torch.tensor([True, False]), torch.ones(2, 3), torch.zeros(2, 3), 1)[:, 0]
        tensor([1., 0.])
    """
    mask = accepted.reshape(accepted.shape + (1,) * event_dim)
    return torch.where(mask, proposal, current)
