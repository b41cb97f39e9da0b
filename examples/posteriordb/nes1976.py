"""Party identification in the 1976 National Election Study (posteriordb ``nes1976-nes``).

The Stan model (flat priors on the declared domains)::

    transformed data {
      for (n in 1:N) {
        age30_44[n] = age_discrete[n] == 2;
        age45_64[n] = age_discrete[n] == 3;
        age65up[n] = age_discrete[n] == 4;
      }
    }
    parameters { vector[9] beta; real<lower=0> sigma; }
    model {
      partyid7 ~ normal(beta[1] + beta[2] * real_ideo + beta[3] * race_adj
                        + beta[4] * age30_44 + beta[5] * age45_64
                        + beta[6] * age65up + beta[7] * educ1 + beta[8] * gender
                        + beta[9] * income, sigma);
    }

Age enters as three dummies (the group ``age_discrete == 1``, under 30, is
the baseline); the other predictors are uncentered integer codes, so the
intercept is correlated with the slopes (down to about -0.66, with
``beta[3]``). ``beta`` and ``sigma`` have
improper flat priors (log density 0).
"""

from __future__ import annotations

__all__ = [
    "LATENT_DIM",
    "NAME",
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

NAME = "nes1976-nes"
LATENT_DIM = 10


def design_matrix(data: Mapping[str, Tensor]) -> Tensor:
    """The ``N x 9`` design matrix of the Stan program, age dummies included.

    Arguments:
        data: the posterior's data tensors (:func:`data_tensors`).

    Returns:
        Columns ``1, real_ideo, race_adj, age30_44, age45_64, age65up, educ1,
        gender, income`` (the dummies are 0/1 in the dtype of the data).
    """
    age = data["age_discrete"]
    dummies = [(age == level).to(age.dtype) for level in (2, 3, 4)]
    columns = [data["real_ideo"], data["race_adj"], *dummies]
    columns += [data["educ1"], data["gender"], data["income"]]
    return torch.stack([torch.ones_like(age), *columns], dim=-1)


def model() -> None:
    """Linear regression of the 7-point party id on ideology, race, age, education, gender, income.

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["beta"]["value"].shape
        torch.Size([9])
    """
    data = data_tensors(NAME)
    x = design_matrix(data)
    beta = pyro.sample("beta", flat_real_vector(9))
    sigma = pyro.sample("sigma", flat_positive())
    loc = beta @ x.T
    pyro.sample("partyid7", dist.Normal(loc, sigma[..., None]).to_event(1), obs=data["partyid7"])


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples of ``beta`` and ``sigma`` to ``beta[1..9], sigma``.

    Arguments:
        samples: the two sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    return regression_names(samples, 9)


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
    return regression_values(draw, 9)
