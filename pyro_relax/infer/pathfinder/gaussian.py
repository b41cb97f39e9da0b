r"""Gaussian approximations along a Pathfinder path and their ELBO estimates.

At an iterate ``x`` with ``grad log p(x) = -g`` and an inverse-Hessian estimate
``H`` (positive definite), the local normal approximation is
``N(x + H grad log p(x), H)``: the Newton step's target with the curvature's
inverse as covariance. ``H`` comes from the L-BFGS factors
(:mod:`~pyro_relax.infer.pathfinder.lbfgs`) or, in low dimension, from the
exact autograd Hessian ``-grad^2 log p(x)`` when it is positive definite.
Its ELBO ``E_q[log p(z) - log q(z)]`` is estimated with ``K`` draws; the same
standard-normal draws are reused at every iterate of a path (common random
numbers), so the comparison between iterates is not blurred by fresh noise.
"""

from __future__ import annotations

__all__ = ["Gaussian", "exact_inverse_hessian", "gaussian_at", "mixture_log_prob"]

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

LogDensity = Callable[[Tensor], Tensor]
_LOG_2PI = math.log(2.0 * math.pi)


class Gaussian(NamedTuple):
    """A normal distribution ``N(loc, scale_tril scale_tril^T)`` over ``(d,)``."""

    loc: Tensor
    scale_tril: Tensor

    def sample_from(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Map standard-normal ``u (n, d)`` to draws ``(n, d)`` and their log densities ``(n,)``."""
        z = self.loc + u @ self.scale_tril.T
        return z, self.log_prob_standard(u)

    def log_prob_standard(self, u: Tensor) -> Tensor:
        """``log q`` of the draw ``loc + L u`` from its standard-normal coordinates ``u``."""
        d = u.shape[-1]
        half_logdet = torch.log(torch.diagonal(self.scale_tril)).sum()
        return -0.5 * (u * u).sum(-1) - half_logdet - 0.5 * d * _LOG_2PI

    def log_prob(self, z: Tensor) -> Tensor:
        """``log q(z)`` for ``z`` of shape ``(..., d)``."""
        diff = (z - self.loc).unsqueeze(-1)
        L = self.scale_tril.expand(diff.shape[:-2] + self.scale_tril.shape)
        u = torch.linalg.solve_triangular(L, diff, upper=False).squeeze(-1)
        return self.log_prob_standard(u)


def _cholesky(cov: Tensor) -> Tensor | None:
    L, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.T))
    if int(info) != 0 or not bool(torch.isfinite(L).all()):
        return None
    if not bool((torch.diagonal(L) > 0).all()):
        return None
    return L


def gaussian_at(x: Tensor, grad_log_p: Tensor, inv_hessian: Tensor) -> Gaussian | None:
    """The normal approximation ``N(x + H grad, H)``, or ``None`` if ``H`` is not positive definite.

    Arguments:
        x: the iterate ``(d,)``.
        grad_log_p: ``grad log p(x)`` ``(d,)``.
        inv_hessian: the inverse-Hessian estimate ``H`` ``(d, d)``.

    Returns:
        The approximation, or ``None``.
    """
    L = _cholesky(inv_hessian)
    if L is None:
        return None
    loc = x + inv_hessian @ grad_log_p
    if not bool(torch.isfinite(loc).all()):
        return None
    return Gaussian(loc, L)


def exact_inverse_hessian(
    log_p: LogDensity, x: Tensor, batched: list[bool]
) -> tuple[Tensor | None, int]:
    """``(-grad^2 log p(x))^{-1}`` from autograd when it is positive definite, else ``None``.

    The Hessian's rows are one batched backward pass (``is_grads_batched``); a model
    whose operations vmap cannot batch falls back to one backward pass per row, and
    ``batched[0]`` is set to ``False`` so later calls go straight to the loop.

    Arguments:
        log_p: the (vectorized) log density.
        x: the point ``(d,)``.
        batched: a one-element list: whether to try the batched backward pass.

    Returns:
        ``(inverse Hessian or None, number of log density evaluations used)``.
    """
    d = x.shape[-1]
    with torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        lp = log_p(xr[None])[0]
        if not bool(torch.isfinite(lp)):
            return None, 1
        (grad,) = torch.autograd.grad(lp, xr, create_graph=True)
        if not grad.requires_grad:  # linear log density: zero Hessian
            return None, 1
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        hess = None
        if batched[0]:
            try:
                (hess,) = torch.autograd.grad(
                    grad, xr, grad_outputs=eye, is_grads_batched=True, retain_graph=True,
                    allow_unused=True,
                )
            except (RuntimeError, NotImplementedError):
                batched[0] = False
        if hess is None:
            rows = []
            for i in range(d):
                (row,) = torch.autograd.grad(grad[i], xr, retain_graph=True, allow_unused=True)
                rows.append(row if row is not None else x.new_zeros(d))
            hess = torch.stack(rows)
    hess = hess.detach()
    if not bool(torch.isfinite(hess).all()):
        return None, 1
    neg = -0.5 * (hess + hess.T)
    chol = _cholesky(neg)
    if chol is None:
        return None, 1
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    return torch.cholesky_solve(eye, chol), 1


def mixture_log_prob(components: list[Gaussian], z: Tensor) -> Tensor:
    """``log (1/P) sum_p N(z; loc_p, cov_p)`` for draws ``z (n, d)``, shape ``(n,)``."""
    parts = torch.stack([c.log_prob(z) for c in components], dim=0)
    return torch.logsumexp(parts, dim=0) - math.log(len(components))
