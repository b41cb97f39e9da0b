"""Multi-species occupancy with correlated effects (posteriordb ``butterfly-multi_occupancy``).

posteriordb's (centered) Stan model, written here (Dorazio et al. 2006;
J = 20 sites, K = 18 visits, n = 28 observed species of S = 50)::

    parameters {
      real alpha; real beta; real<lower=0, upper=1> Omega; real<lower=-1, upper=1> rho_uv;
      vector<lower=0>[2] sigma_uv; vector[S] uv1; vector[S] uv2;
    }
    model {
      logit_psi = uv1 + alpha; logit_theta = uv2 + beta;
      alpha ~ cauchy(0, 2.5); beta ~ cauchy(0, 2.5); sigma_uv ~ cauchy(0, 2.5);
      ((rho_uv + 1) / 2) ~ beta(2, 2);
      for (i in 1:S) [uv1[i], uv2[i]] ~ multi_normal(0, cov_matrix_2d(sigma_uv, rho_uv));
      Omega ~ beta(2, 2);
      for (i in 1:n) {
        1 ~ bernoulli(Omega);
        for (j in 1:J)
          if (X[i, j] > 0) target += log_inv_logit(logit_psi[i])
                                     + binomial_logit_lpmf(X[i, j] | K, logit_theta[i]);
          else target += log_sum_exp(log_inv_logit(logit_psi[i])
                                     + binomial_logit_lpmf(0 | K, logit_theta[i]),
                                     log1m_inv_logit(logit_psi[i]));
      }
      for (i in (n + 1):S)
        target += log_sum_exp(bernoulli_lpmf(0 | Omega),
                              bernoulli_lpmf(1 | Omega) + J * lp_unobserved(i));
    }

with ``lp_unobserved(i)`` the ``else`` branch above. Sites: ``rho_uv`` is a
``Uniform(-1, 1)`` site with the ``beta(2, 2)`` density of ``(rho_uv + 1) / 2``
added by ``pyro.factor`` (Stan adds no Jacobian for the linear map, a constant
anyway); ``sigma_uv ~ HalfCauchy(2.5)`` differs from Stan's truncated Cauchy by
a constant; the bivariate normal of ``(uv1[i], uv2[i])`` is written as the
marginal of ``uv1`` times the conditional of ``uv2`` given ``uv1`` (the same
density), so that the sites keep Stan's names. The likelihood, with the
marginalized occupancy and availability indicators, is one ``pyro.factor``.
Unconstrained dimension: 2 + 1 + 1 + 2 + 50 + 50 = 106.
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import check_domain, draw_scalar, draw_vector, sample_site, to_numpy, vector_names

NAME = "butterfly-multi_occupancy"
LATENT_DIM = 106
DATA = load_data(NAME)
S = int(DATA["S"])
N_OBSERVED = int(DATA["n"])
J = int(DATA["J"])
K = int(DATA["K"])


def log_likelihood(x: Tensor, omega: Tensor, logit_psi: Tensor, logit_theta: Tensor) -> Tensor:
    """Stan's likelihood terms summed over species, ``(...)``.

    Arguments:
        x: ``(n, J)`` detections out of ``K`` visits (float).
        omega: availability ``Omega``, batch shape ``(...)``.
        logit_psi: ``(..., S)`` occupancy logits ``uv1 + alpha``.
        logit_theta: ``(..., S)`` detection logits ``uv2 + beta``.
    """
    lpsi, l1mpsi = logsigmoid(logit_psi), logsigmoid(-logit_psi)
    ltheta, l1mtheta = logsigmoid(logit_theta), logsigmoid(-logit_theta)
    lp_unobserved = torch.logaddexp(lpsi + K * l1mtheta, l1mpsi)  # (..., S)
    n = N_OBSERVED
    log_binom = torch.lgamma(x.new_tensor(K + 1.0)) - torch.lgamma(x + 1) - torch.lgamma(K - x + 1)
    detected = (lpsi[..., :n, None] + log_binom + x * ltheta[..., :n, None]
                + (K - x) * l1mtheta[..., :n, None])  # (..., n, J)
    sites = torch.where(x > 0, detected, lp_unobserved[..., :n, None]).sum((-1, -2))
    observed = n * omega.log() + sites
    unseen = torch.logaddexp(
        torch.log1p(-omega)[..., None], omega.log()[..., None] + J * lp_unobserved[..., n:]
    )
    return observed + unseen.sum(-1)


def model() -> None:
    """The centered multi-species occupancy model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["uv2"]["value"].shape
        torch.Size([50])
    """
    x = data_tensors(NAME)["X"]
    zero = x.new_zeros(())
    alpha = pyro.sample("alpha", dist.Cauchy(zero, 2.5))
    beta = pyro.sample("beta", dist.Cauchy(zero, 2.5))
    omega = pyro.sample("Omega", dist.Beta(zero + 2.0, 2.0))
    rho = pyro.sample("rho_uv", dist.Uniform(zero - 1.0, 1.0))
    pyro.factor("rho_uv_prior", dist.Beta(zero + 2.0, 2.0).log_prob((rho + 1) / 2))
    sigma_uv = pyro.sample("sigma_uv", dist.HalfCauchy(x.new_full((2,), 2.5)).to_event(1))
    s1, s2 = sigma_uv[..., :1], sigma_uv[..., 1:]
    uv1 = pyro.sample("uv1", dist.Normal(zero, s1.expand(*s1.shape[:-1], S)).to_event(1))
    rho = rho[..., None]
    loc = rho * s2 / s1 * uv1
    scale = (s2 * (1 - rho**2).sqrt()).expand(loc.shape)
    uv2 = pyro.sample("uv2", dist.Normal(loc, scale).to_event(1))
    pyro.factor("X", log_likelihood(x, omega, uv1 + alpha[..., None], uv2 + beta[..., None]))


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples to ``alpha, beta, Omega, rho_uv, sigma_uv[1..2], uv1[1..50], uv2[1..50]``.

    Arguments:
        samples: the latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    out = {k: to_numpy(sample_site(samples, k, ())) for k in ("alpha", "beta", "Omega", "rho_uv")}
    out.update(vector_names(sample_site(samples, "sigma_uv", (2,)), "sigma_uv"))
    out.update(vector_names(sample_site(samples, "uv1", (S,)), "uv1"))
    out.update(vector_names(sample_site(samples, "uv2", (S,)), "uv2"))
    return out


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for the seven sites.
    """
    out = {k: draw_scalar(draw, k) for k in ("alpha", "beta", "Omega", "rho_uv")}
    check_domain(out["Omega"], "Omega", 0.0, 1.0)
    check_domain(out["rho_uv"], "rho_uv", -1.0, 1.0)
    out["sigma_uv"] = draw_vector(draw, "sigma_uv", 2)
    check_domain(out["sigma_uv"], "sigma_uv", 0.0, None)
    out["uv1"] = draw_vector(draw, "uv1", S)
    out["uv2"] = draw_vector(draw, "uv2", S)
    return out
