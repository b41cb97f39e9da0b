"""Rational-quadratic spline couplings written for the density direction (lean, one pass).

The math (:func:`rqs_forward`, :func:`rqs_inverse`) is apart from the module
(:class:`RQSCoupling`), which owns the conditioner and hands its parameters to it.
"""

from __future__ import annotations

__all__ = ["RQSCoupling", "rqs_forward", "rqs_inverse"]

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_relax.core.checks import check_positive, check_size
from pyro_relax.core.layer import VectorLayer

MIN_WIDTH = MIN_HEIGHT = MIN_DERIVATIVE = 1e-3  # Pyro's and nflows' floors


def _knots(w: Tensor, h: Tensor, d: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Knot positions ``(..., K + 1)`` in x and y and the derivatives at the knots."""
    k = w.shape[-1]
    w = MIN_WIDTH + (1.0 - MIN_WIDTH * k) * torch.softmax(w, -1)
    h = MIN_HEIGHT + (1.0 - MIN_HEIGHT * k) * torch.softmax(h, -1)
    cw = F.pad(torch.cumsum(w, -1), (1, 0)) * (2 * bound) - bound
    ch = F.pad(torch.cumsum(h, -1), (1, 0)) * (2 * bound) - bound
    # slope 1 at the two ends, where the spline meets the identity tails
    d = F.pad(MIN_DERIVATIVE + F.softplus(d), (1, 1), value=1.0)
    return cw, ch, d


def _bin(knots: Tensor, v: Tensor) -> Tensor:
    """The bin index ``(..., 1)`` of each value of ``v`` among the inner knots."""
    return torch.searchsorted(knots[..., 1:-1].contiguous(), v.unsqueeze(-1))


def _pick(t: Tensor, idx: Tensor) -> Tensor:
    return t.gather(-1, idx).squeeze(-1)


def rqs_forward(
    x: Tensor, w: Tensor, h: Tensor, d: Tensor, bound: float
) -> tuple[Tensor, Tensor]:
    """The monotone rational-quadratic spline ``y = f(x)`` and ``log f'(x)``, elementwise.

    Arguments:
        x: inputs ``(..., n)``; the identity outside ``[-bound, bound]``.
        w: unnormalized bin widths ``(..., n, K)`` (a softmax makes them positive).
        h: unnormalized bin heights ``(..., n, K)``.
        d: unnormalized inner-knot derivatives ``(..., n, K - 1)`` (through a softplus).
        bound: the half-width of the spline's box.

    Returns:
        ``(y, log_det)``, both ``(..., n)``.

    References:
        Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.

    Example:
        >>> import math, torch
        >>> x = torch.tensor([[-6.0, 0.3, 6.0]])
        >>> slope_one = math.log(math.expm1(1.0 - 1e-3))  # equal bins and unit slopes: identity
        >>> y, ld = rqs_forward(x, torch.zeros(1, 3, 4), torch.zeros(1, 3, 4),
        ...                     torch.full((1, 3, 3), slope_one), 5.0)
        >>> torch.allclose(y, x, atol=1e-5), torch.allclose(ld, torch.zeros(1, 3), atol=1e-5)
        (True, True)
    """
    cw, ch, dk = _knots(w, h, d, bound)
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    idx = _bin(cw, xc)
    x0, y0 = _pick(cw, idx), _pick(ch, idx)
    wk = _pick(cw[..., 1:], idx) - x0
    hk = _pick(ch[..., 1:], idx) - y0
    d0, d1 = _pick(dk, idx), _pick(dk[..., 1:], idx)
    s = hk / wk
    t = (xc - x0) / wk
    t1 = t * (1 - t)
    den = s + (d0 + d1 - 2 * s) * t1
    y = y0 + hk * (s * t.square() + d0 * t1) / den
    num = d1 * t.square() + 2 * s * t1 + d0 * (1 - t).square()
    log_det = 2 * torch.log(s) + torch.log(num) - 2 * torch.log(den)
    return torch.where(inside, y, x), torch.where(inside, log_det, torch.zeros_like(log_det))


def rqs_inverse(
    y: Tensor, w: Tensor, h: Tensor, d: Tensor, bound: float
) -> tuple[Tensor, Tensor]:
    """The inverse ``x = f^{-1}(y)`` of :func:`rqs_forward` and ``log (f^{-1})'(y)``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> w, h, d = (torch.randn(5, 2, k, generator=g) for k in (6, 6, 5))
        >>> x = 3 * torch.randn(5, 2, generator=g)
        >>> y, ld = rqs_forward(x, w, h, d, 5.0)
        >>> x2, ld2 = rqs_inverse(y, w, h, d, 5.0)
        >>> torch.allclose(x2, x, atol=1e-4), torch.allclose(ld2, -ld, atol=1e-4)
        (True, True)
    """
    cw, ch, dk = _knots(w, h, d, bound)
    inside = (y >= -bound) & (y <= bound)
    yc = y.clamp(-bound, bound)
    idx = _bin(ch, yc)
    x0, y0 = _pick(cw, idx), _pick(ch, idx)
    wk = _pick(cw[..., 1:], idx) - x0
    hk = _pick(ch[..., 1:], idx) - y0
    d0, d1 = _pick(dk, idx), _pick(dk[..., 1:], idx)
    s = hk / wk
    dy = yc - y0
    slope = d0 + d1 - 2 * s
    a = hk * (s - d0) + dy * slope
    b = hk * d0 - dy * slope
    c = -s * dy
    disc = (b.square() - 4 * a * c).clamp_min(0.0)
    t = (2 * c) / (-b - torch.sqrt(disc))
    x = x0 + t * wk
    t1 = t * (1 - t)
    den = s + slope * t1
    num = d1 * t.square() + 2 * s * t1 + d0 * (1 - t).square()
    log_det = -(2 * torch.log(s) + torch.log(num) - 2 * torch.log(den))
    return torch.where(inside, x, y), torch.where(inside, log_det, torch.zeros_like(log_det))


class RQSCoupling(VectorLayer):
    r"""A rational-quadratic spline coupling with ``log_prob`` in the spline's closed form.

    One half of the vector passes unchanged and conditions, through an MLP with
    two hidden layers, a monotone spline on each entry of the other half. The
    density direction (:meth:`encode`, data to latent, every training step)
    evaluates the spline (:func:`rqs_forward`); sampling (:meth:`decode`) solves
    its quadratic (:func:`rqs_inverse`). The parametrization (softmax widths
    and heights with floors 1e-3, softplus derivatives, slope 1 at the box's
    ends, identity tails) is Pyro's and nflows'; the layer is that of
    ``coupling_stack(fast_density=True)`` without the ``Transform`` machinery
    around it, in one pass.

    Arguments:
        dim: event size (at least 2).
        hidden: width of the conditioner's two hidden layers.
        count_bins: spline bins ``K`` (the conditioner gives ``3K - 1`` numbers per entry).
        bound: the spline's box ``[-bound, bound]``; the identity outside.
        swap: condition on the second half and transform the first (alternate it
            between layers in place of a permutation).

    Example:
        >>> import torch
        >>> layer = RQSCoupling(2, hidden=8)
        >>> x = torch.randn(5, 2)
        >>> z, v = layer.encode(x)
        >>> x2, s = layer.decode(z)
        >>> torch.allclose(x2, x, atol=1e-4), torch.allclose(s, -v, atol=1e-4)
        (True, True)
    """

    bijective = True

    def __init__(
        self, dim: int, hidden: int = 64, count_bins: int = 8, bound: float = 5.0,
        swap: bool = False,
    ) -> None:
        super().__init__(dim, min_dim=2)
        name = type(self).__name__
        self.hidden = check_size(hidden, "hidden", name)
        self.count_bins = check_size(count_bins, "count_bins", name, minimum=2)
        self.bound = check_positive(bound, "bound", name)
        if not isinstance(swap, bool):
            raise TypeError(f"{name}: expected a bool swap, got {type(swap).__name__}")
        self.swap = swap
        first = dim // 2
        self.n_cond, self.n_out = (dim - first, first) if swap else (first, dim - first)
        k = self.count_bins
        self.net = nn.Sequential(
            nn.Linear(self.n_cond, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, self.n_out * (3 * k - 1)),
        )

    def _split(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if self.swap:
            return t[..., self.n_out :], t[..., : self.n_out]
        return t[..., : self.n_cond], t[..., self.n_cond :]

    def _join(self, cond: Tensor, out: Tensor) -> Tensor:
        return torch.cat([out, cond] if self.swap else [cond, out], -1)

    def _params(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k = self.count_bins
        p = self.net(cond).unflatten(-1, (self.n_out, 3 * k - 1))
        return p[..., :k], p[..., k : 2 * k], p[..., 2 * k :]

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        cond, rest = self._split(x)
        z, log_det = rqs_forward(rest, *self._params(cond), self.bound)
        return self._join(cond, z), log_det.sum(-1)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        cond, rest = self._split(z)
        x, log_det = rqs_inverse(rest, *self._params(cond), self.bound)
        return self._join(cond, x), log_det.sum(-1)

    def extra_repr(self) -> str:
        """The sizes of the layer."""
        return (f"dim={self.dim}, hidden={self.hidden}, count_bins={self.count_bins}, "
                f"bound={self.bound}, swap={self.swap}")

