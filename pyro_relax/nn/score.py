"""Score networks: any ``nn.Module`` taking ``(x, t)``; a small MLP with a time embedding."""

from __future__ import annotations

__all__ = ["ScoreMLP", "TimeEmbedding"]

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_int, check_positive_int
from pyro_relax.nn.mlp import MLP


class TimeEmbedding(nn.Module):
    r"""Sinusoidal features of a time ``t in [0, 1]``.

    ``[sin(w_k s t), cos(w_k s t)]`` with ``w_k = max_period^(-k / half)`` and
    ``s = scale``, the embedding of the transformer and of DDPM, applied to
    ``scale * t`` so that times in ``[0, 1]`` spread over the frequencies.

    Arguments:
        features: the (even) number of output features.
        scale: the factor on ``t`` (1000 matches DDPM's integer steps).
        max_period: the longest period.

    Example:
        >>> import torch
        >>> TimeEmbedding(8)(torch.rand(5)).shape
        torch.Size([5, 8])
    """

    def __init__(
        self, features: int = 32, scale: float = 1000.0, max_period: float = 10000.0
    ) -> None:
        super().__init__()
        check_int(features, "features", "TimeEmbedding", minimum=2)
        if features % 2:
            raise ValueError(f"TimeEmbedding: expected an even int features >= 2, got {features!r}")
        self.features, self.scale, self.max_period = features, float(scale), float(max_period)

    def forward(self, t: Tensor) -> Tensor:
        """Embed ``t`` of any shape into ``t.shape + (features,)``."""
        half = self.features // 2
        k = torch.arange(half, device=t.device, dtype=t.dtype)
        freqs = torch.exp(-math.log(self.max_period) * k / half)
        angles = (self.scale * t).unsqueeze(-1) * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ScoreMLP(nn.Module):
    r"""An MLP ``(x, t) -> R^dim`` on ``[x, embed(t)]``: the default score network.

    The interface of every score network in :mod:`pyro_relax.diffusion` is
    ``forward(x, t)`` with ``x`` of shape ``batch_shape + (dim,)`` and ``t``
    a tensor broadcastable to ``batch_shape`` (or a float), returning a tensor
    of the shape of ``x``. What the output means (a score, a noise
    prediction, a drift) is decided by the model that owns the network.

    Arguments:
        dim: the event size of ``x``.
        hidden: sizes of the hidden layers.
        embed_features: size of the time embedding.
        activation: the nonlinearity class.
        zero_last: start with a zero output (for a drift that starts at zero).
        out_features: output size (default ``dim``; ``2 * dim`` for a network
            shared by DiffFlow's score and drift).

    Example:
        >>> import torch
        >>> net = ScoreMLP(2, hidden=(16,))
        >>> net(torch.randn(4, 3, 2), torch.rand(4, 3)).shape
        torch.Size([4, 3, 2])
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (128, 128, 128),
        embed_features: int = 32,
        activation: type[nn.Module] = nn.SiLU,
        zero_last: bool = False,
        out_features: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(dim, "dim", "ScoreMLP")
        out = dim if out_features is None else out_features
        self.dim = dim
        self.embed = TimeEmbedding(embed_features)
        self.net = MLP(dim + embed_features, out, hidden, activation, zero_last=zero_last)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Evaluate the network at ``(x, t)``."""
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"ScoreMLP: expected x with last dimension {self.dim}, got {x.shape[-1]}"
            )
        if not isinstance(t, Tensor):
            t = torch.as_tensor(float(t), device=x.device, dtype=x.dtype)
        try:
            t = t.to(x.dtype).expand(x.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"ScoreMLP: expected t broadcastable to {tuple(x.shape[:-1])}, got {tuple(t.shape)}"
            ) from None
        return self.net(torch.cat([x, self.embed(t)], dim=-1))
