r"""Hamiltonian dynamics: the leapfrog integrator, the Hamiltonian, momentum refreshes.

For ``H(x, v) = -log pi(x) + v^T M^{-1} v / 2`` one leapfrog step of size ``eps``
is (velocity Verlet)

.. math::
    v_{1/2} = v + \tfrac{\epsilon}{2} \nabla \log \pi(x), \quad
    x' = x + \epsilon M^{-1} v_{1/2}, \quad
    v' = v_{1/2} + \tfrac{\epsilon}{2} \nabla \log \pi(x');

``n`` steps merge the inner half kicks into full ones. The map is volume
preserving and reversible (flip the momentum, integrate, flip again: back to
the start), and its energy error over a fixed time is ``O(eps^2)``.
"""

from __future__ import annotations

__all__ = ["IntegratorState", "hamiltonian", "leapfrog", "partial_momentum_refresh"]

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from pyro_relax.core.checks import check_positive_int
from pyro_relax.ops.gaussian import InverseMass, apply_inverse_mass, check_like, kinetic_energy

LogDensityAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


class IntegratorState(NamedTuple):
    """A phase-space point with the log density and its gradient at the position.

    Attributes:
        position: ``x``, ``batch + event``.
        momentum: ``v``, same shape.
        log_density: ``log pi(x)``, shape ``batch``.
        grad: ``grad log pi(x)``, shape of ``x``.
    """

    position: Tensor
    momentum: Tensor
    log_density: Tensor
    grad: Tensor


def leapfrog(
    state: IntegratorState,
    log_density_and_grad: LogDensityAndGrad,
    step_size: float | Tensor,
    num_steps: int = 1,
    inv_mass: InverseMass = None,
) -> IntegratorState:
    r"""``num_steps`` leapfrog steps of ``H = -log pi(x) + v^T M^{-1} v / 2``.

    One gradient evaluation per step (the start's gradient comes with ``state``).

    Arguments:
        state: the start.
        log_density_and_grad: ``x -> (log pi(x), grad log pi(x))``.
        step_size: ``eps``; a float or a tensor broadcasting to the event.
        num_steps: number of steps, ``>= 1``.
        inv_mass: the inverse mass (a diagonal, a
            :class:`~pyro_relax.ops.gaussian.DenseInverseMass` or ``None``).

    Returns:
        The :class:`IntegratorState` at the end of the trajectory.

    References:
        Neal. MCMC using Hamiltonian dynamics. Handbook of MCMC, 2011.

    Example:
        >>> import torch
        >>> f = lambda x: (-0.5 * x.square().sum(-1), -x)
        >>> x = torch.ones(1, 2)
        >>> end = leapfrog(IntegratorState(x, torch.zeros(1, 2), *f(x)), f, 0.1, 3)
        >>> end.position.shape
        torch.Size([1, 2])
    """
    num_steps = check_positive_int(num_steps, "num_steps", "leapfrog")
    x, v, lp, grad = state
    check_like("momentum", v, x, "leapfrog")
    check_like("grad", grad, x, "leapfrog")
    v = v + 0.5 * step_size * grad
    for i in range(num_steps):
        x = x + step_size * apply_inverse_mass(v, inv_mass)
        lp, grad = log_density_and_grad(x)
        v = v + (0.5 if i == num_steps - 1 else 1.0) * step_size * grad
    return IntegratorState(x, v, lp, grad)


def hamiltonian(state: IntegratorState, inv_mass: InverseMass = None, event_dim: int = 1) -> Tensor:
    """``H = -log pi(x) + v^T M^{-1} v / 2``, shape ``batch``.

    Example:
        >>> import torch
        >>> s = IntegratorState(torch.zeros(2), torch.ones(2), torch.tensor(-1.0), torch.zeros(2))
        >>> float(hamiltonian(s))
        2.0
    """
    return kinetic_energy(state.momentum, inv_mass, event_dim) - state.log_density


def partial_momentum_refresh(
    momentum: Tensor, decay: Tensor | float, noise: Tensor, mass: Tensor | float = 1.0
) -> Tensor:
    r"""``v' = a v + sqrt(1 - a^2) M^{1/2} xi``: exact for ``N(0, M)`` (the O step of OBABO).

    Arguments:
        momentum: ``v``.
        decay: ``a`` in ``[0, 1]`` (``exp(-gamma h / 2)`` for friction ``gamma``).
        noise: standard normal draws, shape of ``v``.
        mass: the diagonal mass ``M``.

    Returns:
        ``v'``, shape of ``v``.

    Example:
        >>> import torch
        >>> partial_momentum_refresh(torch.ones(2), 1.0, torch.randn(2))
        tensor([1., 1.])
    """
    check_like("noise", noise, momentum, "partial_momentum_refresh")
    a = decay if isinstance(decay, Tensor) else momentum.new_tensor(decay)
    scale = (1.0 - a.square()).clamp_min(0.0).sqrt()
    root_mass = mass.sqrt() if isinstance(mass, Tensor) else mass**0.5
    return a * momentum + scale * root_mass * noise
