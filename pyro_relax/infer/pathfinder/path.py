"""Pathfinder's paths: L-BFGS on ``-log p`` with a Gaussian approximation at every iterate.

Each path keeps the approximation with the highest ELBO estimate. It ends at
``max_iters`` iterations, when L-BFGS converges (relative change of the
objective below ``ftol`` or largest gradient entry below ``gtol``), when the
ELBO has not improved by more than ``elbo_tol`` for ``patience`` iterations
after its first finite value (a posterior with no mode, such as the centered
eight schools, climbs forever towards ``tau -> 0`` while its approximations get
worse; an iteration that still changes ``log p`` by more than ``progress_rtol``
relative does not count), or when the line search finds no finite point with sufficient decrease
(the path then keeps its last good iterate). A path whose approximations are
all unusable (far from a mode, where the local curvature is no guide) is not
ended by ``patience``: it walks on to the mode.

With the exact Hessian (low dimension) the step is Newton's, and where the
Hessian is not negative definite, the saddle-free Newton step ``|H|^{-1} g``
(:func:`~pyro_relax.infer.pathfinder.gaussian.newton_inverses`): far from a mode
under wide or flat priors (a growth curve's intercept at 240 with flat priors on
the scales), a gradient step moves the scale parameters, whose curvature is
largest, into a funnel (all group effects equal, their scale to 0) before the
intercept has moved, while the curvature-scaled step moves each direction by
its own curvature and reaches the mode.

A path is a generator that yields what it needs evaluated (a gradient at a
point, log densities at ELBO draws, an exact Hessian) and receives the answer;
:func:`run_paths` advances all paths in lockstep and evaluates each round's
requests of one kind as one batched call of ``log p``.
"""

from __future__ import annotations

__all__ = ["PathInfo", "PathOptions", "default_patience", "run_paths"]

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pyro_relax.infer.pathfinder.gaussian import (
    Gaussian,
    exact_hessians,
    gaussian_at,
    low_rank_gaussian_at,
    newton_inverses,
)
from pyro_relax.infer.pathfinder.lbfgs import LBFGSHistory, LineSearchResult, wolfe_search

LogDensity = Callable[[Tensor], Tensor]
Request = tuple[str, Tensor]
Walk = Generator[Request, Any, Any]


@dataclass(frozen=True)
class PathOptions:
    """The settings of one path (validated by :func:`~pyro_relax.infer.pathfinder.pathfinder`)."""

    max_iters: int = 200
    history_size: int = 6
    num_elbo_draws: int = 25
    patience: int = 8
    elbo_tol: float = 0.01
    progress_rtol: float = 0.1
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


def _finite(f: Tensor, g: Tensor) -> bool:
    return bool(torch.isfinite(f)) and bool(torch.isfinite(g).all())


def _search(x: Tensor, f: Tensor, g: Tensor, direction: Tensor, step: float,
            max_evals: int) -> Walk:
    search = wolfe_search(x, f, g, direction, step, max_evals=max_evals)
    try:
        point = next(search)
        while True:
            reply = yield ("grad", point)
            point = search.send(reply)
    except StopIteration as stop:
        found: LineSearchResult | None = stop.value
        return found


class _Best:
    """The best approximation so far and the patience count."""

    def __init__(self) -> None:
        self.q: Gaussian | None = None
        self.elbo, self.iter, self.since = -math.inf, 0, 0
        self.elbos: list[float] = []
        self.kinds: list[str] = []

    def record(self, q: Gaussian | None, kind: str, elbo: float, tol: float) -> None:
        self.elbos.append(elbo)
        self.kinds.append(kind if q is not None else "none")
        if math.isfinite(self.elbo) and not elbo > self.elbo + tol:
            self.since += 1
        else:
            self.since = 0
        if elbo > self.elbo:
            self.q, self.elbo, self.iter = q, elbo, len(self.elbos) - 1


def _approximate(x: Tensor, g: Tensor, history: LBFGSHistory | None, u: Tensor,
                 options: PathOptions, best: _Best) -> Walk:
    q, kind, step = None, "none", None
    if options.exact_hessian:
        neg = yield ("hessian", x)
        if neg is not None:
            cov, step = newton_inverses(neg)
            if cov is not None:
                q, kind = gaussian_at(x, -g, cov), "exact"
    if q is None and history is not None:
        alpha, beta, gamma = history.factors()
        q = low_rank_gaussian_at(x, -g, alpha, beta, gamma)
        kind = "lbfgs" if beta.shape[-1] else "diagonal"
        if q is None and beta.shape[-1]:
            q, kind = low_rank_gaussian_at(x, -g, alpha, beta[:, :0], gamma[:0, :0]), "diagonal"
    elbo = -math.inf
    if q is not None:
        z, log_q = q.sample_from(u)
        lp = yield ("value", z)
        if bool(torch.isfinite(lp).all()):  # else a draw outside the support: unusable
            value = float((lp - log_q).mean())
            elbo = value if math.isfinite(value) else -math.inf
    best.record(q, kind, elbo, options.elbo_tol)
    return step


