"""Sorting: an inference surjection whose decoder draws a uniform random order."""

from __future__ import annotations

__all__ = ["SortSurjection"]

import math

import torch
from torch import Tensor

from pyro_relax.core.checks import check_size
from pyro_relax.core.layer import RelaxedLayer


class SortSurjection(RelaxedLayer):
    r"""``z = sort(x)`` along the last dimension (ascending); decoding shuffles uniformly.

    Inference surjection (Nielsen et al. 2020): every sorted vector ``z`` of
    length ``D`` (without ties) has ``D!`` preimages, one per ordering, and the
    decoder picks one uniformly, so the exact contribution is
    ``V = log p(x | z) = -log D!`` per sorted row. With ``event_dim > 1`` each
    row along the last dimension is sorted on its own and ``V`` is ``-log D!``
    times the number of rows. Ties have probability zero under a density.

    The latent side is the cone of ascending vectors: a flow stacked under this
    layer should map onto it (e.g. Pyro's ``OrderedTransform``); ``decode``
    rejects unsorted input when validation is on.

    Arguments:
        event_dim: number of event dimensions (at least 1); sorting is along
            the last one.

    References:
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020 (arXiv 2007.02731).

    Example:
        >>> import torch
        >>> layer = SortSurjection()
        >>> z, v = layer.encode(torch.tensor([[3.0, 1.0, 2.0]]))
        >>> z, round(float(v), 4)
        (tensor([[1., 2., 3.]]), -1.7918)
        >>> x, s = layer.decode(z)
        >>> torch.equal(x.sort(-1).values, z), round(float(s), 4)
        (True, 1.7918)
    """

    stochastic_inverse = True

    def __init__(self, event_dim: int = 1) -> None:
        super().__init__()
        self.event_dim = check_size(event_dim, "event_dim", "SortSurjection")

    def _log_p(self, t: Tensor) -> Tensor:
        """``-(rows) log D!`` with the batch shape of ``t``."""
        event = t.shape[t.dim() - self.event_dim :]
        rows = math.prod(event[:-1])
        value = -rows * self._log_factorial(int(event[-1]))
        return t.new_full(self._batch_shape(t, self.event_dim), value)

    def check_latent(self, z: Tensor) -> None:
        """Raise a ``ValueError`` unless ``z`` is sorted along the last dimension."""
        if z.shape[-1] > 1 and not bool((z[..., 1:] >= z[..., :-1]).all()):
            raise ValueError(
                "SortSurjection.decode: expected z sorted ascending along the last dimension, "
                "got unsorted entries"
            )

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z = torch.sort(x, dim=-1).values
        return z, self._log_p(x)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # argsort of i.i.d. uniforms is a uniformly random permutation of each row.
        perm = torch.argsort(torch.rand_like(z), dim=-1)
        x = torch.gather(z, -1, perm)
        return x, -self._log_p(z)

    def extra_repr(self) -> str:
        """The number of event dimensions."""
        return f"event_dim={self.event_dim}"
