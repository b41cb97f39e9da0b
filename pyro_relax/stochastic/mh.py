"""Random-walk Metropolis-Hastings block."""

from __future__ import annotations

__all__ = ["RandomWalkMH"]

import torch
from torch import Tensor

from pyro_relax.ops.metropolis import (
    MetropolisInfo,
    metropolis_accept,
    metropolis_log_ratio,
    select,
)
from pyro_relax.stochastic.block import AnnealedBlock, BlockState


class RandomWalkMH(AnnealedBlock):
    r"""Gaussian random-walk Metropolis-Hastings steps targeting ``pi_lambda``.

    Each step proposes ``y' = x + sigma * eta`` (``eta ~ N(0, I)``, symmetric)
    and accepts it with probability ``min(1, pi(y') / pi(x))`` using uniform
    noise. By detailed balance the path weight of the step is
    ``Delta S = log pi_lambda(x) - log pi_lambda(y)`` for the output ``y``,
    whether the proposal was accepted or not (0 on rejection). The output is
    ``where(accept, y', x)``, so gradients reach ``sigma`` (and the input)
    through the accepted branch, as in the SNF paper. A proposal whose log
    density is NaN or infinite is rejected
    (:func:`~pyro_relax.ops.metropolis.metropolis_log_ratio`), never propagated.

    Arguments:
        as :class:`~pyro_relax.stochastic.block.AnnealedBlock`, with ``step_size``
        the proposal scale ``sigma`` (default 0.5) and ``n_steps`` Metropolis steps.

    References:
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020, section 3
        and appendix (MCMC blocks).

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> block = RandomWalkMH(standard_normal_log_prob, step_size=0.5, n_steps=10)
        >>> x = torch.randn(6, 3)
        >>> y, delta_s = block.decode(x)
        >>> bool(torch.allclose(delta_s, block.log_pi(x) - block.log_pi(y), atol=1e-5))
        True
    """

    default_step_size = 0.5

    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, MetropolisInfo | None]:
        x = state.x
        lp_x = self.log_pi(x) if state.lp is None else state.lp
        proposal = x + self.positive("step_size", x) * torch.randn_like(x)
        lp_prop = self.log_pi(proposal)
        mh = metropolis_accept(metropolis_log_ratio(lp_x, lp_prop))
        y = select(mh.accepted, proposal, x, self.event_dim)
        lp_y = torch.where(mh.accepted, lp_prop, lp_x)
        return BlockState(y, lp_y), lp_x - lp_y, mh
