"""Random-walk Metropolis-Hastings block."""

from __future__ import annotations

__all__ = ["RandomWalkMH"]

import torch
from torch import Tensor, nn

from pyro_relax.stochastic.annealing import AnnealedBlock, BlockState, LogDensity


class RandomWalkMH(AnnealedBlock):
    r"""Gaussian random-walk Metropolis-Hastings steps targeting ``pi_lambda``.

    Each step proposes ``y' = x + sigma * eta`` (``eta ~ N(0, I)``, symmetric)
    and accepts it with probability ``min(1, pi(y') / pi(x))`` using uniform
    noise. By detailed balance the path weight of the step is
    ``Delta S = log pi_lambda(x) - log pi_lambda(y)`` for the output ``y``,
    whether the proposal was accepted or not (0 on rejection). The output is
    ``where(accept, y', x)``, so gradients reach ``sigma`` (and the input)
    through the accepted branch, as in the SNF paper. A proposal whose log
    density is NaN is rejected (NaN compares false), never propagated.

    Arguments:
        target: the target log density (a Target, module, distribution or callable).
        base: the base log density of the annealing path (needed unless ``lam`` is 1).
        step_size: proposal scale ``sigma > 0``; float or tensor broadcasting to the event.
        lam: annealing parameter in ``[0, 1]`` or a schedule entry.
        learn_step_size: learn ``sigma`` (log-parametrized).
        learn_lam: learn ``lam`` (sigmoid-parametrized).
        n_steps: number of Metropolis steps in the block.
        event_dim: event dimensions of the data side.

    References:
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020, section 3
        and appendix (MCMC blocks).

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob
        >>> block = RandomWalkMH(standard_normal_log_prob, step_size=0.5, n_steps=10)
        >>> x = torch.randn(6, 3)
        >>> y, delta_s = block.decode(x)
        >>> bool(torch.allclose(delta_s, block.log_pi(x) - block.log_pi(y), atol=1e-5))
        True
    """

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        step_size: float | Tensor = 0.5,
        lam: float | nn.Module = 1.0,
        learn_step_size: bool = False,
        learn_lam: bool = False,
        n_steps: int = 1,
        event_dim: int = 1,
    ) -> None:
        super().__init__(target, base, lam, learn_lam, n_steps, event_dim)
        self._register_positive("step_size", step_size, learn_step_size)

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, Tensor | None]:
        x = state.x
        lp_x = self.log_pi(x) if state.lp is None else state.lp
        proposal = x + self.positive("step_size", x) * torch.randn_like(x)
        lp_prop = self.log_pi(proposal)
        accept = torch.rand_like(lp_x).log() < lp_prop - lp_x
        a = accept.reshape(accept.shape + (1,) * self.event_dim)
        y = torch.where(a, proposal, x)
        lp_y = torch.where(accept, lp_prop, lp_x)
        return BlockState(y, lp_y), lp_x - lp_y, accept
