r"""L-BFGS pieces for Pathfinder: a strong-Wolfe line search and the inverse-Hessian factors.

Everything minimizes ``f = -log p``; ``g`` is its gradient. The history keeps
the last ``m`` pairs ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` that pass the
curvature test ``s.y > eps |y|^2`` (the others are skipped, so every kept pair
keeps the BFGS matrix positive definite). Alongside, the diagonal ``alpha``
follows the recursion of Pathfinder's Algorithm 3 (Gilbert and Lemarechal's
diagonal update), and the inverse Hessian is the compact BFGS form started from
``diag(alpha)`` (Byrd, Nocedal and Schnabel 1994):

.. math::
    H = A + \beta \gamma \beta^T,\quad \beta = [A Y,\ S],\quad
    \gamma = \begin{bmatrix} 0 & -R^{-1} \\ -R^{-T} & R^{-T}(D + Y^T A Y) R^{-1} \end{bmatrix},

with ``A = diag(alpha)``, ``R`` the upper triangle of ``S^T Y`` and ``D`` its
diagonal. :meth:`LBFGSHistory.factors` returns ``(alpha, beta, gamma)``: ``O(d m)``
numbers, never a ``d x d`` matrix (Zhang et al. 2022, section 2 and Algorithm 4).

The line search is a generator (:func:`wolfe_search`) that yields trial points
and receives their values and gradients, so that a driver can evaluate the trial
points of several paths as one batch; :func:`strong_wolfe` runs it on a callable.
"""

from __future__ import annotations

__all__ = ["LBFGSHistory", "LineSearchResult", "ValueAndGrad", "strong_wolfe", "wolfe_search"]

import math
from collections.abc import Callable, Generator
from typing import NamedTuple

import torch
from torch import Tensor

ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``x (d,) -> (f, g)``: a float64 scalar (``inf`` when not finite) and its gradient ``(d,)``."""

Search = Generator[Tensor, tuple[Tensor, Tensor], "LineSearchResult | None"]


class LineSearchResult(NamedTuple):
    """An accepted step of the line search: the step length, the point, its value and gradient."""

    step: float
    x: Tensor
    f: Tensor
    g: Tensor
    num_evals: int


def _finite(f: Tensor, g: Tensor) -> bool:
    return bool(torch.isfinite(f)) and bool(torch.isfinite(g).all())


def wolfe_search(
    x: Tensor,
    f0: Tensor,
    g0: Tensor,
    direction: Tensor,
    step: float = 1.0,
    *,
    max_evals: int = 25,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> Search:
    """The strong-Wolfe line search as a generator (see :func:`strong_wolfe`).

    It yields each trial point ``(d,)`` and must be sent its ``(f, g)``; it returns
    (as ``StopIteration.value``) the accepted :class:`LineSearchResult` or ``None``.
    """
    d0 = float(g0 @ direction)
    if not d0 < 0:
        return None
    f0v = float(f0)
    evals = 0
    best: LineSearchResult | None = None

    def trial(a: float) -> Generator[Tensor, tuple[Tensor, Tensor], tuple]:
        nonlocal evals, best
        evals += 1
        xa = x + a * direction
        fa, ga = yield xa
        if not _finite(fa, ga):
            return math.inf, math.nan, xa, fa, ga
        fv = float(fa)
        if fv <= f0v + c1 * a * d0 and (best is None or fv < float(best.f)):
            best = LineSearchResult(a, xa, fa, ga, 0)
        return fv, float(ga @ direction), xa, fa, ga

    def fallback() -> LineSearchResult | None:
        return None if best is None else LineSearchResult(best.step, best.x, best.f, best.g, evals)

    def zoom(lo: float, f_lo: float, d_lo: float, hi: float, f_hi: float) -> Search:
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
            fa, da, xa, fa_t, ga = yield from trial(a)
            if not math.isfinite(fa) or fa > f0v + c1 * a * d0 or fa >= f_lo:
                hi, f_hi = a, fa
                continue
            if abs(da) <= -c2 * d0:
                return LineSearchResult(a, xa, fa_t, ga, evals)
            if da * (hi - lo) >= 0:
                hi, f_hi = lo, f_lo
            lo, f_lo, d_lo = a, fa, da
        return fallback()

    a_prev, f_prev, d_prev = 0.0, f0v, d0
    a = step
    for i in range(max_evals):
        fa, da, xa, fa_t, ga = yield from trial(a)
        if not math.isfinite(fa) or fa > f0v + c1 * a * d0 or (i > 0 and fa >= f_prev):
            return (yield from zoom(a_prev, f_prev, d_prev, a, fa))
        if abs(da) <= -c2 * d0:
            return LineSearchResult(a, xa, fa_t, ga, evals)
        if da >= 0:
            return (yield from zoom(a, fa, da, a_prev, f_prev))
        a_prev, f_prev, d_prev = a, fa, da
        a = 2.0 * a
        if evals >= max_evals:
            break
    return fallback()


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

    Example:
        >>> import torch
        >>> fg = lambda x: (0.5 * (x * x).sum(), x)
        >>> x = torch.tensor([2.0, -1.0], dtype=torch.float64)
        >>> res, evals = strong_wolfe(fg, x, *fg(x), -x)
        >>> res.x.tolist(), evals
        ([0.0, 0.0], 1)
    """
    search = wolfe_search(x, f0, g0, direction, step, max_evals=max_evals, c1=c1, c2=c2)
    evals = 0
    try:
        point = next(search)
        while True:
            evals += 1
            point = search.send(fg(point))
    except StopIteration as stop:
        return stop.value, evals


