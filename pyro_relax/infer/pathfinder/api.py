"""Multi-path Pathfinder for a vectorized log density, and its result.

Several paths start from jittered initial points; each keeps its best-ELBO
Gaussian. The pooled draws (``num_draws`` from each usable path) get the
importance weights ``log p(z) - log q_mix(z)`` against the equal-weight mixture
of the paths' Gaussians, are Pareto-smoothed (PSIS) and resampled with
replacement to ``num_draws`` draws. Using the mixture (not each path's own
Gaussian) lets the weights correct the share of paths that ended in each mode.

The paths run in lockstep (:func:`~pyro_relax.infer.pathfinder.path.run_paths`):
``log p`` sees a few batched calls per iteration for all paths together. The
result keeps the best Gaussian as diagonal plus low rank at large ``d``
(:attr:`PathfinderResult.gaussian`, :attr:`PathfinderResult.variance`); its dense
:attr:`PathfinderResult.scale_tril` is made only on request, after a memory check.
"""

from __future__ import annotations

__all__ = ["PathfinderResult", "pathfinder"]

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int, check_positive, check_real
from pyro_relax.diagnostics.psis import MIN_PSIS_DRAWS, psis_khat
from pyro_relax.infer.pathfinder.gaussian import (
    MEMORY_LIMIT_BYTES,
    Gaussian,
    check_memory,
    mixture_log_prob,
)
from pyro_relax.infer.pathfinder.path import PathInfo, PathOptions, default_patience, run_paths

LogDensity = Callable[[Tensor], Tensor]
_NAME = "pathfinder"


