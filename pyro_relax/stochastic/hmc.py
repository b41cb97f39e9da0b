"""Hamiltonian Monte Carlo block: leapfrog trajectories with an accept/reject step."""

from __future__ import annotations

__all__ = ["HMCBlock"]

from typing import Unpack

import torch
from torch import Tensor

from pyro_relax.ops.gaussian import scale_noise
from pyro_relax.ops.integrators import IntegratorState, hamiltonian, leapfrog
from pyro_relax.ops.metropolis import (
    MetropolisInfo,
    metropolis_accept,
    metropolis_log_ratio,
    select,
)
from pyro_relax.stochastic.block import AnnealedBlock, BlockOptions, BlockState
from pyro_relax.stochastic.density import LogDensity, check_count


class HMCBlock(AnnealedBlock):
    r"""Hamiltonian Monte Carlo steps targeting ``pi_lambda``.

    Each step draws a momentum ``v ~ N(0, M)`` (diagonal mass ``M``), runs
    ``n_leapfrog`` leapfrog steps of size ``eps``, and accepts the end point
    with probability ``min(1, exp(H(x, v) - H(y', v')))`` using uniform noise.
    The kernel is reversible with respect to ``pi_lambda``, so
    ``Delta S = log pi_lambda(x) - log pi_lambda(y)`` for the output ``y``,
    accepted or not. The output is ``where(accept, y', x)`` (SNF paper):
    gradients flow through the trajectory to ``eps``, ``M``, ``lam`` and the
    input when accepted. A trajectory that meets NaN is rejected. The math is
    :func:`~pyro_relax.ops.integrators.leapfrog` and
    :func:`~pyro_relax.ops.metropolis.metropolis_accept`.

    Arguments:
        target: the target log density (a Target, module, distribution or callable).
        base: the base log density of the annealing path (needed unless ``lam`` is 1).
        step_size: leapfrog step ``eps > 0``; float or tensor broadcasting to the event.
        n_leapfrog: leapfrog steps per HMC step.
        mass: diagonal mass ``M > 0``; float or tensor broadcasting to the event.
        learn_mass: learn ``M`` (log-parametrized).
        **options: ``lam``, ``learn_step_size``, ``learn_lam``, ``n_steps`` (HMC
            steps in the block), ``event_dim``: see
            :class:`~pyro_relax.stochastic.block.AnnealedBlock`.

    References:
        Neal. MCMC using Hamiltonian dynamics. Handbook of MCMC, 2011.
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020.

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> hmc = HMCBlock(standard_normal_log_prob, step_size=0.3, n_leapfrog=5, n_steps=2)
        >>> info = hmc.decode_with_info(torch.randn(16, 3))[2]
        >>> 0.5 < float(info.acceptance_probability) <= 1.0  # a small step: most are accepted
        True
    """

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        step_size: float | Tensor = 0.1,
        n_leapfrog: int = 5,
        mass: float | Tensor = 1.0,
        learn_mass: bool = False,
        **options: Unpack[BlockOptions],
    ) -> None:
        super().__init__(target, base, step_size, **options)
        self.n_leapfrog = check_count(n_leapfrog, "n_leapfrog", "HMCBlock", 1)
        self._register_positive("mass", mass, learn_mass)

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, MetropolisInfo | None]:
        state = self.with_gradient(state)
        x, ed = state.x, self.event_dim
        mass = self.positive("mass", x)
        inv_mass = 1.0 / mass
        momentum = scale_noise(torch.randn_like(x), mass)  # v ~ N(0, M)
        start = IntegratorState(x, momentum, state.lp, state.grad)  # type: ignore[arg-type]
        end = leapfrog(
            start, self.log_pi_and_grad, self.positive("step_size", x), self.n_leapfrog, inv_mass
        )
        # log r = H(x, v) - H(y', v'), NaN-safe
        log_r = metropolis_log_ratio(
            -hamiltonian(start, inv_mass, event_dim=ed), -hamiltonian(end, inv_mass, event_dim=ed)
        )
        mh = metropolis_accept(log_r)
        ok = mh.accepted
        out = BlockState(
            select(ok, end.position, x, ed),
            torch.where(ok, end.log_density, start.log_density),
            select(ok, end.grad, start.grad, ed),
        )
        return out, start.log_density - out.lp, mh

    def extra_repr(self) -> str:
        """The module's settings, for ``repr``."""
        return f"n_steps={self.n_steps}, n_leapfrog={self.n_leapfrog}"