class LBFGSHistory:
    """The kept ``(s, y)`` pairs, the diagonal ``alpha`` and the inverse-Hessian factors.

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

    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(alpha (d,), beta (d, 2k), gamma (2k, 2k))``: ``H = diag(alpha) + beta gamma beta^T``.

        ``k`` is the number of kept pairs (``beta`` has no columns when there are none).

        Example:
            >>> import torch
            >>> h = LBFGSHistory(torch.zeros(3, dtype=torch.float64))
            >>> s = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
            >>> h.update(s, 4.0 * s)
            True
            >>> alpha, beta, gamma = h.factors()
            >>> H = torch.diag(alpha) + beta @ gamma @ beta.T
            >>> (H @ (4.0 * s)).tolist()  # the secant equation H y = s
            [1.0, 0.0, 0.0]
        """
        a = self.alpha
        if not self.s:
            return a, a.new_zeros(a.shape[0], 0), a.new_zeros(0, 0)
        S = torch.stack(self.s, dim=-1)  # (d, k)
        Y = torch.stack(self.y, dim=-1)
        AY = a[:, None] * Y
        sty = S.T @ Y
        R = torch.triu(sty)
        eye = torch.eye(R.shape[0], dtype=R.dtype, device=R.device)
        R_inv = torch.linalg.solve_triangular(R, eye, upper=True)
        D = torch.diag(torch.diagonal(sty))
        lower_right = R_inv.T @ (D + Y.T @ AY) @ R_inv
        zero = torch.zeros_like(R_inv)
        gamma = torch.cat([torch.cat([zero, -R_inv], 1), torch.cat([-R_inv.T, lower_right], 1)])
        return a, torch.cat([AY, S], 1), 0.5 * (gamma + gamma.T)

    def apply(self, v: Tensor) -> Tensor:
        """``H v`` for ``v (d,)`` in ``O(d m)``."""
        a, beta, gamma = self.factors()
        return a * v + beta @ (gamma @ (beta.T @ v))

    def inverse_hessian(self) -> Tensor:
        """The dense inverse Hessian ``(d, d)`` (``diag(alpha)`` if no pairs), for small ``d``."""
        a, beta, gamma = self.factors()
        H = torch.diag(a) + beta @ gamma @ beta.T
        return 0.5 * (H + H.T)
