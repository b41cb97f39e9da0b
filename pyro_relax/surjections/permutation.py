"""A uniformly random permutation: a stochastic layer with a zero contribution."""

from __future__ import annotations

__all__ = ["StochasticPermutation"]

import torch
from torch import Tensor

from pyro_relax.core.checks import check_size
from pyro_relax.core.layer import RelaxedLayer


class StochasticPermutation(RelaxedLayer):
    r"""Shuffle the last dimension with a fresh uniform permutation in both directions.

    Stochastic layer (Nielsen et al. 2020, "stochastic permutation"): ``encode``
    returns ``z = x[perm]`` and ``decode`` returns ``x = z[perm']`` for independent
    uniform permutations of the last dimension (one per event; with
    ``event_dim > 1`` the other event dimensions move together). Both
    ``p(x | z)`` and ``q(z | x)`` put mass ``1 / D!`` on each reordering, so the
    contribution is ``V = log p(x | z) - log q(z | x) = 0`` and ``S = 0``.

    The model is ``x = shuffle(z)``, ``p(x) = mean_perm p_z(x[perm])``; the bound
    ``E_perm[log p_z(x[perm])] <= log p(x)`` (Jensen) is **tight only when the
    density below is permutation invariant** (exchangeable). Inserted between
    layers of a flow on sets, the layer makes the model exchangeable.

    Arguments:
        event_dim: number of event dimensions; the last one is permuted.

    References:
        Nielsen et al., SurVAE Flows, NeurIPS 2020 (arXiv 2007.02731), section 3.

    Example:
        >>> import torch
        >>> layer = StochasticPermutation()
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> z, v = layer.encode(x)
        >>> z.sort(-1).values, v
        (tensor([[1., 2., 3.]]), tensor([0.]))
    """

    stochastic_forward = True
    stochastic_inverse = True
    exact = False

    def __init__(self, event_dim: int = 1) -> None:
        super().__init__()
        self.event_dim = check_size(event_dim, "event_dim", "StochasticPermutation")

    def _shuffle(self, t: Tensor) -> tuple[Tensor, Tensor]:
        batch = self._batch_shape(t, self.event_dim)
        keys = torch.rand(batch + t.shape[-1:], device=t.device, dtype=t.dtype)
        perm = torch.argsort(keys, dim=-1)
        perm = perm.reshape(batch + (1,) * (self.event_dim - 1) + t.shape[-1:]).expand(t.shape)
        return t.gather(-1, perm), t.new_zeros(batch)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._shuffle(x)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._shuffle(z)

    def extra_repr(self) -> str:
        """The number of event dimensions."""
        return f"event_dim={self.event_dim}"
