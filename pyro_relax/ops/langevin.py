r"""Overdamped Langevin moves and their Gaussian transition log densities (ULA, MALA).

With a log density ``log pi``, its gradient ``g = grad log pi``, a step size
``eps`` and an inverse mass ``M^{-1}`` (see :mod:`pyro_relax.ops.gaussian`):

.. math::
    y = x + \epsilon M^{-1} g(x) + \sqrt{2 \epsilon}\, L \xi, \quad L L^T = M^{-1},
    \qquad q(y \mid x) = N(y;\ x + \epsilon M^{-1} g(x),\ 2 \epsilon M^{-1}).

The backward kernel of the move is the same Gaussian from ``y``: ``q(x | y)``.
:func:`langevin_step` makes the move from a :class:`LangevinState` and returns
both log densities in a :class:`LangevinInfo`; the SNF blocks add
``log q(x | y) - log q(y | x)`` to the path weight, MALA uses it in the
Metropolis-Hastings ratio (:func:`mala_log_accept_ratio`).
"""

from __future__ import annotations

__all__ = [
    "LangevinInfo",
    "LangevinState",
    "langevin_log_transition",
    "langevin_proposal",
    "langevin_step",
    "mala_log_accept_ratio",
]

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from pyro_relax.core.checks import check_positive
from pyro_relax.ops.gaussian import (
    InverseMass,
    apply_inverse_mass,
    check_like,
    gaussian_transition_log_prob,
    kinetic_energy,
    scale_noise,
)
from pyro_relax.ops.metropolis import metropolis_log_ratio

LogDensityAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


class LangevinState(NamedTuple):
    """A point with its log density and the gradient of the log density there.

    Attributes:
        position: ``batch + event``.
        log_density: ``log pi(position)``, shape ``batch``.
        grad: ``grad log pi(position)``, shape of ``position``.
    """

    position: Tensor
    log_density: Tensor
    grad: Tensor


class LangevinInfo(NamedTuple):
    """The forward and backward transition log densities of one Langevin move.

    Both omit the normalizer ``-log det(4 pi eps M^{-1}) / 2``, the same for the two.

    Attributes:
        log_forward: ``log q(y | x)``, shape ``batch``.
        log_backward: ``log q(x | y)``, shape ``batch``.
    """

    log_forward: Tensor
    log_backward: Tensor


def _check_step_size(step_size: float | Tensor, where: str) -> None:
    if not isinstance(step_size, Tensor):  # a tensor is its owner's to check (no host sync)
        check_positive(step_size, "step size", where)


def langevin_proposal(
    x: Tensor,
    grad: Tensor,
    step_size: float | Tensor,
    noise: Tensor,
    inv_mass: InverseMass = None,
) -> Tensor:
    r"""The Langevin move ``y = x + eps M^{-1} grad + sqrt(2 eps) L xi``.

    Arguments:
        x: current points, ``batch + event``.
        grad: ``grad log pi(x)``, same shape.
        step_size: ``eps > 0``; a float or a tensor broadcasting to ``x``.
        noise: standard normal draws ``xi``, same shape.
        inv_mass: the inverse mass (a diagonal, a
            :class:`~pyro_relax.ops.gaussian.DenseInverseMass` or ``None``).

    Returns:
        The proposal ``y``, shape of ``x``.

    Example:
        >>> x = torch.zeros(3, 2)
        >>> langevin_proposal(x, -x, 0.5, torch.ones(3, 2)).shape
        torch.Size([3, 2])
    """
    where = "langevin_proposal"
    _check_step_size(step_size, where)
    check_like("grad", grad, x, where)
    check_like("noise", noise, x, where)
    drift = step_size * apply_inverse_mass(grad, inv_mass)
    return x + drift + (2.0 * step_size) ** 0.5 * scale_noise(noise, inv_mass)


def langevin_log_transition(
    y: Tensor, start: LangevinState, step_size: float | Tensor, inv_mass: InverseMass = None,
    *, event_dim: int = 1,
) -> Tensor:
    r"""``log q(y | x) = log N(y; x + eps M^{-1} grad_x, 2 eps M^{-1})`` summed over the event.

    Without the normalizer ``-log det(4 pi eps M^{-1}) / 2`` (it cancels between
    a forward and a backward kernel; for the normalized density call
    :func:`~pyro_relax.ops.gaussian.gaussian_transition_log_prob` with
    ``normalized=True``).

    Arguments:
        y: end points, ``batch + event``.
        start: the start state ``x`` with its gradient (its log density is not used).
        step_size: ``eps > 0``.
        inv_mass: the inverse mass.
        event_dim: event dimensions.

    Returns:
        Tensor of shape ``batch``.

    Example:
        >>> x = torch.zeros(2)
        >>> float(langevin_log_transition(x, LangevinState(x, x.sum(), x), 0.1))
        -0.0
    """
    where = "langevin_log_transition"
    _check_step_size(step_size, where)
    check_like("start.position", start.position, y, where)
    check_like("start.grad", start.grad, y, where)
    mean = start.position + step_size * apply_inverse_mass(start.grad, inv_mass)
    return gaussian_transition_log_prob(y, mean, 2.0 * step_size, inv_mass, event_dim)


