"""Eight schools, non-centered (posteriordb ``eight_schools-eight_schools_noncentered``).

The Stan model (Rubin 1981; Gelman et al. 2013, section 5.5)::

    parameters { vector[J] theta_trans; real mu; real<lower=0> tau; }
    transformed parameters { vector[J] theta = theta_trans * tau + mu; }
    model {
      theta_trans ~ normal(0, 1);
      y ~ normal(theta, sigma);
      mu ~ normal(0, 5);
      tau ~ cauchy(0, 5);
    }

``tau ~ HalfCauchy(5)`` here differs from Stan's ``cauchy(0, 5)`` on
``tau > 0`` by the constant ``log 2`` only. Latent sites: ``mu`` (real),
``tau`` (positive), ``theta_trans`` (8 reals); ``theta`` is a deterministic site.
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import check_domain, draw_scalar, draw_vector, sample_site, to_numpy, vector_names

NAME = "eight_schools-eight_schools_noncentered"
LATENT_DIM = 10
DATA = load_data(NAME)
J = int(DATA["J"])


def model() -> None:
    """The non-centered eight schools model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["theta"]["value"].shape
        torch.Size([8])
    """
    data = data_tensors(NAME)
    y, sigma = data["y"], data["sigma"]
    mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_full((), 5.0)))
    theta_trans = pyro.sample("theta_trans", dist.Normal(y.new_zeros(J), 1.0).to_event(1))
    theta = pyro.deterministic("theta", mu[..., None] + tau[..., None] * theta_trans, 1)
    pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of the latent sites to the reference names (``theta[1]``, ``mu``, ``tau``).

    Arguments:
        samples: ``mu``, ``tau`` and ``theta_trans`` with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    mu = sample_site(samples, "mu", ())
    tau = sample_site(samples, "tau", ())
    theta_trans = sample_site(samples, "theta_trans", (J,))
    theta = mu[..., None] + tau[..., None] * theta_trans
    return {**vector_names(theta, "theta"), "mu": to_numpy(mu), "tau": to_numpy(tau)}


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw: ``theta_trans = (theta - mu) / tau``.

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``mu``, ``tau`` and ``theta_trans``.
    """
    mu = draw_scalar(draw, "mu")
    tau = draw_scalar(draw, "tau")
    check_domain(tau, "tau", 0.0, None)
    theta = draw_vector(draw, "theta", J)
    return {"mu": mu, "tau": tau, "theta_trans": (theta - mu[..., None]) / tau[..., None]}
