"""A model file for a data-parallel fit: the mean of Normal data with known scale.

The convention of ``pyro-relax fit MODEL --devices N``: the file defines the
model ``model(ind, *data)``, whose plate over the data is subsampled with the
indices it is given (``pyro.plate(name, SIZE, subsample=ind)``), and the data
(here the tensor ``data``; ``--data NAME`` names another attribute, which may
also be a function returning the tensors). Each step, every worker calls the
model with its share of the step's indices and those rows of the data; the
posterior is drawn with the model on all indices. Run it with::

    pyro-relax fit examples/data_parallel.py:model --devices 2 --guide normal \\
        --steps 200 --lr 0.05 --out /tmp/normal-mean

The model is conjugate, so the answer is known (:func:`exact_posterior`).
The file is imported again in every worker, so it only defines things.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["PRIOR_SCALE", "SCALE", "SIZE", "data", "exact_posterior", "model"]

SIZE = 400  # data points (the plate's size)
SCALE = 5.0  # the known scale of the data (posterior sd 0.25)
PRIOR_SCALE = 10.0  # mu ~ Normal(0, PRIOR_SCALE)

data = 3.0 + SCALE * torch.randn(SIZE, generator=torch.Generator().manual_seed(0))


def model(ind: Tensor, x: Tensor) -> None:
    """``mu ~ Normal(0, 10)``, ``x[i] ~ Normal(mu, 5)`` for the subsample ``ind``."""
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    with pyro.plate("data", SIZE, subsample=ind):
        pyro.sample("obs", dist.Normal(mu, SCALE), obs=x)


def exact_posterior(x: Tensor = data) -> tuple[float, float]:
    """The posterior mean and sd of ``mu`` given all of ``x`` (Normal-Normal conjugacy).

    Example:
        >>> mean, sd = exact_posterior(torch.zeros(4))
        >>> round(mean, 6), round(sd, 4)
        (0.0, 2.4254)
    """
    precision = 1.0 / PRIOR_SCALE**2 + x.shape[0] / SCALE**2
    return float(x.sum()) / SCALE**2 / precision, math.sqrt(1.0 / precision)
