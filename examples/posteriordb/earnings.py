"""Earnings on height (posteriordb ``earnings-earn_height``).

The Stan model (flat priors on the declared domains)::

    parameters { vector[2] beta; real<lower=0> sigma; }
    model { earn ~ normal(beta[1] + beta[2] * height, sigma); }

``earn`` is in dollars and ``height`` in inches (about 66, far from 0): the
posterior has ``sigma`` near 19,000, ``beta[1]`` near -61,000 (sd about
9,700) and ``beta[2]`` near 1,300 (sd about 140), with the intercept and the
slope correlated at about -0.998. Scales that differ by 10^4 and the
correlation are the point of this posterior; ``beta`` and ``sigma`` have
improper flat priors (log density 0).
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors

from ._common import flat_positive, flat_real_vector, regression_names, regression_values

NAME = "earnings-earn_height"
LATENT_DIM = 3


def model() -> None:
    """Linear regression of earnings on height (no arguments).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["beta"]["value"].shape
        torch.Size([2])
    """
    data = data_tensors(NAME)
    earn, height = data["earn"], data["height"]
    beta = pyro.sample("beta", flat_real_vector(2))
    sigma = pyro.sample("sigma", flat_positive())
    loc = beta[..., :1] + beta[..., 1:] * height
    pyro.sample("earn", dist.Normal(loc, sigma[..., None]).to_event(1), obs=earn)


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
