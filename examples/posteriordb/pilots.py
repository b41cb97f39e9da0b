"""Crossed random effects of pilot training (posteriordb ``pilots-pilots``).

posteriordb's (centered) Stan model, written here::

    parameters {
      vector[n_groups] a; vector[n_scenarios] b; real mu_a; real mu_b;
      real<lower=0, upper=100> sigma_a; real<lower=0, upper=100> sigma_b;
      real<lower=0, upper=100> sigma_y;
    }
    model {
      mu_a ~ normal(0, 1);
      a ~ normal(10 * mu_a, sigma_a);
      mu_b ~ normal(0, 1);
      b ~ normal(10 * mu_b, sigma_b);
      y ~ normal(a[group_id] + b[scenario_id], sigma_y);
    }

The three scales have no prior statement, so their prior is uniform on
``(0, 100)``: ``Uniform(0, 100)`` sites (a constant density, the Stan support).
The reference draws come from a reparameterization of the same posterior (see
the folder's ``model.stan``); the sites here are posteriordb's parameters.
Unconstrained dimension: 5 + 8 + 2 + 3 = 18. ``a`` and ``b`` are identified
only through ``a + b`` (a ridge), and ``sigma_a`` has a funnel towards 0.
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

NAME = "pilots-pilots"
LATENT_DIM = 18
DATA = load_data(NAME)
N_GROUPS = int(DATA["n_groups"])
N_SCENARIOS = int(DATA["n_scenarios"])
SCALES = ("sigma_a", "sigma_b", "sigma_y")


def model() -> None:
    """The centered crossed-effects model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> trace = poutine.trace(model).get_trace()
        >>> trace.nodes["a"]["value"].shape, trace.nodes["b"]["value"].shape
        (torch.Size([5]), torch.Size([8]))
    """
    y = data_tensors(NAME)["y"]
    group = zero_based(DATA["group_id"], y.device)
    scenario = zero_based(DATA["scenario_id"], y.device)
    zero = y.new_zeros(())
    scale = {k: pyro.sample(k, dist.Uniform(zero, 100.0)) for k in SCALES}
    mu_a = pyro.sample("mu_a", dist.Normal(zero, 1.0))
    mu_b = pyro.sample("mu_b", dist.Normal(zero, 1.0))
    loc_a = (10.0 * mu_a)[..., None].expand(*mu_a.shape, N_GROUPS)
    a = pyro.sample("a", dist.Normal(loc_a, scale["sigma_a"][..., None]).to_event(1))
    loc_b = (10.0 * mu_b)[..., None].expand(*mu_b.shape, N_SCENARIOS)
    b = pyro.sample("b", dist.Normal(loc_b, scale["sigma_b"][..., None]).to_event(1))
    y_hat = a[..., group] + b[..., scenario]
    pyro.sample("y", dist.Normal(y_hat, scale["sigma_y"][..., None]).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of the seven sites to ``a[1..5], b[1..8], mu_a, mu_b, sigma_*``.

    Arguments:
        samples: the latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    out = {
        **vector_names(sample_site(samples, "a", (N_GROUPS,)), "a"),
        **vector_names(sample_site(samples, "b", (N_SCENARIOS,)), "b"),
    }
    for k in ("mu_a", "mu_b", *SCALES):
        out[k] = to_numpy(sample_site(samples, k, ()))
    return out


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for the seven sites.
    """
    out = {
        "a": draw_vector(draw, "a", N_GROUPS),
        "b": draw_vector(draw, "b", N_SCENARIOS),
        "mu_a": draw_scalar(draw, "mu_a"),
        "mu_b": draw_scalar(draw, "mu_b"),
    }
    for k in SCALES:
        out[k] = draw_scalar(draw, k)
        check_domain(out[k], k, 0.0, 100.0)
    return out
