"""Two-component Gaussian mixture (posteriordb ``low_dim_gauss_mix-low_dim_gauss_mix``).

The Stan model::

    parameters { ordered[2] mu; array[2] real<lower=0> sigma; real<lower=0, upper=1> theta; }
    model {
      sigma ~ normal(0, 2);
      mu ~ normal(0, 2);
      theta ~ beta(5, 5);
      for (n in 1:N)
        target += log_mix(theta, normal_lpdf(y[n] | mu[1], sigma[1]),
                                 normal_lpdf(y[n] | mu[2], sigma[2]));
    }

The ordering of ``mu`` is the support of its site (an improper flat density on
increasing pairs, mapped to unconstrained space by Pyro's ordered transform);
the ``normal(0, 2)`` prior density of both components is added with
``pyro.factor("mu_prior", ...)``. ``sigma ~ HalfNormal(2)`` differs from Stan's
``normal(0, 2)`` on ``sigma > 0`` by a constant. The likelihood is a
``MixtureSameFamily`` observation site.
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

from ._common import (
    check_domain,
    draw_scalar,
    draw_vector,
    flat_ordered,
    sample_site,
    to_numpy,
    vector_names,
)

NAME = "low_dim_gauss_mix-low_dim_gauss_mix"
LATENT_DIM = 5
DATA = load_data(NAME)
N = int(DATA["N"])


def model() -> None:
    """The two-component mixture (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> mu = poutine.trace(model).get_trace().nodes["mu"]["value"]
        >>> bool(mu[0] < mu[1])
        True
    """
    y = data_tensors(NAME)["y"]
    mu = pyro.sample("mu", flat_ordered(2))
    pyro.factor("mu_prior", dist.Normal(y.new_zeros(()), 2.0).log_prob(mu).sum(-1))
    sigma = pyro.sample("sigma", dist.HalfNormal(y.new_full((2,), 2.0)).to_event(1))
    theta = pyro.sample("theta", dist.Beta(y.new_full((), 5.0), 5.0))
    batch = torch.broadcast_shapes(mu.shape[:-1], sigma.shape[:-1], theta.shape)
    logits = torch.stack([theta.log(), torch.log1p(-theta)], dim=-1)
    mixing = dist.Categorical(logits=logits[..., None, :].expand(*batch, N, 2))
    components = dist.Normal(
        mu[..., None, :].expand(*batch, N, 2), sigma[..., None, :].expand(*batch, N, 2)
    )
    pyro.sample("y", dist.MixtureSameFamily(mixing, components).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``mu``, ``sigma``, ``theta`` to ``mu[1], mu[2], sigma[1], sigma[2], theta``.

    Arguments:
        samples: the three sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return {
        **vector_names(sample_site(samples, "mu", (2,)), "mu"),
        **vector_names(sample_site(samples, "sigma", (2,)), "sigma"),
        "theta": to_numpy(sample_site(samples, "theta", ())),
    }


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``mu``, ``sigma`` and ``theta``.
    """
    mu = draw_vector(draw, "mu", 2)
    sigma = draw_vector(draw, "sigma", 2)
    theta = draw_scalar(draw, "theta")
    check_domain(mu[..., 1] - mu[..., 0], "mu[2] - mu[1]", 0.0, None)
    check_domain(sigma, "sigma", 0.0, None)
    check_domain(theta, "theta", 0.0, 1.0)
    return {"mu": mu, "sigma": sigma, "theta": theta}
