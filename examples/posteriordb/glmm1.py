"""Poisson GLMM of site counts (posteriordb ``GLMM_data-GLMM1_model``).

The Stan model (Kéry and Schaub 2012)::

    parameters { vector[nsite] alpha; real mu_alpha; real<lower=0, upper=5> sd_alpha; }
    model {
      alpha ~ normal(mu_alpha, sd_alpha);
      mu_alpha ~ normal(0, 10);
      //  sd_alpha ~ uniform(0, 5);  // Implicitly defined
      for (i in 1:nobs) obs[i] ~ poisson_log(alpha[obssite[i]]);
    }

(``log_lambda[year, site] = alpha[site]`` for every year). ``sd_alpha`` is a
``Uniform(0, 5)`` site. The 43 missing counts enter only Stan's generated
quantities, so they are left out. Unconstrained dimension: 235 + 2 = 237; the
centered site effects are the good geometry here (each is pinned by 7 to 9
counts).
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import (
    check_domain,
    draw_scalar,
    draw_vector,
    sample_site,
    to_numpy,
    vector_names,
    zero_based,
)

NAME = "GLMM_data-GLMM1_model"
LATENT_DIM = 237
DATA = load_data(NAME)
NSITE = int(DATA["nsite"])


def model() -> None:
    """The centered Poisson GLMM (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["alpha"]["value"].shape
        torch.Size([235])
    """
    obs = data_tensors(NAME)["obs"]
    site = zero_based(DATA["obssite"], obs.device)
    zero = obs.new_zeros(())
    sd_alpha = pyro.sample("sd_alpha", dist.Uniform(zero, 5.0))
    mu_alpha = pyro.sample("mu_alpha", dist.Normal(zero, 10.0))
    loc = mu_alpha[..., None].expand(*mu_alpha.shape, NSITE)
    alpha = pyro.sample("alpha", dist.Normal(loc, sd_alpha[..., None]).to_event(1))
    pyro.sample("obs", dist.Poisson(alpha[..., site].exp()).to_event(1), obs=obs)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples to ``alpha[1..235], mu_alpha, sd_alpha``.

    Arguments:
        samples: the latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return {
        **vector_names(sample_site(samples, "alpha", (NSITE,)), "alpha"),
        "mu_alpha": to_numpy(sample_site(samples, "mu_alpha", ())),
        "sd_alpha": to_numpy(sample_site(samples, "sd_alpha", ())),
    }


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``alpha``, ``mu_alpha``, ``sd_alpha``.
    """
    sd_alpha = draw_scalar(draw, "sd_alpha")
    check_domain(sd_alpha, "sd_alpha", 0.0, 5.0)
    return {
        "alpha": draw_vector(draw, "alpha", NSITE),
        "mu_alpha": draw_scalar(draw, "mu_alpha"),
        "sd_alpha": sd_alpha,
    }
