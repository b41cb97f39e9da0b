"""Slicing: keep the first entries, and decode the dropped ones from a learned Gaussian."""

from __future__ import annotations

__all__ = ["SliceSurjection"]

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.functional import softplus

from pyro_relax.core import RelaxedLayer
from pyro_relax.nn.mlp import MLP

_LOG_2PI = math.log(2.0 * math.pi)
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) = 1
_MIN_SCALE = 1e-4


class SliceSurjection(RelaxedLayer):
    r"""``z = x[..., :keep]``; decoding draws the dropped entries from ``p(x_drop | x_keep)``.

    Inference surjection (Nielsen et al. 2020): the dropped ``D - keep``
    entries are restored by a learned conditional Gaussian decoder with
    diagonal covariance, whose location and scale come from an MLP on the kept
    entries (and the context, if ``context_dim > 0``); the scale is
    ``softplus(.) + 1e-4`` and the decoder starts at the standard normal. The
    exact contribution is

    .. math:: V = \log p_{\mathrm{dec}}(x_{\mathrm{drop}} \mid x_{\mathrm{keep}}).

    Decoding is reparametrized (``loc + scale * eps``), so ``rsample`` gradients
    reach the decoder.

    Arguments:
        dim: the data event size ``D``.
        keep: how many leading entries the latent keeps (``1 <= keep < D``).
        hidden: hidden sizes of the decoder MLP.
        context_dim: size of a conditioning context fed to the decoder
            (0 for none; a context is then ignored).

    References:
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020 (arXiv 2007.02731).

    Example:
        >>> import torch
        >>> layer = SliceSurjection(3, keep=2)
        >>> z, v = layer.encode(torch.tensor([[1.0, 2.0, 0.0]]))
        >>> z, round(float(v.detach()), 3)  # the decoder starts near N(0, 1): log N(0; 0, 1)
        (tensor([[1., 2.]]), -0.919)
        >>> layer.decode(z)[0].shape
        torch.Size([1, 3])
    """

    stochastic_inverse = True
    accepts_context = True

    def __init__(
        self, dim: int, keep: int, hidden: Sequence[int] = (64,), context_dim: int = 0
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("keep", keep)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"SliceSurjection: expected an int {name}, got {v!r}")
        if keep < 1 or keep >= dim:
            raise ValueError(
                f"SliceSurjection: expected 1 <= keep < dim, got keep={keep} with dim={dim} "
                "(a slice keeping more dimensions than exist, or none, is not a surjection)"
            )
        if not isinstance(context_dim, int) or isinstance(context_dim, bool) or context_dim < 0:
            raise ValueError(
                f"SliceSurjection: expected an int context_dim >= 0, got {context_dim!r}"
            )
        self.dim = dim
        self.keep = keep
        self.context_dim = context_dim
        self.decoder = MLP(keep + context_dim, 2 * (dim - keep), hidden, zero_last=True)

    def expected_data_shape(self) -> torch.Size:
        return torch.Size((self.dim,))

    def latent_shape(self, data_shape: torch.Size) -> torch.Size:
        if tuple(data_shape) != (self.dim,):
            raise ValueError(
                f"SliceSurjection: expected data event ({self.dim},), got {tuple(data_shape)}"
            )
        return torch.Size((self.keep,))

    def data_shape(self, latent_shape: torch.Size) -> torch.Size:
        if tuple(latent_shape) != (self.keep,):
            raise ValueError(
                f"SliceSurjection: expected latent event ({self.keep},), got {tuple(latent_shape)}"
            )
        return torch.Size((self.dim,))

    def decoder_params(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Location and scale of ``p(x_drop | z)``.

        Arguments:
            z: kept entries, shape ``batch + (keep,)``.
            context: ``batch + (context_dim,)`` when ``context_dim > 0``.

        Returns:
            ``(loc, scale)``, each of shape ``batch + (dim - keep,)``.
        """
        if self.context_dim:
            if context is None or context.shape[-1] != self.context_dim:
                got = None if context is None else tuple(context.shape)
                raise ValueError(
                    f"SliceSurjection: expected a context of last size {self.context_dim}, "
                    f"got {got}"
                )
            batch = torch.broadcast_shapes(z.shape[:-1], context.shape[:-1])
            z = torch.cat(
                [z.expand(batch + z.shape[-1:]), context.expand(batch + context.shape[-1:])], -1
            )
        loc, raw = self.decoder(z).chunk(2, dim=-1)
        return loc, softplus(raw + _SOFTPLUS_ONE) + _MIN_SCALE

    @staticmethod
    def _normal_log_prob(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        u = (x - loc) / scale
        return (-0.5 * u.square() - torch.log(scale) - 0.5 * _LOG_2PI).sum(-1)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z, x_drop = x[..., : self.keep], x[..., self.keep :]
        loc, scale = self.decoder_params(z, context)
        return z, self._normal_log_prob(x_drop, loc, scale)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        loc, scale = self.decoder_params(z, context)
        x_drop = loc + scale * torch.randn_like(loc)
        x = torch.cat([z.expand(loc.shape[:-1] + z.shape[-1:]), x_drop], dim=-1)
        return x, -self._normal_log_prob(x_drop, loc, scale)

    def extra_repr(self) -> str:
        ctx = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"dim={self.dim}, keep={self.keep}{ctx}"
