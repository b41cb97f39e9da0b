"""Autoregressive model of order K = 5 (posteriordb ``arK-arK``).

The Stan model::

    parameters { real alpha; array[K] real beta; real<lower=0> sigma; }
    model {
      alpha ~ normal(0, 10);
      beta ~ normal(0, 10);
      sigma ~ cauchy(0, 2.5);
      for (t in (K + 1):T)
        y[t] ~ normal(alpha + sum_k beta[k] * y[t - k], sigma);
    }

``sigma ~ HalfCauchy(2.5)`` differs from Stan's ``cauchy(0, 2.5)`` on
``sigma > 0`` by the constant ``log 2``. The lagged values are precomputed as a
``(T - K, K)`` design matrix.
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

NAME = "arK-arK"
DATA = load_data(NAME)
K = int(DATA["K"])
T = int(DATA["T"])
LATENT_DIM = K + 2


def model() -> None:
    """The AR(K) model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["beta"]["value"].shape
        torch.Size([5])
    """
    y = data_tensors(NAME)["y"]
    # lags[t - K, k] = y[t - k - 1] (0-based), for t = K..T-1
    lags = y.unfold(0, K, 1)[:-1].flip(-1)
    alpha = pyro.sample("alpha", dist.Normal(y.new_zeros(()), 10.0))
    beta = pyro.sample("beta", dist.Normal(y.new_zeros(K), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(y.new_full((), 2.5)))
    loc = alpha[..., None] + (lags @ beta[..., None])[..., 0]
    pyro.sample("y", dist.Normal(loc, sigma[..., None]).to_event(1), obs=y[K:])


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``alpha``, ``beta``, ``sigma`` to ``alpha, beta[1..K], sigma``.

    Arguments:
        samples: the three sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return {
        "alpha": to_numpy(sample_site(samples, "alpha", ())),
        **vector_names(sample_site(samples, "beta", (K,)), "beta"),
        "sigma": to_numpy(sample_site(samples, "sigma", ())),
    }


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``alpha``, ``beta`` and ``sigma``.
    """
    sigma = draw_scalar(draw, "sigma")
    check_domain(sigma, "sigma", 0.0, None)
    return {
        "alpha": draw_scalar(draw, "alpha"),
        "beta": draw_vector(draw, "beta", K),
        "sigma": sigma,
    }
