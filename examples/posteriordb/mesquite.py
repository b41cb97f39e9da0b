"""Mesquite bush leaf weight (posteriordb ``mesquite-mesquite``).

The Stan model (flat priors on the declared domains)::

    parameters { vector[7] beta; real<lower=0> sigma; }
    model {
      weight ~ normal(beta[1] + beta[2] * diam1 + beta[3] * diam2
                      + beta[4] * canopy_height + beta[5] * total_height
                      + beta[6] * density + beta[7] * group, sigma);
    }

Raw (unlogged, uncentered) predictors, N = 46 bushes and collinear plant
measures: eight parameters from 46 points, coefficients correlated up to
about -0.77 (``beta[2]`` and ``beta[3]``, the two diameters), and a skewed
``sigma``.
``beta`` and ``sigma`` have improper flat priors (log density 0).
"""

from __future__ import annotations

__all__ = [
    "LATENT_DIM",
    "NAME",
    "PREDICTORS",
    "design_matrix",
    "model",
    "site_values_from_reference",
    "to_reference_names",
]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors

from ._common import flat_positive, flat_real_vector, regression_names, regression_values

NAME = "mesquite-mesquite"
LATENT_DIM = 8
#: the data columns multiplying ``beta[2]`` ... ``beta[7]``, in the Stan program's order
PREDICTORS: tuple[str, ...] = (
    "diam1", "diam2", "canopy_height", "total_height", "density", "group",
)


def design_matrix(data: Mapping[str, Tensor]) -> Tensor:
    """The ``N x 7`` design matrix: a column of ones, then :data:`PREDICTORS`.

    Arguments:
        data: the posterior's data tensors (:func:`data_tensors`).

    Returns:
        The matrix, in the dtype and on the device of the data.
    """
    columns = [data[name] for name in PREDICTORS]
    return torch.stack([torch.ones_like(columns[0]), *columns], dim=-1)


def model() -> None:
    """Linear regression of leaf weight on six plant measures (no arguments).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["beta"]["value"].shape
        torch.Size([7])
    """
    data = data_tensors(NAME)
    x = design_matrix(data)
    beta = pyro.sample("beta", flat_real_vector(7))
    sigma = pyro.sample("sigma", flat_positive())
    loc = beta @ x.T
    pyro.sample("weight", dist.Normal(loc, sigma[..., None]).to_event(1), obs=data["weight"])


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``beta`` and ``sigma`` to ``beta[1..7], sigma``.

    Arguments:
        samples: the two sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return regression_names(samples, 7)


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
    return regression_values(draw, 7)
