"""Capture-recapture with individual heterogeneity (posteriordb ``Mh_data-Mh_model``).

The Stan model (Kéry and Schaub 2012; M = 385 individuals of which 300 are
data augmentation, T = 5 occasions)::

    parameters {
      real<lower=0, upper=1> omega; real<lower=0, upper=1> mean_p;
      real<lower=0, upper=5> sigma; vector[M] eps_raw;
    }
    transformed parameters { vector[M] eps = logit(mean_p) + sigma * eps_raw; }
    model {
      eps_raw ~ normal(0, 1);   // omega, mean_p, sigma: uniform, implicitly
      for (i in 1:M)
        if (y[i] > 0) target += bernoulli_lpmf(1 | omega) + binomial_logit_lpmf(y[i] | T, eps[i]);
        else target += log_sum_exp(bernoulli_lpmf(1 | omega) + binomial_logit_lpmf(0 | T, eps[i]),
                                   bernoulli_lpmf(0 | omega));
    }

``omega``, ``mean_p`` and ``sigma`` are ``Uniform`` sites on their declared
intervals. The per-individual terms (the marginalized inclusion indicator
``z[i]`` included) form one ``pyro.factor``, computed on the log scale
(``log1m_inv_logit(eps) = -softplus(eps)``). Unconstrained dimension:
3 + 385 = 388.
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.nn.functional import softplus

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import check_domain, draw_scalar, draw_vector, sample_site, to_numpy, vector_names

NAME = "Mh_data-Mh_model"
LATENT_DIM = 388
DATA = load_data(NAME)
M = int(DATA["M"])
T = int(DATA["T"])
BOUNDS = {"omega": 1.0, "mean_p": 1.0, "sigma": 5.0}


def log_likelihood(y: Tensor, omega: Tensor, eps: Tensor) -> Tensor:
    """Stan's per-individual ``target`` terms summed over individuals, ``(...)``.

    Arguments:
        y: ``(M,)`` captures out of ``T`` (float).
        omega: inclusion probability, batch shape ``(...)``.
        eps: ``(..., M)`` logit detection probabilities.
    """
    log_omega = omega.log()[..., None]
    log_binom = torch.lgamma(y.new_tensor(T + 1.0)) - torch.lgamma(y + 1) - torch.lgamma(T - y + 1)
    # binomial_logit_lpmf(y | T, eps) = log C(T, y) + y eps - T softplus(eps)
    seen = log_omega + log_binom + y * eps - T * softplus(eps)
    never = torch.logaddexp(log_omega - T * softplus(eps), torch.log1p(-omega)[..., None])
    return torch.where(y > 0, seen, never).sum(-1)


def model() -> None:
    """The Mh capture-recapture model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["eps_raw"]["value"].shape
        torch.Size([385])
    """
    y = data_tensors(NAME)["y"]
    zero = y.new_zeros(())
    bound = {k: pyro.sample(k, dist.Uniform(zero, v)) for k, v in BOUNDS.items()}
    eps_raw = pyro.sample("eps_raw", dist.Normal(y.new_zeros(M), 1.0).to_event(1))
    mean_p = bound["mean_p"]
    eps = torch.logit(mean_p)[..., None] + bound["sigma"][..., None] * eps_raw
    pyro.factor("y", log_likelihood(y, bound["omega"], eps))


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples to ``omega, mean_p, sigma, eps_raw[1..385]``.

    Arguments:
        samples: the latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    out = {k: to_numpy(sample_site(samples, k, ())) for k in BOUNDS}
    out.update(vector_names(sample_site(samples, "eps_raw", (M,)), "eps_raw"))
    return out


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``omega``, ``mean_p``, ``sigma``, ``eps_raw``.
    """
    out = {}
    for k, upper in BOUNDS.items():
        out[k] = draw_scalar(draw, k)
        check_domain(out[k], k, 0.0, upper)
    out["eps_raw"] = draw_vector(draw, "eps_raw", M)
    return out
