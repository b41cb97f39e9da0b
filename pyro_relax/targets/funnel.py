"""Neal's funnel: a hierarchical density with a scale that varies by orders of magnitude."""

from __future__ import annotations

__all__ = ["NealFunnel"]

import math
from typing import ClassVar

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int, check_positive
from pyro_relax.targets.base import Target

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class NealFunnel(Target):
    r"""Neal's funnel in ``dim`` dimensions, normalized (``log_Z = 0``).

    .. math::
        v \sim \mathcal N(0, \sigma^2), \qquad
        x_i \mid v \sim \mathcal N(0, e^{v}), \quad i = 2, \dots, d,

    with the event laid out as ``(v, x_2, ..., x_d)`` and ``sigma = scale``.
    The neck (``v`` very negative) and the mouth (``v`` large) differ in
    scale by ``exp(scale * 3)`` within three standard deviations of ``v``,
    which defeats samplers with a single step size. Exact samples by
    sampling ``v`` then ``x | v``.

    Arguments:
        dim: total dimension ``d >= 2``.
        scale: standard deviation of ``v``, > 0.

    References:
        Neal, "Slice sampling", Annals of Statistics 31(3), 2003, section 8.

    Example:
        >>> import torch
        >>> target = NealFunnel(dim=10)
        >>> target.log_prob(torch.zeros(2, 3, 10)).shape
        torch.Size([2, 3])
    """

    has_exact_samples: ClassVar[bool] = True
    scale: Tensor

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        super().__init__(check_int(dim, "dim", type(self).__name__, minimum=2))
        s = check_positive(scale, "scale", type(self).__name__)
        self.register_constants(scale=s)
        self._scale = s
        self._log_Z = 0.0

    def _log_prob(self, x: Tensor) -> Tensor:
        scale = self.scale.to(x.dtype)
        v, rest = x[..., 0], x[..., 1:]
        log_p_v = -0.5 * (v / scale) ** 2 - scale.log() - _HALF_LOG_2PI
        k = self.dim - 1
        # sum_i log N(x_i; 0, e^v) = -e^{-v} |x|^2 / 2 - k v / 2 - k log(2 pi) / 2
        log_p_x = -0.5 * (rest**2).sum(-1) * torch.exp(-v) - 0.5 * k * v - k * _HALF_LOG_2PI
        return log_p_v + log_p_x

    def _sample(self, sample_shape: torch.Size) -> Tensor:
        anchor = self._anchor
        eps = torch.randn(sample_shape + (self.dim,), device=anchor.device, dtype=anchor.dtype)
        v = eps[..., :1] * self.scale.to(anchor.dtype)
        return torch.cat([v, eps[..., 1:] * torch.exp(0.5 * v)], dim=-1)

    def extra_repr(self) -> str:
        """The dimension and the scale of ``v``, shown by ``repr``."""
        return f"dim={self.dim}, scale={self._scale:g}"
