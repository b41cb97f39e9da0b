"""GARCH(1,1) volatility model (posteriordb ``garch-garch11``).

The Stan model (all priors flat on the declared domains)::

    parameters {
      real mu; real<lower=0> alpha0; real<lower=0, upper=1> alpha1;
      real<lower=0, upper=(1 - alpha1)> beta1;
    }
    model {
      sigma[1] = sigma1;
      for (t in 2:T)
        sigma[t] = sqrt(alpha0 + alpha1 * square(y[t - 1] - mu) + beta1 * square(sigma[t - 1]));
      y ~ normal(mu, sigma);
    }

Parameterization of the nested constraint: ``alpha1 > 0``, ``beta1 > 0``,
``alpha1 + beta1 < 1`` is the open 2-simplex, so one latent site
``alpha1_beta1 = (alpha1, beta1, 1 - alpha1 - beta1) ~ Dirichlet(1, 1, 1)``
carries both. Dirichlet(1, 1, 1) is the uniform density on that triangle
(log density ``log 2``, a constant), so the joint density in the constrained
coordinates ``(mu, alpha0, alpha1, beta1)`` equals Stan's flat prior times the
likelihood up to a constant, with no Jacobian factor. Pyro maps the site to
two unconstrained coordinates with its stick-breaking transform, so the
unconstrained dimension is 4 (``LATENT_DIM``) although the sites hold 5 numbers.
``mu`` and ``alpha0`` have improper flat priors (log density 0).

The variance recursion ``s[t] = a[t] + beta1 s[t-1]`` is linear, so it is
evaluated in closed form, ``s[t] = sum_{j <= t} beta1^(t - j) a[j]`` with
``a[1] = sigma1^2``, as one matrix product instead of a loop of T steps.
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

from ._common import check_domain, draw_scalar, flat_positive, flat_real, sample_site, to_numpy

NAME = "garch-garch11"
LATENT_DIM = 4
DATA = load_data(NAME)
T = int(DATA["T"])


def _volatility(y: Tensor, mu: Tensor, alpha0: Tensor, alpha1: Tensor, beta1: Tensor) -> Tensor:
    """sigma[t] for t = 1..T, batched over the leading dimensions of the parameters."""
    shocks = alpha0[..., None] + alpha1[..., None] * (y[:-1] - mu[..., None]) ** 2
    first = y.new_full((), float(DATA["sigma1"]) ** 2).expand(shocks.shape[:-1] + (1,))
    a = torch.cat([first, shocks], dim=-1)  # (..., T)
    steps = torch.arange(T, device=y.device)
    lag = steps[:, None] - steps[None, :]  # t - j
    # clamp before pow so the masked upper triangle never overflows (and its gradient stays 0)
    powers = beta1[..., None, None] ** lag.clamp(min=0).to(y.dtype)
    weights = torch.where(lag >= 0, powers, torch.zeros_like(powers))
    variance = (weights @ a[..., None])[..., 0]
    return variance.sqrt()


def model() -> None:
    """GARCH(1,1) with flat priors (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["alpha1_beta1"]["value"].shape
        torch.Size([3])
    """
    y = data_tensors(NAME)["y"]
    mu = pyro.sample("mu", flat_real())
    alpha0 = pyro.sample("alpha0", flat_positive())
    weights = pyro.sample("alpha1_beta1", dist.Dirichlet(y.new_ones(3)))
    alpha1 = pyro.deterministic("alpha1", weights[..., 0])
    beta1 = pyro.deterministic("beta1", weights[..., 1])
    sigma = _volatility(y, mu, alpha0, alpha1, beta1)
    pyro.sample("y", dist.Normal(mu[..., None], sigma).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``mu``, ``alpha0``, ``alpha1_beta1`` to ``mu, alpha0, alpha1, beta1``.

    Arguments:
        samples: the three latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    weights = sample_site(samples, "alpha1_beta1", (3,))
    return {
        "mu": to_numpy(sample_site(samples, "mu", ())),
        "alpha0": to_numpy(sample_site(samples, "alpha0", ())),
        "alpha1": to_numpy(weights[..., 0]),
        "beta1": to_numpy(weights[..., 1]),
    }


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw.

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``mu``, ``alpha0`` and
        ``alpha1_beta1 = (alpha1, beta1, 1 - alpha1 - beta1)``.
    """
    alpha0 = draw_scalar(draw, "alpha0")
    alpha1 = draw_scalar(draw, "alpha1")
    beta1 = draw_scalar(draw, "beta1")
    check_domain(alpha0, "alpha0", 0.0, None)
    check_domain(alpha1, "alpha1", 0.0, 1.0)
    check_domain(beta1, "beta1", 0.0, None)
    check_domain(alpha1 + beta1, "alpha1 + beta1", None, 1.0)
    alpha1, beta1 = torch.broadcast_tensors(alpha1, beta1)
    weights = torch.stack([alpha1, beta1, 1.0 - alpha1 - beta1], dim=-1)
    return {"mu": draw_scalar(draw, "mu"), "alpha0": alpha0, "alpha1_beta1": weights}