@dataclass
class PathfinderResult:
    """What :func:`pathfinder` found.

    Attributes:
        gaussian: the best single Gaussian (highest ELBO over all paths), a
            :class:`~pyro_relax.infer.pathfinder.gaussian.Gaussian` whose factor ``C``
            (dense, or diagonal plus low rank) whitens the posterior: ``loc + C u``.
        elbo: its ELBO estimate.
        path_elbos: each path's best ELBO ``(num_paths,)`` (``-inf`` for a failed path).
        paths: each path's :class:`~pyro_relax.infer.pathfinder.path.PathInfo`.
        draws: ``num_draws`` PSIS-resampled draws ``(num_draws, d)``.
        log_weights: the raw log weights of the pooled draws (before smoothing).
        khat: the PSIS Pareto k-hat of the pooled weights.
        num_evals: rows of ``log p`` evaluated (a value with its gradient counts once).
        wall_time: seconds.
        samples: for :func:`pathfinder_for_model`, ``draws`` as constrained site values
            keyed by site name, each ``(num_draws,) + site_shape``; else ``None``.
        constrain: for :func:`pathfinder_for_model`, the map from unconstrained draws
            ``(n, d)`` to such a dict; else ``None``.
    """

    gaussian: Gaussian
    elbo: float
    path_elbos: Tensor
    paths: list[PathInfo]
    draws: Tensor
    log_weights: Tensor
    khat: float
    num_evals: int
    wall_time: float
    samples: dict[str, Tensor] | None = None
    constrain: Callable[[Tensor], dict[str, Tensor]] | None = field(default=None, repr=False)

    @property
    def loc(self) -> Tensor:
        """The mean ``(d,)`` of the best single Gaussian."""
        return self.gaussian.loc

    @property
    def scale_tril(self) -> Tensor:
        """The dense Cholesky factor ``(d, d)`` of its covariance, made on demand.

        For a low-rank Gaussian this costs ``O(d^3)`` and ``O(d^2)`` memory; above
        :data:`~pyro_relax.infer.pathfinder.gaussian.MEMORY_LIMIT_BYTES` it raises a
        one-line ValueError with the size. Use :attr:`variance` or
        :attr:`gaussian` to avoid it.
        """
        return self.gaussian.scale_tril

    @property
    def variance(self) -> Tensor:
        """The marginal variances ``(d,)`` of the best single Gaussian, in ``O(d k)``."""
        return self.gaussian.variance

    def draw(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draws from the best single Gaussian and their log densities.

        Arguments:
            n: the number of draws (``>= 1``).
            generator: a random generator on ``loc``'s device (``None``: the global one).

        Returns:
            ``(z, log_q)`` of shapes ``(n, d)`` and ``(n,)``.
        """
        n = check_int(n, "n", "PathfinderResult.draw", 1)
        u = torch.randn(
            (n, self.loc.shape[-1]), generator=generator, dtype=self.loc.dtype,
            device=self.loc.device,
        )
        return self.gaussian.sample_from(u)

    def importance_weights(
        self, log_p: LogDensity, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draws from the best single Gaussian and their log weights ``log p(z) - log q(z)``.

        Arguments:
            log_p: the vectorized log density ``(n, d) -> (n,)``.
            n: the number of draws (``>= 1``).
            generator: as in :meth:`draw`.

        Returns:
            ``(z, log_w)`` of shapes ``(n, d)`` and ``(n,)``; a draw outside the support
            (``log p = -inf``) gets ``log_w = -inf``.

        Raises:
            ValueError: when ``log p`` is NaN or ``+inf`` at a draw.
        """
        if not callable(log_p):
            raise TypeError(f"importance_weights: expected a callable log_p, got {log_p!r}")
        z, log_q = self.draw(n, generator)
        with torch.no_grad():
            lp = _evaluate(log_p, z, "importance_weights")
        bad = torch.isnan(lp) | torch.isposinf(lp)
        if bool(bad.any()):
            raise ValueError(
                f"importance_weights: expected log_p to be finite or -inf at the draws, got "
                f"{int(bad.sum())} NaN/+inf values of {n}"
            )
        return z, lp - log_q


def _evaluate(log_p: LogDensity, z: Tensor, owner: str) -> Tensor:
    out = log_p(z)
    if not isinstance(out, Tensor):
        raise TypeError(f"{owner}: expected log_p to return a tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(z.shape[:-1]):
        raise ValueError(
            f"{owner}: expected log_p to map shape {tuple(z.shape)} to {tuple(z.shape[:-1])}, "
            f"got {tuple(out.shape)} (is it vectorized over leading dimensions?)"
        )
    return out.to(torch.float64)


class _Counted:
    """A float64 view of ``log_p`` that counts the rows it evaluates."""

    def __init__(self, log_p: LogDensity) -> None:
        self.log_p = log_p
        self.count = 0

    def __call__(self, z: Tensor) -> Tensor:
        self.count += int(z.shape[:-1].numel())
        return _evaluate(self.log_p, z, _NAME)


def _starts(
    init: object, num_paths: int, radius: float, generator: torch.Generator | None
) -> Tensor:
    if not isinstance(init, Tensor):
        raise TypeError(f"{_NAME}: expected init to be a torch.Tensor, got {type(init).__name__}")
    if not init.dtype.is_floating_point:
        raise TypeError(f"{_NAME}: expected a floating init, got {init.dtype}")
    x = init.detach().to(torch.float64)
    if x.dim() == 2:
        if x.shape[0] != num_paths:
            raise ValueError(
                f"{_NAME}: expected init of shape (d,) or (num_paths={num_paths}, d), "
                f"got {tuple(x.shape)}"
            )
    elif x.dim() != 1:
        raise ValueError(f"{_NAME}: expected init of shape (d,) or (num_paths, d), got "
                         f"{tuple(x.shape)}")
    if x.shape[-1] < 1:
        raise ValueError(f"{_NAME}: expected init with d >= 1, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{_NAME}: expected a finite init, got {int((~torch.isfinite(x)).sum())} "
                         f"NaN/inf entries")
    if x.dim() == 2:
        return x.clone()
    jitter = torch.rand((num_paths, x.shape[0]), generator=generator, dtype=x.dtype,
                        device=x.device)
    return x + radius * (2.0 * jitter - 1.0)


def _resampling_weights(log_w: Tensor) -> tuple[Tensor, float]:
    """PSIS-smoothed normalized weights and k-hat of the pooled draws.

    Log weights that differ by round-off only (an exact approximation) are equal
    weights with no tail (``k = -inf``): ArviZ's Pareto fit on a handful of distinct
    values returns NaN. Should the fit still fail, the raw self-normalized weights are
    used and ``k = inf`` (unreliable) is reported with a warning.
    """
    finite = log_w[torch.isfinite(log_w)]
    scale = max(1.0, float(finite.abs().max()))
    if float(finite.max() - finite.min()) <= 1e-9 * scale:
        w = torch.isfinite(log_w).to(log_w.dtype)
        return w / w.sum(), -math.inf
    smoothed, khat = psis_khat(log_w)
    probs = torch.as_tensor(smoothed, dtype=log_w.dtype, device=log_w.device).exp()
    if not bool(torch.isfinite(probs).all()) or math.isnan(float(khat)):
        warnings.warn(
            f"{_NAME}: the Pareto fit of the importance weights failed (k-hat {khat}); "
            f"resampling with the raw weights and reporting k-hat = inf",
            RuntimeWarning,
            stacklevel=3,
        )
        return torch.softmax(log_w, 0), math.inf
    return probs, float(khat)


def pathfinder(
    log_p: LogDensity,
    init: Tensor,
    num_paths: int = 4,
    num_draws: int = 1000,
    *,
    init_radius: float = 2.0,
    max_iters: int = 200,
    history_size: int = 6,
    num_elbo_draws: int = 25,
    patience: int | None = None,
    elbo_tol: float = 0.01,
    hessian: str = "auto",
    exact_hessian_max_dim: int = 100,
    ftol: float = 1e-10,
    gtol: float = 1e-8,
    memory_limit: float = MEMORY_LIMIT_BYTES,
    generator: torch.Generator | None = None,
) -> PathfinderResult:
    """Multi-path Pathfinder: L-BFGS paths, best-ELBO Gaussians, PSIS-resampled draws.

    Runs in float64 on ``init``'s device (``log_p`` gets float64 input; its output is
    cast to float64).

    Arguments:
        log_p: a vectorized log density (up to a constant): ``(..., d) -> (...)``.
        init: the initial point ``(d,)`` (each path starts at ``init + U(-r, r)^d``
            with ``r = init_radius``) or one point per path ``(num_paths, d)`` (used as is).
        num_paths: the number of paths (``>= 1``).
        num_draws: draws from each path's best Gaussian, and draws returned (``>= 1``;
            the pooled draws must number at least 25 for PSIS).
        init_radius: the jitter ``r >= 0`` of a ``(d,)`` init (Stan uses 2).
        max_iters: L-BFGS iterations per path (``>= 1``).
        history_size: the L-BFGS history size ``m`` (``>= 1``).
        num_elbo_draws: the draws ``K`` of each ELBO estimate (``>= 2``).
        patience: end a path after this many iterations without an ELBO improvement
            of more than ``elbo_tol`` (counted from the path's first finite ELBO);
            ``None``: 8 where the exact Hessian is used, 40 with L-BFGS (at d = 1000
            a patience of 8 left the mean 0.89 sd off, 40 brought it to 0.08 sd).
        elbo_tol: the smallest ELBO gain (nats) that counts as an improvement.
        hessian: ``"auto"`` (the exact autograd Hessian when ``d <= exact_hessian_max_dim``),
            ``"exact"`` or ``"lbfgs"``. The exact one is used at an iterate only where
            it is positive definite; elsewhere the L-BFGS factors (or their diagonal),
            kept as diagonal plus rank ``2 * history_size``: ``O(d m)`` memory per Gaussian
            and per draw, never a ``d x d`` matrix.
        exact_hessian_max_dim: the largest ``d`` for which ``"auto"`` uses the exact Hessian.
        ftol: L-BFGS stops when the relative change of ``log p`` falls below this.
        gtol: L-BFGS stops when the largest gradient entry falls below this.
        memory_limit: the bytes one allocation may take (the pooled draws, exact
            Hessians); above it a one-line ValueError gives the estimated size.
        generator: a random generator on ``init``'s device (``None``: the global one).

    Returns:
        A :class:`PathfinderResult`.

    Raises:
        ValueError: on a bad argument, when an allocation would exceed ``memory_limit``,
            or when no path starts at a finite point
            (``"pathfinder: no finite point found from N initial points; ..."``), or
            no path yields a Gaussian with a finite ELBO.
        TypeError: on an argument of the wrong type.

    References:
        Zhang, Carpenter, Gelman, Vehtari (2022). Pathfinder: Parallel quasi-Newton
        variational inference. JMLR 23(306). arXiv 2108.03782.

    Example:
        >>> import torch
        >>> cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
        >>> prec = torch.linalg.inv(cov)
        >>> log_p = lambda z: -0.5 * ((z @ prec) * z).sum(-1)
        >>> g = torch.Generator().manual_seed(0)
        >>> fit = pathfinder(log_p, torch.zeros(2), num_paths=2, num_draws=200, generator=g)
        >>> torch.allclose(fit.scale_tril @ fit.scale_tril.T, cov, atol=1e-6)
        True
        >>> fit.draws.shape
        torch.Size([200, 2])
    """
    if not callable(log_p):
        raise TypeError(f"{_NAME}: expected a callable log_p, got {type(log_p).__name__}")
    num_paths = check_int(num_paths, "num_paths", _NAME, 1)
    num_draws = check_int(num_draws, "num_draws", _NAME, 1)
    if num_paths * num_draws < MIN_PSIS_DRAWS:
        raise ValueError(
            f"{_NAME}: expected num_paths * num_draws >= {MIN_PSIS_DRAWS} for PSIS, got "
            f"{num_paths} * {num_draws}"
        )
    radius = check_real(init_radius, "init_radius", _NAME)
    if radius < 0:
        raise ValueError(f"{_NAME}: expected a finite init_radius >= 0, got {init_radius!r}")
    if hessian not in ("auto", "exact", "lbfgs"):
        raise ValueError(f"{_NAME}: expected hessian in ('auto', 'exact', 'lbfgs'), got "
                         f"{hessian!r}")
    options = PathOptions(
        max_iters=check_int(max_iters, "max_iters", _NAME, 1),
        history_size=check_int(history_size, "history_size", _NAME, 1),
        num_elbo_draws=check_int(num_elbo_draws, "num_elbo_draws", _NAME, 2),
        patience=check_int(default_patience(patience, init, hessian, exact_hessian_max_dim),
                           "patience", _NAME, 1),
        elbo_tol=check_real(elbo_tol, "elbo_tol", _NAME),
        exact_hessian=False,
        ftol=check_positive(ftol, "ftol", _NAME),
        gtol=check_positive(gtol, "gtol", _NAME),
    )
    max_dim = check_int(exact_hessian_max_dim, "exact_hessian_max_dim", _NAME, 0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{_NAME}: expected a torch.Generator, got {type(generator).__name__}")
    starts = _starts(init, num_paths, radius, generator)
    d = starts.shape[-1]
    use_exact = hessian == "exact" or (hessian == "auto" and d <= max_dim)
    options = PathOptions(**{**options.__dict__, "exact_hessian": use_exact})
    limit = check_positive(memory_limit, "memory_limit", _NAME)
    pooled_rows = max(num_paths * num_draws, MIN_PSIS_DRAWS)
    check_memory((pooled_rows, d), _NAME, "the pooled draws", limit, copies=4)
    check_memory((num_paths, options.num_elbo_draws, d), _NAME, "the ELBO draws", limit,
                 copies=4)
    if use_exact:
        check_memory((num_paths, d, d), _NAME, "the exact Hessians", limit, copies=4)

    t0 = time.perf_counter()
    counted = _Counted(log_p)
    paths = run_paths(counted, starts, options, generator)
    if all(p.stop == "non-finite start" for p in paths):
        raise ValueError(
            f"{_NAME}: no finite point found from {num_paths} initial points; check the "
            f"model's support / initial values"
        )
    good = [p for p in paths if p.best is not None and math.isfinite(p.elbo)]
    if not good:
        raise ValueError(
            f"{_NAME}: no path gave a Gaussian approximation with a finite ELBO "
            f"(stops: {sorted({p.stop for p in paths})}); check that log_p is finite on "
            f"a neighbourhood of its mode"
        )
    best = max(good, key=lambda p: p.elbo).best
    assert best is not None
    components = [p.best for p in good if p.best is not None]
    u = torch.randn((len(components), num_draws, d), generator=generator, dtype=starts.dtype,
                    device=starts.device)
    z = torch.cat([q.sample_from(u[i])[0] for i, q in enumerate(components)])
    del u
    if z.shape[0] < MIN_PSIS_DRAWS:  # fewer usable paths than asked: top up from the best
        extra = MIN_PSIS_DRAWS - z.shape[0]
        u = torch.randn((extra, d), generator=generator, dtype=z.dtype, device=z.device)
        z = torch.cat([z, best.sample_from(u)[0]])
    with torch.no_grad():
        lp = counted(z)
        log_w = lp - mixture_log_prob(components, z)
    bad = ~torch.isfinite(log_w)
    if bool((torch.isnan(lp) | torch.isposinf(lp)).any()):
        warnings.warn(
            f"{_NAME}: log_p was NaN or +inf at {int((torch.isnan(lp) | torch.isposinf(lp)).sum())}"
            f" of {z.shape[0]} pooled draws; they get zero weight",
            RuntimeWarning,
            stacklevel=2,
        )
    log_w = torch.where(bad, torch.full_like(log_w, -math.inf), log_w)
    if bool(bad.all()):
        raise ValueError(f"{_NAME}: log_p is not finite at any of the {z.shape[0]} pooled draws")
    probs, khat = _resampling_weights(log_w)
    idx = torch.multinomial(probs, num_draws, replacement=True, generator=generator)
    path_elbos = torch.tensor([p.elbo for p in paths], dtype=z.dtype, device=z.device)
    return PathfinderResult(
        gaussian=best,
        elbo=max(p.elbo for p in good),
        path_elbos=path_elbos,
        paths=paths,
        draws=z[idx],
        log_weights=log_w,
        khat=float(khat),
        num_evals=counted.count,
        wall_time=time.perf_counter() - t0,
    )
