"""Child test score on mother's IQ (posteriordb ``kidiq-kidscore_momiq``).

The Stan model::

    parameters { vector[2] beta; real<lower=0> sigma; }
    model {
      sigma ~ cauchy(0, 2.5);
      kid_score ~ normal(beta[1] + beta[2] * mom_iq, sigma);
    }

``mom_iq`` is not centered (values near 100), so the intercept and the slope
are correlated at about -0.99. ``beta`` has an improper flat prior (log
density 0); ``sigma ~ HalfCauchy(2.5)`` differs from Stan's ``cauchy(0, 2.5)``
on ``sigma > 0`` by the constant ``log 2``.
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors

from ._common import flat_real_vector, regression_names, regression_values

NAME = "kidiq-kidscore_momiq"
LATENT_DIM = 3


def model() -> None:
    """Linear regression of the child's score on the mother's IQ (no arguments).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["kid_score"]["value"].shape
        torch.Size([434])
    """
    data = data_tensors(NAME)
    kid_score, mom_iq = data["kid_score"], data["mom_iq"]
    beta = pyro.sample("beta", flat_real_vector(2))
    sigma = pyro.sample("sigma", dist.HalfCauchy(mom_iq.new_full((), 2.5)))
    loc = beta[..., :1] + beta[..., 1:] * mom_iq
    pyro.sample("kid_score", dist.Normal(loc, sigma[..., None]).to_event(1), obs=kid_score)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``beta`` and ``sigma`` to ``beta[1], beta[2], sigma``.

    Arguments:
        samples: the two sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return regression_names(samples, 2)


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
    return regression_values(draw, 2)
