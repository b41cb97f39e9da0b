"""Underdamped (kinetic) Langevin block with an augmented velocity."""

from __future__ import annotations

__all__ = ["UnderdampedLangevin"]

from typing import Unpack

import torch
from torch import Tensor

from pyro_relax.ops.gaussian import kinetic_energy, scale_noise
from pyro_relax.ops.integrators import IntegratorState, leapfrog, partial_momentum_refresh
from pyro_relax.ops.metropolis import MetropolisInfo
from pyro_relax.stochastic.block import AnnealedBlock, BlockOptions, BlockState
from pyro_relax.stochastic.density import LogDensity


class UnderdampedLangevin(AnnealedBlock):
    r"""Unadjusted underdamped Langevin dynamics (OBABO splitting) with a path weight.

    The block augments the position with a velocity ``v ~ N(0, M)``, runs
    ``n_steps`` OBABO steps of size ``h`` with friction ``gamma``, and drops
    the velocity again. Per step:

    * O (half): ``v <- a v + sqrt(1 - a^2) M^{1/2} xi``, ``a = exp(-gamma h / 2)``;
      its own backward kernel, with ``Delta S = K(v_after) - K(v_before)``
      (``K(v) = v^T M^-1 v / 2``, the kinetic energy);
    * B A B: one leapfrog step, deterministic and volume preserving (``Delta S = 0``);
    * O (half) again.

    The augmentation contributes ``-log N(v_0; 0, M) = K(v_0) + c`` and dropping
    the final velocity with the backward kernel ``N(v_n; 0, M)`` contributes
    ``-K(v_n) - c`` (the energy terms), so the block's total telescopes to

    .. math::
        \Delta S = -\sum_{\text{steps}} \big(K(v_{after\ BAB}) - K(v_{before\ BAB})\big)
        \approx \log \pi_\lambda(x) - \log \pi_\lambda(y)

    up to the leapfrog energy error. The backward path (``encode``) is the same
    dynamics from the data side (O and N(0, M) are symmetric under ``v -> -v``
    and the inverse leapfrog is the flipped leapfrog), so one routine serves
    both directions. All noise is reparametrized; ``h``, ``gamma`` and ``M`` can be
    learned (log-parametrized). As ``h -> 0`` the output tends to the input and
    ``Delta S`` to 0.

    Arguments:
        target: the target log density (a Target, module, distribution or callable).
        base: the base log density of the annealing path (needed unless ``lam`` is 1).
        step_size: ``h > 0``; float or tensor broadcasting to the event.
        friction: ``gamma > 0``.
        mass: diagonal mass ``M > 0``; float or tensor broadcasting to the event.
        learn_friction: learn ``gamma``.
        learn_mass: learn ``M``.
        **options: ``lam``, ``learn_step_size``, ``learn_lam``, ``n_steps`` (OBABO
            steps; the velocity persists across them), ``event_dim``: see
            :class:`~pyro_relax.stochastic.block.AnnealedBlock`.

    References:
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020.
        Leimkuhler and Matthews. Molecular Dynamics, Springer 2015 (splittings).

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> block = UnderdampedLangevin(standard_normal_log_prob, step_size=0.2, n_steps=4)
        >>> y, delta_s = block.decode(torch.randn(3, 2))
        >>> delta_s.shape
        torch.Size([3])
    """

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        step_size: float | Tensor = 0.1,
        friction: float | Tensor = 1.0,
        mass: float | Tensor = 1.0,
        learn_friction: bool = False,
        learn_mass: bool = False,
        **options: Unpack[BlockOptions],
    ) -> None:
        super().__init__(target, base, step_size, **options)
        self._register_positive("friction", friction, learn_friction)
        self._register_positive("mass", mass, learn_mass)

    def _start(self, x: Tensor) -> BlockState:
        return BlockState(x, v=scale_noise(torch.randn_like(x), self.positive("mass", x)))

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, MetropolisInfo | None]:
        state = self.with_gradient(state)
        x, v, ed = state.x, state.v, self.event_dim
        assert v is not None
        h = self.positive("step_size", x)
        mass = self.positive("mass", x)
        inv_mass = 1.0 / mass
        a = torch.exp(-0.5 * h * self.positive("friction", x))
        v1 = partial_momentum_refresh(v, a, torch.randn_like(v), mass)
        start = IntegratorState(x, v1, state.lp, state.grad)  # type: ignore[arg-type]
        end = leapfrog(start, self.log_pi_and_grad, h, 1, inv_mass)
        v3 = partial_momentum_refresh(end.momentum, a, torch.randn_like(v), mass)
        # The O steps' Delta S and the augment/drop energy terms telescope to minus
        # the kinetic energy change of the deterministic BAB part.
        delta = kinetic_energy(v1, inv_mass, event_dim=ed) - kinetic_energy(
            end.momentum, inv_mass, event_dim=ed
        )
        return BlockState(end.position, end.log_density, end.grad, v3), delta, None

    def extra_repr(self) -> str:
        """The module's settings, for ``repr``."""
        return f"n_steps={self.n_steps}"
