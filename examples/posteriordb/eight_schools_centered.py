"""Eight schools, centered (posteriordb ``eight_schools-eight_schools_centered``).

The Stan model (Rubin 1981; Gelman et al. 2013, section 5.5)::

    parameters { real mu; real<lower=0> tau; vector[J] theta; }
    model {
      mu ~ normal(0, 5);
      tau ~ cauchy(0, 5);
      theta ~ normal(mu, tau);
      y ~ normal(theta, sigma);
    }

The posterior is that of the non-centered model, so posteriordb gives both the
same reference draws; the centered form has a funnel between ``tau`` and
``theta``. ``tau ~ HalfCauchy(5)`` differs from Stan's ``cauchy(0, 5)`` on
``tau > 0`` by the constant ``log 2`` only.
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

NAME = "eight_schools-eight_schools_centered"
LATENT_DIM = 10
DATA = load_data(NAME)
J = int(DATA["J"])


def model() -> None:
    """The centered eight schools model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["theta"]["value"].shape
        torch.Size([8])
    """
    data = data_tensors(NAME)
    y, sigma = data["y"], data["sigma"]
    mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_full((), 5.0)))
    loc = mu[..., None].expand(*mu.shape, J)
    theta = pyro.sample("theta", dist.Normal(loc, tau[..., None]).to_event(1))
    pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``mu``, ``tau``, ``theta`` to the reference names.

    Arguments:
        samples: ``mu``, ``tau`` and ``theta`` with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    theta = sample_site(samples, "theta", (J,))
    mu = sample_site(samples, "mu", ())
    tau = sample_site(samples, "tau", ())
    return {**vector_names(theta, "theta"), "mu": to_numpy(mu), "tau": to_numpy(tau)}


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``mu``, ``tau`` and ``theta``.
    """
    tau = draw_scalar(draw, "tau")
    check_domain(tau, "tau", 0.0, None)
    return {"mu": draw_scalar(draw, "mu"), "tau": tau, "theta": draw_vector(draw, "theta", J)}
