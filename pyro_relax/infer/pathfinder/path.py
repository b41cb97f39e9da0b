"""One Pathfinder path: L-BFGS on ``-log p`` with a Gaussian approximation at every iterate.

The path keeps the approximation with the highest ELBO estimate. It ends at
``max_iters`` iterations, when L-BFGS converges (relative change of the
objective below ``ftol`` or largest gradient entry below ``gtol``), when the
ELBO has not improved for ``patience`` iterations (a posterior with no mode,
such as the centered eight schools, climbs forever towards ``tau -> 0`` while
its approximations get worse), or when the line search finds no finite point
with sufficient decrease (the path then keeps its last good iterate).
"""

from __future__ import annotations

__all__ = ["PathInfo", "PathOptions", "run_path"]

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from pyro_relax.infer.pathfinder.gaussian import Gaussian, exact_inverse_hessian, gaussian_at
from pyro_relax.infer.pathfinder.lbfgs import LBFGSHistory, strong_wolfe

LogDensity = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PathOptions:
    """The settings of one path (validated by :func:`~pyro_relax.infer.pathfinder.pathfinder`)."""

    max_iters: int = 200
    history_size: int = 6
    num_elbo_draws: int = 30
    patience: int = 20
    exact_hessian: bool = True
    ftol: float = 1e-10
    gtol: float = 1e-8
    max_line_search_evals: int = 25
    curvature_eps: float = 2.2e-16


class PathInfo(NamedTuple):
    """What one path found.

    Attributes:
        start: the initial point ``(d,)``.
        best: the best-ELBO Gaussian, or ``None`` if no iterate gave one.
        elbo: its ELBO estimate (``-inf`` when ``best`` is ``None``).
        best_iter: the iterate it came from (0 is the start).
        elbos: the ELBO estimate at each iterate (``-inf`` where there was none).
        kinds: at each iterate, ``"exact"``, ``"lbfgs"``, ``"diagonal"`` or ``"none"``.
        num_iters: L-BFGS iterations run.
        stop: why the path ended.
        final: the last iterate ``(d,)``.
    """

    start: Tensor
    best: Gaussian | None
    elbo: float
    best_iter: int
    elbos: list[float]
    kinds: list[str]
    num_iters: int
    stop: str
    final: Tensor


def _value_and_grad(log_p: LogDensity) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    def fg(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            xr = x.detach().clone().requires_grad_(True)
            lp = log_p(xr[None])[0]
            if not bool(torch.isfinite(lp)):
                return x.new_tensor(math.inf), torch.full_like(x, math.nan)
            (grad,) = torch.autograd.grad(lp, xr)
        return -lp.detach(), -grad.detach()

    return fg


def _elbo(log_p: LogDensity, q: Gaussian, u: Tensor) -> float:
    z, log_q = q.sample_from(u)
    with torch.no_grad():
        lp = log_p(z)
    if not bool(torch.isfinite(lp).all()):
        return -math.inf  # a draw outside the support (or a NaN density): unusable
    value = float((lp - log_q).mean())
    return value if math.isfinite(value) else -math.inf


def run_path(
    log_p: LogDensity,
    x0: Tensor,
    options: PathOptions,
    generator: torch.Generator | None = None,
) -> PathInfo:
    """Run one path from ``x0`` (float64, finite) and return its best approximation.

    Arguments:
        log_p: the vectorized log density ``(n, d) -> (n,)`` (float64).
        x0: the initial point ``(d,)``.
        options: the path settings.
        generator: the random generator of the ELBO draws (``None``: the global one).

    Returns:
        The :class:`PathInfo`; ``best`` is ``None`` and ``stop`` says why when the
        start is not a finite point of ``log p`` with a finite gradient.
    """
    fg = _value_and_grad(log_p)
    x = x0
    f, g = fg(x)
    if not (bool(torch.isfinite(f)) and bool(torch.isfinite(g).all())):
        return PathInfo(x0, None, -math.inf, 0, [], [], 0, "non-finite start", x0)
    d = x.shape[-1]
    u = torch.randn(
        (options.num_elbo_draws, d), generator=generator, dtype=x.dtype, device=x.device
    )
    history = LBFGSHistory(x, options.history_size, options.curvature_eps)
    batched = [True]
    best: Gaussian | None = None
    best_elbo, best_iter, since_best = -math.inf, 0, 0
    elbos: list[float] = []
    kinds: list[str] = []

    def approximate(x: Tensor, g: Tensor, H: Tensor | None) -> None:
        nonlocal best, best_elbo, best_iter, since_best
        q, kind = None, "none"
        if options.exact_hessian:
            H_exact, _ = exact_inverse_hessian(log_p, x, batched)
            if H_exact is not None:
                q, kind = gaussian_at(x, -g, H_exact), "exact"
        if q is None and H is not None:
            q, kind = gaussian_at(x, -g, H), "lbfgs"
        if q is None and H is not None:
            q, kind = gaussian_at(x, -g, torch.diag(history.alpha)), "diagonal"
        if q is None:
            kind = "none"
        elbo = _elbo(log_p, q, u) if q is not None else -math.inf
        elbos.append(elbo)
        kinds.append(kind)
        if elbo > best_elbo:
            best, best_elbo, best_iter, since_best = q, elbo, len(elbos) - 1, 0
        else:
            since_best += 1

    # At the start there is no curvature pair yet: only the exact Hessian can give a Gaussian.
    approximate(x, g, None)
    H = None
    stop, it = "max_iters", 0
    for it in range(1, options.max_iters + 1):  # noqa: B007 (it is reported after the loop)
        gnorm = float(g.norm())
        if H is not None:
            direction, step = -(H @ g), 1.0
            if not float(g @ direction) < 0:
                direction, step = -g, min(1.0, 1.0 / max(gnorm, 1e-300))
        else:
            direction, step = -g, min(1.0, 1.0 / max(gnorm, 1e-300))
        found, _ = strong_wolfe(
            fg, x, f, g, direction, step, max_evals=options.max_line_search_evals
        )
        if found is None and H is not None:  # retry once along the steepest descent
            direction = -g
            found, _ = strong_wolfe(
                fg, x, f, g, direction, min(1.0, 1.0 / max(gnorm, 1e-300)),
                max_evals=options.max_line_search_evals,
            )
        if found is None:
            stop, it = "line search found no finite point with sufficient decrease", it - 1
            break
        history.update(found.x - x, found.g - g)
        f_old = float(f)
        x, f, g = found.x, found.f, found.g
        H = history.inverse_hessian() if len(history) else None
        approximate(x, g, H if H is not None else torch.diag(history.alpha))
        rel = abs(f_old - float(f)) / max(abs(f_old), abs(float(f)), 1.0)
        if rel < options.ftol:
            stop = "converged (relative change of log p below ftol)"
            break
        if float(g.abs().max()) < options.gtol:
            stop = "converged (gradient below gtol)"
            break
        if since_best >= options.patience:
            stop = f"no ELBO improvement in {options.patience} iterations"
            break
    return PathInfo(x0, best, best_elbo, best_iter, elbos, kinds, it, stop, x)
