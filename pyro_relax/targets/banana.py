"""The banana: a Gaussian bent along a parabola (Haario et al.)."""

from __future__ import annotations

__all__ = ["Banana"]

import math
from typing import ClassVar

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int, check_positive, check_real
from pyro_relax.targets.base import Target

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Banana(Target):
    r"""A twisted Gaussian, normalized (``log_Z = 0``).

    .. math::
        x_1 \sim \mathcal N(0, \sigma_1^2), \qquad
        x_2 \mid x_1 \sim \mathcal N\big(b\,(x_1^2 - \sigma_1^2),\ \sigma_2^2\big), \qquad
        x_3, \dots, x_d \sim \mathcal N(0, 1)

    with defaults ``sigma1 = 2, sigma2 = 1, b = 0.5``. The map
    ``x_2 -> x_2 - b (x_1^2 - sigma1^2)`` has unit Jacobian, so the density is
    normalized. Moments: all means are 0, ``Var x_1 = sigma1^2``,
    ``Var x_2 = sigma2^2 + 2 b^2 sigma1^4``, ``Cov(x_1, x_2) = 0`` but
    ``E[x_1^2 x_2] = 2 b sigma1^4``. Exact samples.

    Arguments:
        dim: total dimension ``>= 2``; coordinates beyond the second are
            independent standard normals.
        sigma1: standard deviation of ``x_1``, > 0.
        sigma2: conditional standard deviation of ``x_2``, > 0.
        b: curvature of the banana (0 gives a Gaussian).

    References:
        Haario, Saksman and Tamminen, "Adaptive proposal distribution for
        random walk Metropolis algorithm", Computational Statistics 14, 1999.

    Example:
        >>> import torch
        >>> target = Banana()
        >>> target.normalized_log_prob(torch.zeros(2)).shape
        torch.Size([])
    """

    has_exact_samples: ClassVar[bool] = True
    sigma1: Tensor
    sigma2: Tensor
    b: Tensor

    def __init__(
        self, dim: int = 2, sigma1: float = 2.0, sigma2: float = 1.0, b: float = 0.5
    ) -> None:
        name = type(self).__name__
        super().__init__(check_int(dim, "dim", name, minimum=2))
        s1, s2 = check_positive(sigma1, "sigma1", name), check_positive(sigma2, "sigma2", name)
        b_ = check_real(b, "b", name)
        self.register_constants(sigma1=s1, sigma2=s2, b=b_)
        self._params = (s1, s2, b_)
        self._log_Z = 0.0

    def _log_prob(self, x: Tensor) -> Tensor:
        s1, s2, b = (t.to(x.dtype) for t in (self.sigma1, self.sigma2, self.b))
        x1, x2, rest = x[..., 0], x[..., 1], x[..., 2:]
        y2 = x2 - b * (x1**2 - s1**2)
        out = -0.5 * (x1 / s1) ** 2 - s1.log() - 0.5 * (y2 / s2) ** 2 - s2.log()
        out = out - 2 * _HALF_LOG_2PI
        return out - 0.5 * (rest**2).sum(-1) - (self.dim - 2) * _HALF_LOG_2PI

    def _sample(self, sample_shape: torch.Size) -> Tensor:
        anchor = self._anchor
        eps = torch.randn(sample_shape + (self.dim,), device=anchor.device, dtype=anchor.dtype)
        s1, s2, b = (t.to(anchor.dtype) for t in (self.sigma1, self.sigma2, self.b))
        x1 = s1 * eps[..., :1]
        x2 = b * (x1**2 - s1**2) + s2 * eps[..., 1:2]
        return torch.cat([x1, x2, eps[..., 2:]], dim=-1)

    def extra_repr(self) -> str:
        """The constructor arguments, shown by ``repr``."""
        s1, s2, b = self._params
        return f"dim={self.dim}, sigma1={s1:g}, sigma2={s2:g}, b={b:g}"
