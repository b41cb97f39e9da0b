"""Hamiltonian Monte Carlo block: leapfrog trajectories with an accept/reject step."""

from __future__ import annotations

__all__ = ["HMCBlock", "leapfrog"]

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pyro_relax.stochastic.annealing import AnnealedBlock, BlockState, LogDensity


def leapfrog(
    x: Tensor,
    v: Tensor,
    grad: Tensor,
    step_size: Tensor,
    inv_mass: Tensor,
    n_steps: int,
    log_pi_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n_steps`` leapfrog steps of ``H = -log pi(x) + v^T M^-1 v / 2`` (volume preserving).

    Arguments:
        x: positions, ``batch + event``.
        v: momenta, same shape.
        grad: ``grad log pi(x)``.
        step_size: ``eps``, broadcasting to the event.
        inv_mass: the diagonal of ``M^-1``, broadcasting to the event.
        n_steps: number of steps.
        log_pi_and_grad: returns ``(log pi(x), grad log pi(x))``.

    Returns:
        ``(x, v, log pi(x), grad log pi(x))`` at the end of the trajectory.

    Example:
        >>> import torch
        >>> f = lambda x: (-0.5 * x.square().sum(-1), -x)
        >>> x, v, lp, g = leapfrog(torch.ones(1, 2), torch.zeros(1, 2), -torch.ones(1, 2),
        ...                        torch.tensor(0.1), torch.tensor(1.0), 3, f)
        >>> x.shape
        torch.Size([1, 2])
    """
    lp = None
    v = v + 0.5 * step_size * grad
    for i in range(n_steps):
        x = x + step_size * inv_mass * v
        lp, grad = log_pi_and_grad(x)
        v = v + (0.5 if i == n_steps - 1 else 1.0) * step_size * grad
    assert lp is not None
    return x, v, lp, grad


class HMCBlock(AnnealedBlock):
    r"""Hamiltonian Monte Carlo steps targeting ``pi_lambda``.

    Each step draws a momentum ``v ~ N(0, M)`` (diagonal mass ``M``), runs
    ``n_leapfrog`` leapfrog steps of size ``eps``, and accepts the end point
    with probability ``min(1, exp(H(x, v) - H(y', v')))`` using uniform noise.
    The kernel is reversible with respect to ``pi_lambda``, so
    ``Delta S = log pi_lambda(x) - log pi_lambda(y)`` for the output ``y``,
    accepted or not. The output is ``where(accept, y', x)`` (SNF paper):
    gradients flow through the trajectory to ``eps``, ``M``, ``lam`` and the
    input when accepted. A trajectory that meets NaN is rejected.

    Arguments:
        target: the target log density (a Target, module, distribution or callable).
        base: the base log density of the annealing path (needed unless ``lam`` is 1).
        step_size: leapfrog step ``eps > 0``; float or tensor broadcasting to the event.
        n_leapfrog: leapfrog steps per HMC step.
        mass: diagonal mass ``M > 0``; float or tensor broadcasting to the event.
        lam: annealing parameter in ``[0, 1]`` or a schedule entry.
        learn_step_size: learn ``eps`` (log-parametrized).
        learn_mass: learn ``M`` (log-parametrized).
        learn_lam: learn ``lam`` (sigmoid-parametrized).
        n_steps: number of HMC steps in the block.
        event_dim: event dimensions of the data side.

    References:
        Neal. MCMC using Hamiltonian dynamics. Handbook of MCMC, 2011.
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020.

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob
        >>> block = HMCBlock(standard_normal_log_prob, step_size=0.3, n_leapfrog=5)
        >>> y, delta_s = block.decode(torch.randn(4, 2))
        >>> y.shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        step_size: float | Tensor = 0.1,
        n_leapfrog: int = 5,
        mass: float | Tensor = 1.0,
        lam: float | nn.Module = 1.0,
        learn_step_size: bool = False,
        learn_mass: bool = False,
        learn_lam: bool = False,
        n_steps: int = 1,
        event_dim: int = 1,
    ) -> None:
        super().__init__(target, base, lam, learn_lam, n_steps, event_dim)
        if isinstance(n_leapfrog, bool) or not isinstance(n_leapfrog, int) or n_leapfrog < 1:
            raise ValueError(f"HMCBlock: expected an int n_leapfrog >= 1, got {n_leapfrog!r}")
        self.n_leapfrog = n_leapfrog
        self._register_positive("step_size", step_size, learn_step_size)
        self._register_positive("mass", mass, learn_mass)

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, Tensor | None]:
        x = state.x
        if state.grad is None:
            state.lp, state.grad = self.log_pi_and_grad(x)
        lp_x, grad_x = state.lp, state.grad
        assert lp_x is not None
        mass = self.positive("mass", x)
        inv_mass = 1.0 / mass
        v = mass.sqrt() * torch.randn_like(x)
        y, w, lp_y, grad_y = leapfrog(
            x,
            v,
            grad_x,
            self.positive("step_size", x),
            inv_mass,
            self.n_leapfrog,
            self.log_pi_and_grad,
        )
        # log alpha = H(x, v) - H(y', w); NaN compares False: rejected.
        log_alpha = lp_y - lp_x + self._half_sq_norm(v, inv_mass) - self._half_sq_norm(w, inv_mass)
        accept = torch.rand_like(lp_x).log() < log_alpha
        a = accept.reshape(accept.shape + (1,) * self.event_dim)
        out = BlockState(
            torch.where(a, y, x), torch.where(accept, lp_y, lp_x), torch.where(a, grad_y, grad_x)
        )
        assert out.lp is not None
        return out, lp_x - out.lp, accept

    def extra_repr(self) -> str:
        return f"n_steps={self.n_steps}, n_leapfrog={self.n_leapfrog}"
