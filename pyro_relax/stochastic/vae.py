"""The variational autoencoder as a stochastic layer of a flow."""

from __future__ import annotations

__all__ = ["VAELayer"]

from collections.abc import Sequence

import torch
from torch import Tensor

from pyro_relax.core import RelaxedLayer
from pyro_relax.surjections.augment import ConditionalNormal


class VAELayer(RelaxedLayer):
    r"""A Gaussian encoder ``q(z | x)`` and decoder ``p(x | z)`` as one stochastic layer.

    Stochastic layer (Kingma and Welling 2014, seen as a flow layer by Nielsen
    et al. 2020): ``encode`` draws ``z ~ q(z | x)`` (reparametrized) and returns
    ``V = log p(x | z) - log q(z | x)``, so that with a prior (the layers below)
    ``log p(x) >= E_q[log p(z) + V]``, the ELBO, with gap ``KL(q(z | x) || p(z | x))``.
    ``decode`` draws ``x ~ p(x | z)`` (reparametrized) and returns
    ``S = -(log p(x | z) - log q(z | x))`` at the drawn ``x``, so ``exp`` of the
    path weight is unbiased for the likelihood ratio. Both distributions are
    diagonal Gaussians whose mean and log-scale come from MLPs (``hidden=()``
    makes them linear: a linear-Gaussian model, probabilistic PCA). The latent
    size may differ from the data size. Both networks start at zero: ``q`` and
    ``p`` start as standard normals.

    Arguments:
        dim: data event size.
        latent_dim: latent event size.
        hidden: hidden sizes of the encoder and decoder MLPs.
        context_dim: size of a conditioning context fed to both networks
            (0 for none; a context passed when it is 0 is ignored).

    References:
        Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014.
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020 (arXiv 2007.02731).

    Example:
        >>> import torch
        >>> layer = VAELayer(4, latent_dim=2, hidden=(8,))
        >>> z, v = layer.encode(torch.randn(3, 4))
        >>> x, s = layer.decode(z)
        >>> z.shape, x.shape, v.shape
        (torch.Size([3, 2]), torch.Size([3, 4]), torch.Size([3]))
    """

    stochastic_forward = True
    stochastic_inverse = True
    exact = False
    accepts_context = True

    def __init__(
        self, dim: int, latent_dim: int, hidden: Sequence[int] = (64,), context_dim: int = 0
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("latent_dim", latent_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"VAELayer: expected a positive int {name}, got {v!r}")
        self.dim = dim
        self.latent_dim = latent_dim
        self.encoder = ConditionalNormal(dim, latent_dim, hidden, context_dim)
        self.decoder = ConditionalNormal(latent_dim, dim, hidden, context_dim)

    def expected_data_shape(self) -> torch.Size:
        """The data event shape ``(dim,)`` the layer was built for."""
        return torch.Size((self.dim,))

    def latent_shape(self, data_shape: torch.Size) -> torch.Size:
        """``(latent_dim,)`` for the data shape ``(dim,)``; any other is a ``ValueError``."""
        if tuple(data_shape) != (self.dim,):
            raise ValueError(
                f"VAELayer: expected data shape ({self.dim},), got {tuple(data_shape)}"
            )
        return torch.Size((self.latent_dim,))

    def data_shape(self, latent_shape: torch.Size) -> torch.Size:
        """``(dim,)`` for the latent shape ``(latent_dim,)``; any other is a ``ValueError``."""
        if tuple(latent_shape) != (self.latent_dim,):
            raise ValueError(
                f"VAELayer: expected latent shape ({self.latent_dim},), got {tuple(latent_shape)}"
            )
        return torch.Size((self.dim,))

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z, log_q = self.encoder.rsample(x, context)
        log_p = self.decoder.log_prob(x, z, context)
        return z, log_p - log_q

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, log_p = self.decoder.rsample(z, context)
        log_q = self.encoder.log_prob(z, x, context)
        return x, log_q - log_p

    def extra_repr(self) -> str:
        """The module's settings, for ``repr``."""
        return (f"dim={self.dim}, latent_dim={self.latent_dim}, "
                f"context_dim={self.encoder.context_dim}")
