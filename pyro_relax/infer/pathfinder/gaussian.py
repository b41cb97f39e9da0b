r"""Gaussian approximations along a Pathfinder path, stored as diagonal plus low rank.

At an iterate ``x`` with ``grad log p(x)`` and a positive definite
inverse-Hessian estimate ``H``, the local normal approximation is
``N(x + H grad log p(x), H)``. From the L-BFGS factors
``H = A + beta gamma beta^T`` (``A = diag(alpha)``, ``beta`` with ``2m``
columns) its square-root factor is kept in ``O(d m)`` numbers (Zhang et al.
2022, Algorithm 4): with the thin QR ``A^{-1/2} beta = Q R`` and the Cholesky
factor ``L L^T = I + R gamma R^T``,

.. math::
    C = A^{1/2} \bigl(I + Q (L - I) Q^T\bigr),\qquad C C^T = H,\qquad
    \log\lvert\det C\rvert = \tfrac12 \textstyle\sum \log \alpha + \sum \log \operatorname{diag} L,

and ``C^{-1} = (I + Q (L^{-1} - I) Q^T) A^{-1/2}``. Drawing, ``log q`` and the
marginal variances cost ``O(d m)`` per draw. In low dimension the exact autograd
Hessian gives a dense Cholesky factor instead (``basis=None``). A dense ``d x d``
matrix is formed only on request (:attr:`Gaussian.scale_tril`,
:meth:`Gaussian.covariance`), after :func:`check_memory`.
"""

from __future__ import annotations

__all__ = [
    "MEMORY_LIMIT_BYTES", "Gaussian", "check_memory", "exact_hessians", "gaussian_at",
    "low_rank_gaussian_at", "mixture_log_prob", "newton_inverses",
]

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LogDensity = Callable[[Tensor], Tensor]
_LOG_2PI = math.log(2.0 * math.pi)
MEMORY_LIMIT_BYTES = 2 * 1024**3
"""The default bound on one allocation that :func:`check_memory` allows (2 GiB)."""


def check_memory(
    shape: tuple[int, ...], owner: str, what: str, limit: float | None = None, copies: int = 1
) -> None:
    """Raise a one-line ValueError when ``copies`` float64 tensors of ``shape`` exceed ``limit``.

    Example:
        >>> check_memory((100, 100), "f", "a matrix")
        >>> check_memory((30000, 30000), "f", "a covariance")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: f: a covariance (30000 x 30000 float64) needs about 7.2 GB, above the limit...
    """
    limit = MEMORY_LIMIT_BYTES if limit is None else limit
    nbytes = 8.0 * copies * math.prod(shape)
    if nbytes > limit:
        dims = " x ".join(str(s) for s in shape)
        raise ValueError(f"{owner}: {what} ({dims} float64) needs about {nbytes / 1e9:.1f} GB, "
                         f"above the limit of {limit / 1e9:.1f} GB")


