"""Slicing: keep the first entries, and decode the dropped ones from a learned Gaussian."""

from __future__ import annotations

__all__ = ["SliceSurjection"]

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.functional import softplus

from pyro_relax.core.checks import check_size
from pyro_relax.core.layer import VectorLayer, append_context
from pyro_relax.nn.mlp import MLP

_LOG_2PI = math.log(2.0 * math.pi)
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) = 1
_MIN_SCALE = 1e-4


class SliceSurjection(VectorLayer):
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
        check_size(dim, "dim", "SliceSurjection", minimum=2)
        check_size(keep, "keep", "SliceSurjection")
        if keep >= dim:
            raise ValueError(
                f"SliceSurjection: expected 1 <= keep < dim, got keep={keep} with dim={dim} "
                "(a slice keeping more dimensions than exist, or none, is not a surjection)"
            )
        super().__init__(dim, keep)
        self.keep = keep
        self.context_dim = check_size(context_dim, "context_dim", "SliceSurjection", minimum=0)
        self.decoder = MLP(keep + context_dim, 2 * (dim - keep), hidden, zero_last=True)

    def decoder_params(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Location and scale of ``p(x_drop | z)``.

        Arguments:
            z: kept entries, shape ``batch + (keep,)``.
            context: ``batch + (context_dim,)`` when ``context_dim > 0``.

        Returns:
            ``(loc, scale)``, each of shape ``batch + (dim - keep,)``.
        """
        h = append_context(z, context, self.context_dim, "SliceSurjection")
        loc, raw = self.decoder(h).chunk(2, dim=-1)
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
        """The sizes of the data, of the kept part and of the context."""
        ctx = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"dim={self.dim}, keep={self.keep}{ctx}"
