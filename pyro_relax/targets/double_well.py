"""The two-dimensional double-well Boltzmann density of the SNF paper."""

from __future__ import annotations

__all__ = ["DoubleWell"]

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from pyro_relax.core.checks import check_finite, check_int, check_positive, check_real
from pyro_relax.targets.base import Target


def _quartic_grid(a: float, b: float, c: float, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A float64 grid covering the mass of ``exp(-u1)``, ``u1 = a/4 x^4 - b/2 x^2 + c x``.

    Returns the grid, the normalized cumulative distribution on it (trapezoid
    rule, last value exactly 1) and ``log int exp(-u1(x)) dx``.
    """

    def u1(x: np.ndarray | float) -> np.ndarray | float:
        return a / 4 * x**4 - b / 2 * x**2 + c * x

    # Cauchy's bound on the roots of u1' = a x^3 - b x + c: beyond it u1 grows with |x|.
    r = 1.0 + max(abs(b) / a, abs(c) / a)
    while True:
        x = np.linspace(-r, r, n)
        u = u1(x)
        u_min = float(u.min())
        # exp(-70) ~ 4e-31: the mass beyond +-r is far below float64 resolution.
        if min(u1(-r), u1(r)) - u_min >= 70.0:
            break
        r *= 2.0
    w = np.exp(-(u - u_min))
    cells = 0.5 * (w[1:] + w[:-1]) * np.diff(x)
    total = float(cells.sum())
    cdf = np.concatenate([[0.0], np.cumsum(cells)]) / total
    cdf[-1] = 1.0
    return x, cdf, math.log(total) - u_min


class DoubleWell(Target):
    r"""The 2-D double well ``log_prob(x) = -u(x)`` of Wu, Koehler and Noe (2020).

    .. math::
        u(x) = \frac{a}{4} x_1^4 - \frac{b}{2} x_1^2 + c\, x_1 + \frac{d}{2} x_2^2 .

    With the defaults ``a=1, b=6, c=1, d=1`` there are two wells, at
    ``x_1 = -2.53`` (deep) and ``x_1 = +2.36`` (shallow), holding about 99.2%
    and 0.8% of the mass. The density factorizes:
    ``x_2 ~ N(0, 1/d)`` and ``x_1`` has the 1-D density ``exp(-u_1(x_1)) / Z_1``
    with ``u_1`` the quartic part. ``log_Z = log Z_1 + log(2 pi / d) / 2``, with
    ``Z_1`` by the trapezoid rule on a fine float64 grid (accurate to about
    1e-12 relative). Samples: ``x_2`` exactly, ``x_1`` by inverting the
    tabulated CDF (piecewise-uniform within grid cells of width ~4e-4),
    numerically exact.

    In these parameters, the double well of the FAB paper (Midgley et al.
    2023, ``log p = -x_1^4 + 6 x_1^2 + x_1 / 2 - x_2^2 / 2``) is
    ``a=4, b=12, c=-0.5, d=1``.

    Arguments:
        a: quartic coefficient, > 0.
        b: quadratic coefficient (barrier height grows with it).
        c: linear tilt.
        d: precision of ``x_2``, > 0.
        n_grid: number of grid points for the ``x_1`` quadrature and sampler.

    References:
        Wu, Koehler and Noe, "Stochastic Normalizing Flows", NeurIPS 2020
        (arXiv 2002.06707), section 4, double-well example.

    Example:
        >>> import torch
        >>> target = DoubleWell()
        >>> target.sample((5,)).shape
        torch.Size([5, 2])
        >>> round(target.log_Z, 4)
        12.0649
    """

    has_exact_samples: ClassVar[bool] = True
    a: Tensor
    b: Tensor
    c: Tensor
    d: Tensor
    _grid: Tensor
    _cdf: Tensor

    def __init__(
        self,
        a: float = 1.0,
        b: float = 6.0,
        c: float = 1.0,
        d: float = 1.0,
        n_grid: int = 32769,
    ) -> None:
        super().__init__(2)
        name = type(self).__name__
        a_, d_ = check_positive(a, "a", name), check_positive(d, "d", name)
        b_, c_ = check_real(b, "b", name), check_real(c, "c", name)
        n = check_int(n_grid, "n_grid", name, minimum=3)
        self.register_constants(a=a_, b=b_, c=c_, d=d_)
        grid, cdf, log_z1 = _quartic_grid(a_, b_, c_, n)
        # Kept in float64 (until the module is cast) so the inverse CDF stays fine.
        self.register_buffer("_grid", torch.from_numpy(grid))
        self.register_buffer("_cdf", torch.from_numpy(cdf))
        self._params = (a_, b_, c_, d_)
        self._log_Z_x1 = log_z1
        self._log_Z = log_z1 + 0.5 * math.log(2.0 * math.pi / d_)

    @property
    def log_Z_x1(self) -> float:
        """``log int exp(-u_1(x_1)) dx_1``, the log normalizer of the ``x_1`` marginal."""
        return self._log_Z_x1

    def _u1(self, x1: Tensor) -> Tensor:
        a, b, c = (t.to(x1.dtype) for t in (self.a, self.b, self.c))
        return a / 4 * x1**4 - b / 2 * x1**2 + c * x1

    def energy(self, x: Tensor) -> Tensor:
        """The energy ``u(x) = -log_prob(x)`` of points ``batch + (2,)``, without input checks.

        For callers that have checked ``x`` already (:class:`ManyWell` applies
        it to all its pairs at once).

        Example:
            >>> import torch
            >>> float(DoubleWell().energy(torch.zeros(2)))
            0.0
        """
        x1, x2 = x[..., 0], x[..., 1]
        return self._u1(x1) + self.d.to(x.dtype) / 2 * x2**2

    def _log_prob(self, x: Tensor) -> Tensor:
        return -self.energy(x)

    def free_energy_x1(self, x1: Tensor) -> Tensor:
        """The exact free energy ``-log p(x_1)`` of the ``x_1`` marginal (in units of kT).

        Arguments:
            x1: values of ``x_1``, any shape, floating point, finite.

        Returns:
            ``u_1(x_1) + log Z_1``, same shape and dtype as ``x1``.
        """
        name = f"{type(self).__name__}.free_energy_x1"
        if not isinstance(x1, Tensor) or not x1.is_floating_point():
            got = x1.dtype if isinstance(x1, Tensor) else type(x1).__name__
            raise TypeError(f"{name}: expected a floating-point tensor, got {got}")
        check_finite(x1, name)
        return self._u1(x1) + self._log_Z_x1

    def _sample_x1(self, sample_shape: torch.Size) -> Tensor:
        grid, cdf = self._grid, self._cdf
        u = torch.rand(sample_shape, device=cdf.device, dtype=cdf.dtype)
        i = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.numel() - 1)
        c0, c1 = cdf[i - 1], cdf[i]
        t = ((u - c0) / (c1 - c0).clamp_min(torch.finfo(cdf.dtype).tiny)).clamp(0.0, 1.0)
        x0 = grid[i - 1]
        return x0 + t * (grid[i] - x0)

    def _sample(self, sample_shape: torch.Size) -> Tensor:
        anchor = self._anchor
        x1 = self._sample_x1(sample_shape).to(anchor.dtype)
        x2 = torch.randn(sample_shape, device=anchor.device, dtype=anchor.dtype)
        x2 = x2 / self.d.to(anchor.dtype).sqrt()
        return torch.stack([x1, x2], dim=-1)

    def extra_repr(self) -> str:
        """The coefficients and log normalizer, shown by ``repr``."""
        a, b, c, d = self._params
        return f"a={a:g}, b={b:g}, c={c:g}, d={d:g}, log_Z={self._log_Z:.6g}"
