"""Overdamped Langevin blocks: unadjusted (ULA) and Metropolis-adjusted (MALA)."""

from __future__ import annotations

__all__ = ["MALABlock", "OverdampedLangevin"]

import torch
from torch import Tensor

from pyro_relax.ops.langevin import (
    LangevinInfo,
    LangevinState,
    langevin_step,
    mala_log_accept_ratio,
)
from pyro_relax.ops.metropolis import MetropolisInfo, metropolis_accept, select
from pyro_relax.stochastic.block import AnnealedBlock, BlockState


class OverdampedLangevin(AnnealedBlock):
    r"""Unadjusted overdamped Langevin steps towards ``pi_lambda`` with a path weight.

    One step with force ``F = grad log pi_lambda`` and step size ``eps``:

    .. math::
        y = x + \epsilon F(x) + \sqrt{2 \epsilon}\, \eta, \qquad
        \eta_b = \frac{x - y - \epsilon F(y)}{\sqrt{2 \epsilon}}, \qquad
        \Delta S = \tfrac12 \left(|\eta|^2 - |\eta_b|^2\right),

    the log ratio of the backward Gaussian kernel ``N(x; y + eps F(y), 2 eps)``
    to the forward one ``N(y; x + eps F(x), 2 eps)`` (their normalizers cancel).
    The noise is reparametrized, so ``y`` and ``Delta S`` are differentiable in
    ``x``, the step size, ``lam`` and the target's parameters. As ``eps -> 0``,
    ``y -> x`` and ``Delta S = O(sqrt(eps))``. The gradient at the output is
    reused by the next step (one gradient evaluation per step).

    The move and its transition densities are
    :func:`~pyro_relax.ops.langevin.langevin_step`. A NaN or inf in the
    gradient is not checked inside the step (no host synchronization); it is
    returned in the :class:`~pyro_relax.stochastic.block.BlockInfo` and raised
    as a ``ValueError`` naming the block and the step by the checked entry points.

    Arguments:
        as :class:`~pyro_relax.stochastic.block.AnnealedBlock`, with ``step_size``
        the Langevin step ``eps`` (default 0.01) and ``n_steps`` Langevin steps.

    References:
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020, section 3
        (arXiv 2002.06707).

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> block = OverdampedLangevin(standard_normal_log_prob, step_size=0.1)
        >>> y, delta_s = block.decode(torch.randn(5, 2))
        >>> y.shape, delta_s.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    metropolis: bool = False
    default_step_size = 0.01

    def _proposal(self, state: BlockState) -> tuple[LangevinState, LangevinState, LangevinInfo]:
        """One Langevin move: ``(current, proposed, transition densities)``."""
        state = self.with_gradient(state)
        current = LangevinState(state.x, state.lp, state.grad)  # type: ignore[arg-type]
        eps = self.positive("step_size", state.x)
        noise = torch.randn_like(state.x)
        proposed, info = langevin_step(
            current, self.log_pi_and_grad, eps, noise, event_dim=self.event_dim
        )
        return current, proposed, info

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, MetropolisInfo | None]:
        _, proposed, info = self._proposal(state)
        return BlockState(*proposed), info.log_backward - info.log_forward, None

    def extra_repr(self) -> str:
        """The module's settings, for ``repr``."""
        return f"n_steps={self.n_steps}, metropolis={self.metropolis}"


class MALABlock(OverdampedLangevin):
    r"""Metropolis-adjusted Langevin: a Langevin proposal, then accept or reject.

    The proposal ``y'`` is the :class:`OverdampedLangevin` move; it is accepted
    with probability ``min(1, pi(y') q(x | y') / (pi(x) q(y' | x)))``
    (:func:`~pyro_relax.ops.langevin.mala_log_accept_ratio`,
    :func:`~pyro_relax.ops.metropolis.metropolis_accept`), so the block leaves
    ``pi_lambda`` invariant. By detailed balance
    ``Delta S = log pi_lambda(x) - log pi_lambda(y)`` for the output ``y`` (0 on
    rejection). As in the SNF paper the output is ``where(accept, y', x)``:
    gradients flow through the chosen branch, the accept decision itself is not
    differentiated. A proposal whose log density or gradient is NaN is rejected.

    Arguments: as :class:`OverdampedLangevin`.

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> block = MALABlock(standard_normal_log_prob, step_size=0.5, n_steps=3)
        >>> y, delta_s, info = block.decode_with_info(torch.randn(4, 2))
        >>> float(info.acceptance_rate) <= 1.0
        True
    """

    metropolis = True

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, MetropolisInfo | None]:
        current, proposed, info = self._proposal(state)
        eps = self.positive("step_size", state.x)
        log_r = mala_log_accept_ratio(current, proposed, eps, event_dim=self.event_dim, info=info)
        mh = metropolis_accept(log_r)
        ok, ed = mh.accepted, self.event_dim
        out = BlockState(
            select(ok, proposed.position, current.position, ed),
            torch.where(ok, proposed.log_density, current.log_density),
            select(ok, proposed.grad, current.grad, ed),
        )
        return out, current.log_density - out.lp, mh
