r"""L-BFGS pieces for Pathfinder: a strong-Wolfe line search and the inverse-Hessian factors.

Everything minimizes ``f = -log p``; ``g`` is its gradient. The history keeps
the last ``m`` pairs ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` that pass the
curvature test ``s.y > eps |y|^2`` (the others are skipped, so every kept pair
keeps the BFGS matrix positive definite). Alongside, the diagonal ``alpha``
follows the recursion of Pathfinder's Algorithm 3 (Gilbert and Lemarechal's
diagonal update), and the inverse Hessian is the compact BFGS form started from
``diag(alpha)`` (Byrd, Nocedal and Schnabel 1994):

.. math::
    H = A + [S,\ A Y]
        \begin{bmatrix} R^{-T}(D + Y^T A Y) R^{-1} & -R^{-T} \\ -R^{-1} & 0 \end{bmatrix}
        [S,\ A Y]^T,

with ``A = diag(alpha)``, ``R`` the upper triangle of ``S^T Y`` and ``D`` its
diagonal. It is formed densely (``d x d``): Pathfinder needs its Cholesky
factor anyway, and the posteriors it is meant for have ``d`` in the hundreds
at most.
"""

from __future__ import annotations

__all__ = ["LBFGSHistory", "LineSearchResult", "ValueAndGrad", "strong_wolfe"]

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``x (d,) -> (f, g)``: a float64 scalar (``inf`` when not finite) and its gradient ``(d,)``."""


class LineSearchResult(NamedTuple):
    """An accepted step of the line search: the step length, the point, its value and gradient."""

    step: float
    x: Tensor
    f: Tensor
    g: Tensor
    num_evals: int


def _finite(f: Tensor, g: Tensor) -> bool:
    return bool(torch.isfinite(f)) and bool(torch.isfinite(g).all())


def strong_wolfe(
    fg: ValueAndGrad,
    x: Tensor,
    f0: Tensor,
    g0: Tensor,
    direction: Tensor,
    step: float = 1.0,
    *,
    max_evals: int = 25,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> tuple[LineSearchResult | None, int]:
    """Find a step along ``direction`` meeting the strong Wolfe conditions.

    Bracketing then zooming (Nocedal and Wright 2006, Algorithms 3.5 and 3.6) with
    safeguarded quadratic interpolation. A trial point whose value or gradient is not
    finite counts as a step too far: the bracket shrinks towards the last good point.
    When the budget runs out, the best point with sufficient decrease (Armijo) found
    so far is accepted.

    Arguments:
        fg: the objective's value and gradient (see :data:`ValueAndGrad`).
        x: the current point ``(d,)``.
        f0: ``f(x)`` (finite).
        g0: ``grad f(x)`` (finite).
        direction: a descent direction ``(d,)`` (``g0 . direction < 0``).
        step: the first trial step length.
        max_evals: the most evaluations of ``fg``.
        c1: the sufficient-decrease constant.
        c2: the curvature constant (``c1 < c2 < 1``).

    Returns:
        ``(result, num_evals)``: ``result`` is ``None`` when no acceptable step was found.

    References:
        Nocedal and Wright (2006). Numerical Optimization, 2nd ed., section 3.5.
    """
    d0 = float(g0 @ direction)
    if not d0 < 0:
        return None, 0
    f0v = float(f0)
    evals = 0
    best: LineSearchResult | None = None

    def trial(a: float) -> tuple[float, float, Tensor, Tensor, Tensor]:
        nonlocal evals, best
        evals += 1
        xa = x + a * direction
        fa, ga = fg(xa)
        if not _finite(fa, ga):
            return math.inf, math.nan, xa, fa, ga
        fv = float(fa)
        if fv <= f0v + c1 * a * d0 and (best is None or fv < float(best.f)):
            best = LineSearchResult(a, xa, fa, ga, 0)
        return fv, float(ga @ direction), xa, fa, ga

    def done(a: float, xa: Tensor, fa: Tensor, ga: Tensor) -> tuple[LineSearchResult, int]:
        return LineSearchResult(a, xa, fa, ga, evals), evals

    def fallback() -> tuple[LineSearchResult | None, int]:
        if best is None:
            return None, evals
        return LineSearchResult(best.step, best.x, best.f, best.g, evals), evals

    def zoom(lo: float, f_lo: float, d_lo: float, hi: float, f_hi: float) -> tuple:
        while evals < max_evals:
            width = hi - lo
            if abs(width) < 1e-16 * max(1.0, abs(lo)):
                break
            a = lo + 0.5 * width  # bisection unless the quadratic fit is usable
            if math.isfinite(f_hi):
                denom = 2.0 * (f_hi - f_lo - d_lo * width)
                if denom > 0:
                    a_q = lo - d_lo * width * width / denom
                    low, high = sorted((lo + 0.1 * width, hi - 0.1 * width))
                    if low <= a_q <= high:
                        a = a_q
            fa, da, xa, fa_t, ga = trial(a)
            if not math.isfinite(fa) or fa > f0v + c1 * a * d0 or fa >= f_lo:
                hi, f_hi = a, fa
                continue
            if abs(da) <= -c2 * d0:
                return done(a, xa, fa_t, ga)
            if da * (hi - lo) >= 0:
                hi, f_hi = lo, f_lo
            lo, f_lo, d_lo = a, fa, da
        return fallback()

    a_prev, f_prev, d_prev = 0.0, f0v, d0
    a = step
    for i in range(max_evals):
        fa, da, xa, fa_t, ga = trial(a)
        if not math.isfinite(fa) or fa > f0v + c1 * a * d0 or (i > 0 and fa >= f_prev):
            return zoom(a_prev, f_prev, d_prev, a, fa)
        if abs(da) <= -c2 * d0:
            return done(a, xa, fa_t, ga)
        if da >= 0:
            return zoom(a, fa, da, a_prev, f_prev)
        a_prev, f_prev, d_prev = a, fa, da
        a = 2.0 * a
        if evals >= max_evals:
            break
    return fallback()


class LBFGSHistory:
    """The kept ``(s, y)`` pairs, the diagonal ``alpha`` and the dense inverse Hessian.

    Arguments:
        like: a tensor whose device and dtype the factors take; its last size is ``d``.
        size: the most pairs kept (the history size ``m``).
        eps: the curvature threshold: a pair is kept when ``s.y > eps |y|^2``.
    """

    def __init__(self, like: Tensor, size: int = 6, eps: float = 2.2e-16) -> None:
        d = like.shape[-1]
        self.size = size
        self.eps = eps
        self.alpha = like.new_ones(d)
        self.s: list[Tensor] = []
        self.y: list[Tensor] = []
        self.skipped = 0

    def __len__(self) -> int:
        """The number of kept ``(s, y)`` pairs."""
        return len(self.s)

    def update(self, s: Tensor, y: Tensor) -> bool:
        """Add the pair if it passes the curvature test; return whether it was kept."""
        sy = float(s @ y)
        yy = float(y @ y)
        if not (sy > self.eps * yy and math.isfinite(sy) and math.isfinite(yy)):
            self.skipped += 1
            return False
        a = self.alpha
        ay = float(y @ (a * y))
        sas = float(s @ (s / a))
        inv = ay / (sy * a) + y * y / sy - ay * (s / a) ** 2 / (sy * sas)
        new = 1.0 / inv
        if bool(torch.isfinite(new).all()) and bool((new > 0).all()):
            self.alpha = new
        self.s.append(s)
        self.y.append(y)
        if len(self.s) > self.size:
            self.s.pop(0)
            self.y.pop(0)
        return True

    def inverse_hessian(self) -> Tensor:
        """The dense compact-form BFGS inverse Hessian ``(d, d)`` (``diag(alpha)`` if no pairs)."""
        diag = torch.diag(self.alpha)
        if not self.s:
            return diag
        S = torch.stack(self.s, dim=-1)  # (d, m)
        Y = torch.stack(self.y, dim=-1)
        AY = self.alpha[:, None] * Y
        sty = S.T @ Y
        R = torch.triu(sty)
        eye = torch.eye(R.shape[0], dtype=R.dtype, device=R.device)
        R_inv = torch.linalg.solve_triangular(R, eye, upper=True)
        D = torch.diag(torch.diagonal(sty))
        top_left = R_inv.T @ (D + Y.T @ AY) @ R_inv
        H = diag + S @ top_left @ S.T - S @ R_inv.T @ AY.T - AY @ R_inv @ S.T
        return 0.5 * (H + H.T)
