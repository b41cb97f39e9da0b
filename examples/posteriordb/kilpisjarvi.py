"""Kilpisjarvi summer temperature trend (posteriordb ``kilpisjarvi_mod-kilpisjarvi``).

The Stan model::

    parameters { real alpha; real beta; real<lower=0> sigma; }
    model {
      alpha ~ normal(pmualpha, psalpha);
      beta ~ normal(pmubeta, psbeta);
      y ~ normal(alpha + beta * x, sigma);
    }

``x`` is kept raw as stored in the data (values near 4000, far from 0), which
makes ``alpha`` and ``beta`` correlated at -0.99999: the point of this
posterior. ``sigma`` has an improper flat prior on the positive reals.
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import check_domain, draw_scalar, flat_positive, sample_site, to_numpy

NAME = "kilpisjarvi_mod-kilpisjarvi"
LATENT_DIM = 3
DATA = load_data(NAME)


def model() -> None:
    """Linear regression of temperature on the raw year (no arguments).

    Example:
        >>> from pyro import poutine
        >>> sorted(poutine.trace(model).get_trace().stochastic_nodes)
        ['alpha', 'beta', 'sigma']
    """
    data = data_tensors(NAME)
    x, y = data["x"], data["y"]
    alpha = pyro.sample("alpha", dist.Normal(y.new_tensor(DATA["pmualpha"]), DATA["psalpha"]))
    beta = pyro.sample("beta", dist.Normal(y.new_tensor(DATA["pmubeta"]), DATA["psbeta"]))
    sigma = pyro.sample("sigma", flat_positive())
    loc = alpha[..., None] + beta[..., None] * x
    pyro.sample("y", dist.Normal(loc, sigma[..., None]).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``alpha``, ``beta``, ``sigma`` to the reference names (the same).

    Arguments:
        samples: the three sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return {k: to_numpy(sample_site(samples, k, ())) for k in ("alpha", "beta", "sigma")}


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``alpha``, ``beta`` and ``sigma``.
    """
    out = {k: draw_scalar(draw, k) for k in ("alpha", "beta", "sigma")}
    check_domain(out["sigma"], "sigma", 0.0, None)
    return out
