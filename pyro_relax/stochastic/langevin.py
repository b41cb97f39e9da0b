"""Overdamped Langevin blocks: unadjusted (ULA) and Metropolis-adjusted (MALA)."""

from __future__ import annotations

__all__ = ["MALABlock", "OverdampedLangevin"]

import torch
from torch import Tensor, nn

from pyro_relax.stochastic.annealing import AnnealedBlock, BlockState, LogDensity


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

    A NaN or inf in the gradient is not checked inside the step (no host
    synchronization); it is recorded and raised as a ``ValueError`` naming the
    block and the step by the checked entry points.

    Arguments:
        target: the target log density (a Target, module, distribution or callable).
        base: the base log density of the annealing path (needed unless ``lam`` is 1).
        step_size: ``eps > 0``; a float or a tensor broadcasting to the event shape.
        lam: annealing parameter in ``[0, 1]`` or a schedule entry.
        learn_step_size: learn ``eps`` (log-parametrized).
        learn_lam: learn ``lam`` (sigmoid-parametrized).
        n_steps: number of Langevin steps in the block.
        event_dim: event dimensions of the data side.

    References:
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020, section 3
        (arXiv 2002.06707).

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob
        >>> block = OverdampedLangevin(standard_normal_log_prob, step_size=0.1)
        >>> y, delta_s = block.decode(torch.randn(5, 2))
        >>> y.shape, delta_s.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    metropolis: bool = False

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        step_size: float | Tensor = 0.01,
        lam: float | nn.Module = 1.0,
        learn_step_size: bool = False,
        learn_lam: bool = False,
        n_steps: int = 1,
        event_dim: int = 1,
    ) -> None:
        super().__init__(target, base, lam, learn_lam, n_steps, event_dim)
        self._register_positive("step_size", step_size, learn_step_size)

    def _proposal(self, state: BlockState) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One Langevin move from ``state``: ``(y, lp(y), grad(y), |eta|^2/2, |eta_b|^2/2)``."""
        x = state.x
        if state.grad is None:
            state.lp, state.grad = self.log_pi_and_grad(x)
        eps = self.positive("step_size", x)
        scale = (2.0 * eps).sqrt()
        eta = torch.randn_like(x)
        y = x + eps * state.grad + scale * eta
        lp_y, grad_y = self.log_pi_and_grad(y)
        eta_back = (x - y - eps * grad_y) / scale
        return y, lp_y, grad_y, self._half_sq_norm(eta), self._half_sq_norm(eta_back)

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, Tensor | None]:
        y, lp_y, grad_y, fwd, back = self._proposal(state)
        return BlockState(y, lp_y, grad_y), fwd - back, None

    def extra_repr(self) -> str:
        return f"n_steps={self.n_steps}, metropolis={self.metropolis}"


class MALABlock(OverdampedLangevin):
    r"""Metropolis-adjusted Langevin: a Langevin proposal, then accept or reject.

    The proposal ``y'`` is the :class:`OverdampedLangevin` move; it is accepted
    with probability ``min(1, pi(y') q(x | y') / (pi(x) q(y' | x)))`` using
    uniform noise, so the block leaves ``pi_lambda`` invariant. By detailed
    balance ``Delta S = log pi_lambda(x) - log pi_lambda(y)`` for the output
    ``y`` (0 on rejection). As in the SNF paper the output is
    ``where(accept, y', x)``: gradients flow through the chosen branch, the
    accept decision itself is not differentiated. A proposal whose log density
    or gradient is NaN is rejected.

    Arguments: as :class:`OverdampedLangevin`.

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob
        >>> block = MALABlock(standard_normal_log_prob, step_size=0.5, n_steps=3)
        >>> y, delta_s = block.decode(torch.randn(4, 2))
        >>> float(block.last_acceptance) <= 1.0
        True
    """

    metropolis = True

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, Tensor | None]:
        x = state.x
        y, lp_y, grad_y, fwd, back = self._proposal(state)
        lp_x, grad_x = state.lp, state.grad
        assert lp_x is not None and grad_x is not None
        # log q(x | y') - log q(y' | x) = |eta|^2/2 - |eta_b|^2/2; NaN compares False: rejected.
        log_alpha = lp_y - lp_x + fwd - back
        accept = torch.rand_like(lp_x).log() < log_alpha
        a = accept.reshape(accept.shape + (1,) * self.event_dim)
        out = BlockState(
            torch.where(a, y, x), torch.where(accept, lp_y, lp_x), torch.where(a, grad_y, grad_x)
        )
        assert out.lp is not None
        return out, lp_x - out.lp, accept
