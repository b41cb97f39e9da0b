"""Augmentation: a generative surjection that appends learned noise to the data."""

from __future__ import annotations

__all__ = ["AugmentSurjection", "ConditionalNormal"]

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_event_shape, check_finite, check_size
from pyro_relax.core.layer import VectorLayer
from pyro_relax.nn.mlp import MLP


class ConditionalNormal(nn.Module):
    r"""A diagonal Gaussian ``N(loc(h), diag(scale(h)^2))`` read from ``h`` by an MLP.

    The network outputs ``(loc, raw)`` concatenated along the last dimension;
    ``log scale = B tanh(raw / B)`` with ``B = LOG_SCALE_BOUND`` (a smooth clamp
    that keeps gradients). The last layer starts at zero, so the distribution
    starts as a standard normal whatever ``h`` is. Sampling is reparametrized.

    Arguments:
        in_features: size of the conditioning input ``h`` (0 for none).
        out_features: size of the Gaussian variable.
        hidden: hidden sizes of the MLP (``()`` makes loc and raw scale linear in ``h``).
        context_dim: size of an extra context concatenated to ``h`` (0 for none;
            a context passed when it is 0 is ignored).

    Example:
        >>> import torch
        >>> q = ConditionalNormal(3, 2, hidden=(8,))
        >>> e, log_q = q.rsample(torch.zeros(4, 3))
        >>> e.shape, log_q.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """

    LOG_SCALE_BOUND: ClassVar[float] = 7.0

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64,),
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        check_size(in_features, "in_features", "ConditionalNormal", minimum=0)
        check_size(out_features, "out_features", "ConditionalNormal")
        check_size(context_dim, "context_dim", "ConditionalNormal", minimum=0)
        if in_features + context_dim == 0:
            raise ValueError("ConditionalNormal: expected in_features + context_dim >= 1, got 0")
        self.in_features = in_features
        self.out_features = out_features
        self.context_dim = context_dim
        self.net = MLP(in_features + context_dim, 2 * out_features, tuple(hidden), zero_last=True)

    def _inputs(self, h: Tensor, context: Tensor | None) -> Tensor:
        if self.context_dim == 0:
            return h
        if context is None:
            raise ValueError(f"expected a context of size {self.context_dim}, got None")
        check_event_shape(context, (self.context_dim,), "context")
        check_finite(context, "context")
        batch = torch.broadcast_shapes(h.shape[:-1], context.shape[:-1])
        h = h.expand(batch + h.shape[-1:])
        return torch.cat([h, context.to(h.dtype).expand(batch + context.shape[-1:])], dim=-1)

    def params(self, h: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(loc, log_scale)``, each of shape ``batch_shape + (out_features,)``."""
        loc, raw = self.net(self._inputs(h, context)).chunk(2, dim=-1)
        bound = self.LOG_SCALE_BOUND
        return loc, bound * torch.tanh(raw / bound)

    @staticmethod
    def _log_density(value: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
        u = (value - loc) * torch.exp(-log_scale)
        return (-0.5 * u.square() - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)

    def rsample(self, h: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A reparametrized draw and its log-density (summed over the last dimension)."""
        loc, log_scale = self.params(h, context)
        eps = torch.randn_like(loc)
        value = loc + torch.exp(log_scale) * eps
        log_q = (-0.5 * eps.square() - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
        return value, log_q

    def log_prob(self, value: Tensor, h: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``value`` (summed over the last dimension)."""
        loc, log_scale = self.params(h, context)
        return self._log_density(value, loc, log_scale)

    def extra_repr(self) -> str:
        """The input, context and output sizes."""
        return f"{self.in_features} (+{self.context_dim} context) -> {self.out_features}"


class AugmentSurjection(VectorLayer):
    r"""Append ``extra`` dimensions of learned noise: ``z = cat(x, e)``, ``e ~ q(e | x)``.

    Generative surjection (Nielsen et al. 2020, "augmentation", also Huang et al.
    2020): the generative direction ``decode`` drops the last ``extra`` latent
    coordinates, ``x = z[..., :dim]``, deterministically. The density direction
    ``encode`` draws ``e`` from a learned conditional Gaussian
    ``q(e | x [, context])`` (reparametrized) and gives the contribution
    ``V = -log q(e | x)``, so ``log p(x) >= E_q[log p(z) - log q(e | x)]``; the gap is
    ``KL(q(e | x) || p(e | x))`` under the model. ``decode`` returns
    ``S = log q(e | x)`` of the pair. The data event ``(dim,)`` becomes the latent
    event ``(dim + extra,)``. With a flow on the larger latent, augmentation lets
    the flow use more dimensions than the data has (VFlow, augmented flows).

    Arguments:
        dim: data event size.
        extra: number of appended noise dimensions.
        hidden: hidden sizes of the encoder MLP of ``q(e | x)``.
        context_dim: size of a conditioning context fed to the encoder (0 for none;
            a context passed when it is 0 is ignored).

    References:
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020 (arXiv 2007.02731).
        Huang, Dinh, Courville. Augmented Normalizing Flows. arXiv 2002.07101, 2020.

    Example:
        >>> import torch
        >>> layer = AugmentSurjection(2, extra=3, hidden=(8,))
        >>> z, v = layer.encode(torch.randn(4, 2))
        >>> z.shape, v.shape
        (torch.Size([4, 5]), torch.Size([4]))
        >>> x, s = layer.decode(z)
        >>> x.shape
        torch.Size([4, 2])
    """

    stochastic_forward = True
    exact = False
    accepts_context = True

    def __init__(
        self, dim: int, extra: int, hidden: Sequence[int] = (64,), context_dim: int = 0
    ) -> None:
        self.extra = check_size(extra, "extra", "AugmentSurjection")
        super().__init__(dim, dim + self.extra)
        self.encoder = ConditionalNormal(dim, extra, hidden, context_dim)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        e, log_q = self.encoder.rsample(x, context)
        z = torch.cat([x.expand(e.shape[:-1] + x.shape[-1:]), e], dim=-1)
        return z, -log_q

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, e = z[..., : self.dim], z[..., self.dim :]
        log_q = self.encoder.log_prob(e, x, context)
        return x.expand(log_q.shape + x.shape[-1:]), log_q

    def extra_repr(self) -> str:
        """The data size, the number of appended dimensions and the context size."""
        return f"dim={self.dim}, extra={self.extra}, context_dim={self.encoder.context_dim}"
