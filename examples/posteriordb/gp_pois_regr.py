"""Latent Gaussian process Poisson regression (posteriordb ``gp_pois_regr-gp_pois_regr``).

The Stan model::

    parameters { real<lower=0> rho; real<lower=0> alpha; vector[N] f_tilde; }
    transformed parameters {
      matrix[N, N] cov = cov_exp_quad(x, alpha, rho) + diag_matrix(rep_vector(1e-10, N));
      vector[N] f = cholesky_decompose(cov) * f_tilde;
    }
    model {
      rho ~ gamma(25, 4);
      alpha ~ normal(0, 2);
      f_tilde ~ normal(0, 1);
      k ~ poisson_log(f);
    }

with ``cov_exp_quad(x, alpha, rho)[i, j] = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2))``.
``alpha ~ HalfNormal(2)`` differs from Stan's ``normal(0, 2)`` on ``alpha > 0``
by the constant ``log 2``.

Precision: with the jitter 1e-10 the kernel matrix has condition numbers up to
about 2e11 over the reference posterior, beyond float32 (a float32 Cholesky
fails), so the kernel, its Cholesky factor and ``f`` are always computed in
float64 and ``f`` is cast back to the working dtype. Where the Cholesky
factorization fails (far outside the posterior), ``f`` is NaN, which HMC
treats as a divergence instead of raising.
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import check_domain, draw_scalar, draw_vector, sample_site, to_numpy, vector_names

NAME = "gp_pois_regr-gp_pois_regr"
LATENT_DIM = 13
DATA = load_data(NAME)
N = int(DATA["N"])
JITTER = 1e-10


def _cholesky(x: Tensor, alpha: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 Cholesky factor of the jittered SE kernel and a success mask."""
    x = x.to(torch.float64)
    alpha, rho = alpha.to(torch.float64), rho.to(torch.float64)
    sq = (x[:, None] - x[None, :]) ** 2
    cov = alpha[..., None, None] ** 2 * torch.exp(-sq / (2 * rho[..., None, None] ** 2))
    cov = cov + JITTER * torch.eye(N, dtype=torch.float64, device=x.device)
    chol, info = torch.linalg.cholesky_ex(cov)
    return chol, info == 0


def _latent_f(x: Tensor, alpha: Tensor, rho: Tensor, f_tilde: Tensor) -> Tensor:
    chol, ok = _cholesky(x, alpha, rho)
    f = (chol @ f_tilde.to(torch.float64)[..., None])[..., 0]
    f = torch.where(ok[..., None], f, torch.full_like(f, float("nan")))
    return f.to(f_tilde.dtype)


def model() -> None:
    """The latent GP Poisson regression (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["f"]["value"].shape
        torch.Size([11])
    """
    data = data_tensors(NAME)
    x, k = data["x"], data["k"]
    rho = pyro.sample("rho", dist.Gamma(x.new_full((), 25.0), 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(x.new_full((), 2.0)))
    f_tilde = pyro.sample("f_tilde", dist.Normal(x.new_zeros(N), 1.0).to_event(1))
    f = pyro.deterministic("f", _latent_f(x, alpha, rho, f_tilde), 1)
    pyro.sample("k", dist.Poisson(f.exp()).to_event(1), obs=k)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``rho``, ``alpha``, ``f_tilde`` to ``rho, alpha, f[1..N]``.

    Arguments:
        samples: the three latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    rho = sample_site(samples, "rho", ())
    alpha = sample_site(samples, "alpha", ())
    f_tilde = sample_site(samples, "f_tilde", (N,))
    x = torch.as_tensor(DATA["x"], dtype=torch.float64, device=f_tilde.device)
    f = _latent_f(x, alpha, rho, f_tilde.to(torch.float64))
    return {"rho": to_numpy(rho), "alpha": to_numpy(alpha), **vector_names(f, "f")}


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw: ``f_tilde = L^{-1} f`` (in float64).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``rho``, ``alpha`` and ``f_tilde``.
    """
    rho = draw_scalar(draw, "rho")
    alpha = draw_scalar(draw, "alpha")
    check_domain(rho, "rho", 0.0, None)
    check_domain(alpha, "alpha", 0.0, None)
    f = draw_vector(draw, "f", N).to(torch.float64)
    x = torch.as_tensor(DATA["x"], dtype=torch.float64, device=f.device)
    chol, ok = _cholesky(x, alpha, rho)
    if not bool(ok.all()):
        raise ValueError("site_values_from_reference: the kernel matrix is not positive definite")
    chol = chol.expand(f.shape[:-1] + chol.shape[-2:])
    f_tilde = torch.linalg.solve_triangular(chol, f[..., None], upper=False)[..., 0]
    return {"rho": rho, "alpha": alpha, "f_tilde": f_tilde.to(rho.dtype)}