def langevin_step(
    state: LangevinState,
    log_density_and_grad: LogDensityAndGrad,
    step_size: float | Tensor,
    noise: Tensor,
    inv_mass: InverseMass = None,
    event_dim: int = 1,
) -> tuple[LangevinState, LangevinInfo]:
    r"""One unadjusted Langevin move from ``state`` and its two transition log densities.

    The forward density is read off the noise (``-|xi|^2 / 2``, exact); the
    backward one is the Gaussian ``q(x | y)`` at the new point's gradient. The
    move is reparametrized: ``y`` and both densities are differentiable in
    ``x``, ``eps`` and the parameters of ``log pi``.

    Arguments:
        state: the current :class:`LangevinState`.
        log_density_and_grad: ``y -> (log pi(y), grad log pi(y))``.
        step_size: ``eps > 0``.
        noise: standard normal draws, shape of ``state.position``.
        inv_mass: the inverse mass.
        event_dim: event dimensions.

    Returns:
        ``(proposed LangevinState, LangevinInfo)``; accept it as is (ULA) or
        with :func:`~pyro_relax.ops.metropolis.metropolis_accept` (MALA).

    Example:
        >>> f = lambda x: (-0.5 * x.square().sum(-1), -x)
        >>> x = torch.randn(4, 2)
        >>> new, info = langevin_step(LangevinState(x, *f(x)), f, 0.1, torch.randn(4, 2))
        >>> new.position.shape, info.log_backward.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """
    x = state.position
    y = langevin_proposal(x, state.grad, step_size, noise, inv_mass)
    lp_y, grad_y = log_density_and_grad(y)
    log_forward = -kinetic_energy(noise, event_dim=event_dim)
    proposal = LangevinState(y, lp_y, grad_y)
    log_backward = langevin_log_transition(x, proposal, step_size, inv_mass, event_dim=event_dim)
    return proposal, LangevinInfo(log_forward, log_backward)


def mala_log_accept_ratio(
    current: LangevinState,
    proposal: LangevinState,
    step_size: float | Tensor,
    inv_mass: InverseMass = None,
    *,
    event_dim: int = 1,
    info: LangevinInfo | None = None,
) -> Tensor:
    r"""Log Metropolis-Hastings ratio of a Langevin move ``x -> y``.

    .. math::
        \log r = \log \pi(y) - \log \pi(x) + \log q(x \mid y) - \log q(y \mid x).

    A non-finite gradient at either end, or a non-finite ``log pi(y)``, gives
    ``-inf`` (a rejection), so a NaN from the model never enters the chain
    (:func:`~pyro_relax.ops.metropolis.metropolis_log_ratio`).

    Arguments:
        current: the state at ``x``.
        proposal: the state at ``y``.
        step_size: ``eps > 0``.
        inv_mass: the inverse mass.
        event_dim: event dimensions.
        info: the transition densities if already known (from :func:`langevin_step`).

    Returns:
        Tensor of shape ``batch``; never NaN.

    References:
        Roberts and Tweedie. Exponential convergence of Langevin distributions
        and their discrete approximations. Bernoulli, 1996.

    Example:
        >>> f = lambda z: (-0.5 * z.square().sum(-1), -z)
        >>> x, y = torch.zeros(2), torch.ones(2)
        >>> mala_log_accept_ratio(LangevinState(x, *f(x)), LangevinState(y, *f(y)), 0.5).shape
        torch.Size([])
    """
    x, y = current.position, proposal.position
    check_like("proposal.position", y, x, "mala_log_accept_ratio")
    if info is None:
        info = LangevinInfo(
            langevin_log_transition(y, current, step_size, inv_mass, event_dim=event_dim),
            langevin_log_transition(x, proposal, step_size, inv_mass, event_dim=event_dim),
        )
    log_r = metropolis_log_ratio(
        current.log_density, proposal.log_density, info.log_forward, info.log_backward
    )
    dims = tuple(range(-event_dim, 0))
    finite = torch.isfinite(current.grad).all(dims) & torch.isfinite(proposal.grad).all(dims)
    return torch.where(finite, log_r, torch.full_like(log_r, -torch.inf))