def _walk(x0: Tensor, u: Tensor, options: PathOptions) -> Walk:
    f, g = yield ("grad", x0)
    if not _finite(f, g):
        return PathInfo(x0, None, -math.inf, 0, [], [], 0, "non-finite start", x0)
    x = x0
    history = LBFGSHistory(x, options.history_size, options.curvature_eps)
    best = _Best()
    # At the start there is no curvature pair yet: only the exact Hessian can give a Gaussian.
    H = yield from _approximate(x, g, None, u, options, best)
    stop, it = "max_iters", 0
    for it in range(1, options.max_iters + 1):  # noqa: B007 (it is reported after the loop)
        gnorm = float(g.norm())
        steepest = min(1.0, 1.0 / max(gnorm, 1e-300))
        direction, step = -g, steepest
        if H is not None:  # (saddle-free) Newton's step from the exact Hessian
            direction, step = -(H @ g), 1.0
        elif len(history):
            direction, step = -history.apply(g), 1.0
            if not float(g @ direction) < 0:
                direction, step = -g, steepest
        found = yield from _search(x, f, g, direction, step, options.max_line_search_evals)
        if found is None and step == 1.0:  # retry along the steepest descent
            found = yield from _search(x, f, g, -g, steepest, options.max_line_search_evals)
        if found is None:
            stop, it = "line search found no finite point with sufficient decrease", it - 1
            break
        history.update(found.x - x, found.g - g)
        f_old = float(f)
        x, f, g = found.x, found.f, found.g
        H = yield from _approximate(x, g, history, u, options, best)
        rel = abs(f_old - float(f)) / max(abs(f_old), abs(float(f)), 1.0)
        if rel < options.ftol:
            stop = "converged (relative change of log p below ftol)"
            break
        if float(g.abs().max()) < options.gtol:
            stop = "converged (gradient below gtol)"
            break
        if rel > options.progress_rtol:  # still climbing fast: not yet near a mode
            best.since = 0
        if best.since >= options.patience:
            stop = f"no ELBO improvement in {options.patience} iterations"
            break
    return PathInfo(x0, best.q, best.elbo, best.iter, best.elbos, best.kinds, it, stop, x)


def _value_and_grad(log_p: LogDensity, xs: Tensor) -> tuple[Tensor, Tensor]:
    """``f = -log p`` and its gradient at each row of ``xs``; ``(inf, nan)`` where not finite."""
    with torch.enable_grad():
        xr = xs.detach().clone().requires_grad_(True)
        lp = log_p(xr)
        finite = torch.isfinite(lp)
        total = torch.where(finite, lp, 0.0).sum()
        grad = None
        if total.requires_grad:  # else log p does not depend on x: a zero gradient
            (grad,) = torch.autograd.grad(total, xr, allow_unused=True)
    grad = torch.zeros_like(xs) if grad is None else grad
    f = torch.where(finite, -lp.detach(), math.inf)
    g = torch.where(finite[:, None], -grad.detach(), math.nan)
    return f, g


def run_paths(
    log_p: LogDensity,
    starts: Tensor,
    options: PathOptions,
    generator: torch.Generator | None = None,
) -> list[PathInfo]:
    """Run one path from each row of ``starts (P, d)`` (float64, finite), all in lockstep.

    Each round, the gradient requests of all paths (line-search trial points) are one
    call of ``log p`` on a ``(n, d)`` batch, their ELBO draws another, and their exact
    Hessians a third; ``log p`` must treat rows independently.

    Arguments:
        log_p: the vectorized log density ``(n, d) -> (n,)`` (float64).
        starts: the initial points ``(P, d)``.
        options: the path settings.
        generator: the random generator of the ELBO draws (``None``: the global one).

    Returns:
        One :class:`PathInfo` per start; ``best`` is ``None`` and ``stop`` says why when
        the start is not a finite point of ``log p`` with a finite gradient.

    Example:
        >>> import torch
        >>> log_p = lambda z: -0.5 * (z * z).sum(-1)
        >>> infos = run_paths(log_p, torch.ones(2, 3, dtype=torch.float64), PathOptions())
        >>> [round(i.elbo, 4) for i in infos], [i.kinds[0] for i in infos]  # log Z = 1.5 log(2 pi)
        ([2.7568, 2.7568], ['exact', 'exact'])
    """
    P, d = starts.shape
    u = torch.randn((P, options.num_elbo_draws, d), generator=generator, dtype=starts.dtype,
                    device=starts.device)
    walks = [_walk(starts[i], u[i], options) for i in range(P)]
    pending = {i: next(w) for i, w in enumerate(walks)}
    results: list[PathInfo | None] = [None] * P
    batched = [True]
    while pending:
        replies: dict[int, Any] = {}
        for kind in ("grad", "value", "hessian"):
            ids = [i for i, (k, _) in pending.items() if k == kind]
            if not ids:
                continue
            if kind == "grad":
                f, g = _value_and_grad(log_p, torch.stack([pending[i][1] for i in ids]))
                replies.update({i: (f[j], g[j]) for j, i in enumerate(ids)})
            elif kind == "value":
                zs = [pending[i][1] for i in ids]
                with torch.no_grad():
                    lp = log_p(torch.cat(zs))
                replies.update(zip(ids, lp.split([z.shape[0] for z in zs]), strict=True))
            else:
                Hs = exact_hessians(log_p, torch.stack([pending[i][1] for i in ids]),
                                           batched)
                replies.update(zip(ids, Hs, strict=True))
        for i, reply in replies.items():
            try:
                pending[i] = walks[i].send(reply)
            except StopIteration as done:
                results[i] = done.value
                del pending[i]
    return [r for r in results if r is not None]


def default_patience(patience: object, init: object, hessian: str, max_dim: object) -> object:
    """``patience`` as given, else 8 where the exact Hessian is used and 40 with L-BFGS.

    Example:
        >>> default_patience(None, torch.zeros(1000), "auto", 100)
        40
    """
    if patience is not None:
        return patience
    d = init.shape[-1] if isinstance(init, Tensor) and init.dim() > 0 else 1
    exact = hessian == "exact" or (hessian == "auto" and isinstance(max_dim, int) and d <= max_dim)
    return 8 if exact else 40