@dataclass(frozen=True)
class Gaussian:
    """A normal distribution ``N(loc, C C^T)`` over ``(d,)`` with ``C`` diagonal plus low rank.

    ``C = diag(sqrt_diag) (I + Q (L - I) Q^T)`` with ``Q = basis`` ``(d, k)``
    orthonormal and ``L = core`` ``(k, k)`` lower triangular with a positive diagonal;
    ``basis=None`` means a dense factor: ``C = core`` ``(d, d)`` (and ``sqrt_diag`` ones).

    Attributes:
        loc: the mean ``(d,)``.
        sqrt_diag: ``(d,)``, positive.
        basis: ``Q`` ``(d, k)`` or ``None``.
        core: ``L`` ``(k, k)``, or the dense factor ``(d, d)`` when ``basis`` is ``None``.

    Example:
        >>> import torch
        >>> q = Gaussian.dense(torch.zeros(2), torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        >>> q.variance.tolist(), q.rank
        ([4.0, 2.0], None)
    """

    loc: Tensor
    sqrt_diag: Tensor
    basis: Tensor | None
    core: Tensor

    @classmethod
    def dense(cls, loc: Tensor, scale_tril: Tensor) -> Gaussian:
        """``N(loc, L L^T)`` from a dense lower-triangular ``L``."""
        return cls(loc, torch.ones_like(loc), None, scale_tril)

    @property
    def dim(self) -> int:
        """``d``."""
        return self.loc.shape[-1]

    @property
    def rank(self) -> int | None:
        """``k``, the columns of the low-rank part (``None`` for a dense factor)."""
        return None if self.basis is None else self.basis.shape[-1]

    def factor_apply(self, u: Tensor) -> Tensor:
        """``C u`` for rows ``u (n, d)``."""
        if self.basis is None:
            return u @ self.core.T
        Q = self.basis
        v = u @ Q
        return self.sqrt_diag * (u + (v @ self.core.T - v) @ Q.T)

    def whiten(self, z: Tensor) -> Tensor:
        """``C^{-1} (z - loc)`` for rows ``z (n, d)`` (no ``(n, d, d)`` broadcast)."""
        x = (z - self.loc) / self.sqrt_diag
        if self.basis is None:
            return torch.linalg.solve_triangular(self.core.T, x, upper=True, left=False)
        Q = self.basis
        v = x @ Q
        w = torch.linalg.solve_triangular(self.core.T, v, upper=True, left=False)
        return x + (w - v) @ Q.T

    def log_det_factor(self) -> Tensor:
        """``log |det C|`` (half the log determinant of the covariance)."""
        return self.sqrt_diag.log().sum() + torch.diagonal(self.core).log().sum()

    def sample_from(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Map standard-normal ``u (n, d)`` to draws ``(n, d)`` and their log densities ``(n,)``."""
        return self.loc + self.factor_apply(u), self.log_prob_standard(u)

    def log_prob_standard(self, u: Tensor) -> Tensor:
        """``log q`` of the draw ``loc + C u`` from its standard-normal coordinates ``u``."""
        d = u.shape[-1]
        return -0.5 * (u * u).sum(-1) - self.log_det_factor() - 0.5 * d * _LOG_2PI

    def log_prob(self, z: Tensor) -> Tensor:
        """``log q(z)`` for ``z`` of shape ``(n, d)``."""
        return self.log_prob_standard(self.whiten(z))

    @property
    def variance(self) -> Tensor:
        """The marginal variances ``diag(C C^T)`` ``(d,)``, in ``O(d k)``."""
        if self.basis is None:
            return self.core.square().sum(-1)
        Q, L = self.basis, self.core
        inner = L @ L.T - torch.eye(L.shape[0], dtype=L.dtype, device=L.device)
        return self.sqrt_diag.square() * (1.0 + ((Q @ inner) * Q).sum(-1))

    def covariance(self, limit: float | None = None) -> Tensor:
        """The dense covariance ``(d, d)`` (checked against ``limit`` bytes first)."""
        d = self.dim
        check_memory((d, d), "Gaussian.covariance", "a dense covariance", limit, copies=3)
        eye = torch.eye(d, dtype=self.loc.dtype, device=self.loc.device)
        C = self.factor_apply(eye).T  # column j is C e_j
        return C @ C.T

    def dense_scale_tril(self, limit: float | None = None) -> Tensor:
        """The dense Cholesky factor of the covariance ``(d, d)`` (checked against ``limit``)."""
        if self.basis is None:
            return self.core
        d = self.dim
        check_memory((d, d), "Gaussian.scale_tril", "a dense Cholesky factor", limit, copies=3)
        return torch.linalg.cholesky(self.covariance(limit))

    @property
    def scale_tril(self) -> Tensor:
        """:meth:`dense_scale_tril` with the default limit (:data:`MEMORY_LIMIT_BYTES`)."""
        return self.dense_scale_tril()


def _cholesky(cov: Tensor) -> Tensor | None:
    L, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.T))
    if int(info) != 0 or not bool(torch.isfinite(L).all()):
        return None
    if not bool((torch.diagonal(L) > 0).all()):
        return None
    return L


def gaussian_at(x: Tensor, grad_log_p: Tensor, inv_hessian: Tensor) -> Gaussian | None:
    """The normal approximation ``N(x + H grad, H)`` for a dense ``H`` ``(d, d)``.

    Returns ``None`` when ``H`` is not positive definite or the mean is not finite.
    """
    L = _cholesky(inv_hessian)
    if L is None:
        return None
    loc = x + inv_hessian @ grad_log_p
    if not bool(torch.isfinite(loc).all()):
        return None
    return Gaussian.dense(loc, L)


def low_rank_gaussian_at(
    x: Tensor, grad_log_p: Tensor, alpha: Tensor, beta: Tensor, gamma: Tensor
) -> Gaussian | None:
    """``N(x + H grad, H)`` for ``H = diag(alpha) + beta gamma beta^T``, in ``O(d k^2)``.

    Arguments:
        x: the iterate ``(d,)``.
        grad_log_p: ``grad log p(x)`` ``(d,)``.
        alpha: ``(d,)``, positive.
        beta: ``(d, k)`` (``k = 0``: the diagonal approximation).
        gamma: ``(k, k)``, symmetric.

    Returns:
        The approximation, or ``None`` when ``H`` is not positive definite or not finite.
    """
    if not bool(torch.isfinite(alpha).all() and (alpha > 0).all()):
        return None
    sqrt_a = alpha.sqrt()
    Q, R = torch.linalg.qr(beta / sqrt_a[:, None], mode="reduced")
    k = Q.shape[-1]
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    L = _cholesky(eye + R @ gamma @ R.T) if k else eye
    if L is None:
        return None
    loc = x + alpha * grad_log_p + beta @ (gamma @ (beta.T @ grad_log_p))
    if not bool(torch.isfinite(loc).all() and torch.isfinite(Q).all()):
        return None
    return Gaussian(loc, sqrt_a, Q, L)


def exact_hessians(log_p: LogDensity, xs: Tensor, batched: list[bool]) -> list[Tensor | None]:
    """The negated Hessians ``-grad^2 log p(x)`` ``(d, d)`` from autograd at each row of ``xs``.

    One forward pass for all rows ``xs (P, d)`` and one batched backward pass
    (``is_grads_batched``) for the ``d`` Hessian rows of every point; operations that
    vmap cannot batch fall back to ``d`` backward passes, and ``batched[0]`` is set to
    ``False`` so later calls go straight to the loop. The log density must treat rows
    independently.

    Returns:
        One symmetrized matrix per row, or ``None`` where ``log p`` or the Hessian is not
        finite, or ``log p`` is linear.
    """
    P, d = xs.shape
    with torch.enable_grad():
        xr = xs.detach().clone().requires_grad_(True)
        lp = log_p(xr)
        finite = torch.isfinite(lp)
        total = torch.where(finite, lp, 0.0).sum()
        if not total.requires_grad:
            return [None] * P
        (grad,) = torch.autograd.grad(total, xr, create_graph=True)
        if not grad.requires_grad:  # linear log density: zero Hessian
            return [None] * P
        eye = torch.eye(d, dtype=xs.dtype, device=xs.device)
        hess = None
        if batched[0]:
            try:
                outs = eye[:, None, :].expand(d, P, d)
                (hess,) = torch.autograd.grad(grad, xr, grad_outputs=outs, is_grads_batched=True,
                                              retain_graph=True, allow_unused=True)
            except (RuntimeError, NotImplementedError):
                batched[0] = False
        if hess is None:
            rows = []
            for i in range(d):
                (row,) = torch.autograd.grad(grad[:, i].sum(), xr, retain_graph=True,
                                             allow_unused=True)
                rows.append(row if row is not None else torch.zeros_like(xs))
            hess = torch.stack(rows)  # (d, P, d)
    hess = hess.detach().permute(1, 0, 2)
    out: list[Tensor | None] = []
    for p in range(P):
        h = hess[p]
        ok = bool(finite[p]) and bool(torch.isfinite(h).all())
        out.append(-0.5 * (h + h.T) if ok else None)
    return out


def newton_inverses(neg_hessian: Tensor) -> tuple[Tensor | None, Tensor]:
    """``(H^{-1} or None, |H|^{-1})`` for a negated Hessian ``H`` ``(d, d)``.

    The first is the inverse when ``H`` is positive definite (the Gaussian's
    covariance). The second scales Newton's step: the same inverse, or, where ``H``
    has negative or zero eigenvalues, ``V diag(1 / max(|lambda|, 1e-8 max|lambda|)) V^T``
    (the saddle-free Newton step of Dauphin et al. 2014). Far from a mode, with
    curvatures that differ by orders of magnitude between a location and a scale
    parameter, it moves each direction by its own curvature where a gradient step
    would only move the steepest one.

    Example:
        >>> import torch
        >>> inv, step = newton_inverses(torch.diag(torch.tensor([4.0, -2.0])))
        >>> inv is None, step.diagonal().tolist()
        (True, [0.25, 0.5])
    """
    eye = torch.eye(neg_hessian.shape[-1], dtype=neg_hessian.dtype, device=neg_hessian.device)
    chol = _cholesky(neg_hessian)
    if chol is not None:
        inv = torch.cholesky_solve(eye, chol)
        return inv, inv
    lam, V = torch.linalg.eigh(neg_hessian)
    mags = lam.abs()
    floor = max(float(mags.max()) * 1e-8, torch.finfo(lam.dtype).tiny)
    return None, (V / mags.clamp_min(floor)) @ V.T


def mixture_log_prob(components: list[Gaussian], z: Tensor) -> Tensor:
    """``log (1/P) sum_p N(z; loc_p, cov_p)`` for draws ``z (n, d)``, shape ``(n,)``."""
    parts = torch.stack([c.log_prob(z) for c in components], dim=0)
    return torch.logsumexp(parts, dim=0) - math.log(len(components))
