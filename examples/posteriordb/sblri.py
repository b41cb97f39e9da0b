"""Bayesian linear regression with badly scaled predictors (posteriordb ``sblri-blr``).

The Stan model::

    parameters { vector[D] beta; real<lower=0> sigma; }
    model {
      target += normal_lpdf(beta | 0, 10);
      target += normal_lpdf(sigma | 0, 10);
      target += normal_lpdf(y | X * beta, sigma);
    }

with D = 5 and N = 100. The columns of ``X`` are in the hundreds while the
noise is about 1, so every ``beta[d]`` is pinned near 1 with sd about 0.001
while ``sigma`` has sd about 0.07: scales that differ by 70. ``sigma ~
HalfNormal(10)`` differs from Stan's ``normal(0, 10)`` on ``sigma > 0`` by the
constant ``log 2``.
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import regression_names, regression_values

NAME = "sblri-blr"
DATA = load_data(NAME)
D = int(DATA["D"])
LATENT_DIM = D + 1


def model() -> None:
    """The linear regression ``y ~ N(X beta, sigma)`` (no arguments).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["beta"]["value"].shape
        torch.Size([5])
    """
    data = data_tensors(NAME)
    x, y = data["X"], data["y"]
    beta = pyro.sample("beta", dist.Normal(y.new_zeros(D), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(y.new_full((), 10.0)))
    loc = beta @ x.T
    pyro.sample("y", dist.Normal(loc, sigma[..., None]).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``beta`` and ``sigma`` to ``beta[1..D], sigma``.

    Arguments:
        samples: the two sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return regression_names(samples, D)


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``beta`` and ``sigma``.

    Raises:
        KeyError: when a parameter is missing.
        ValueError: when ``sigma <= 0`` or a value is not finite.
    """
    return regression_values(draw, D)
