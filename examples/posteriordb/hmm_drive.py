"""Two-state HMM of a basketball drive (posteriordb ``bball_drive_event_1-hmm_drive_1``).

The Stan model (K = 2 states, N = 416 time steps)::

    parameters { simplex[K] theta1; simplex[K] theta2; ordered[K] phi; ordered[K] lambda; }
    model {
      theta[1] = theta1; theta[2] = theta2;          // theta[j, k] = P(k at t | j at t - 1)
      for (k in 1:K) target += dirichlet_lpdf(theta[k] | alpha[k, :]');
      target += normal_lpdf(phi[1] | 0, 1) + normal_lpdf(phi[2] | 3, 1);
      target += normal_lpdf(lambda[1] | 0, 1) + normal_lpdf(lambda[2] | 3, 1);
      gamma[1, k] = normal_lpdf(u[1] | phi[k], tau) + normal_lpdf(v[1] | lambda[k], rho);
      gamma[t, k] = log_sum_exp_j(gamma[t - 1, j] + log(theta[j, k]))
                    + normal_lpdf(u[t] | phi[k], tau) + normal_lpdf(v[t] | lambda[k], rho);
      target += log_sum_exp(gamma[N]);
    }

The discrete states are summed out by Pyro's :class:`~pyro.distributions.DiscreteHMM`
(the same forward algorithm, as a parallel scan over time, vectorized over
leading batch dimensions of the parameters). Pyro's HMM makes a transition
before its first emission while Stan's ``gamma[1]`` has none (a uniform
first state), so the first transition is given uniform rows (see ``_hmm``);
this adds the constant ``-log K`` to Stan's density. Each observation is the
pair ``(u[t], v[t])``, with independent normal emissions of known scales
``tau`` and ``rho``.

``theta1`` and ``theta2`` are Dirichlet sites (their prior is the Stan
prior); ``phi`` and ``lambda`` are increasing pairs with a flat density on
their support (Pyro's ordered transform), their normal priors added by
``pyro.factor``. Unconstrained dimension: 1 + 1 + 2 + 2 = 6. The transitions
are sticky (``theta2[1]`` about 0.009, near the edge of the simplex).
"""

from __future__ import annotations

__all__ = ["LATENT_DIM", "NAME", "model", "site_values_from_reference", "to_reference_names"]

from collections.abc import Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_relax.testing.posteriordb import data_tensors, load_data

from ._common import (
    check_domain,
    draw_vector,
    flat_ordered,
    sample_site,
    vector_names,
)

NAME = "bball_drive_event_1-hmm_drive_1"
LATENT_DIM = 6
DATA = load_data(NAME)
K = int(DATA["K"])
N = int(DATA["N"])
#: prior means of ``phi`` and of ``lambda`` (the same for both)
PRIOR_LOC = (0.0, 3.0)
_SIMPLEX_TOL = 1e-6


def model() -> None:
    """The two-state HMM with states summed out (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> phi = poutine.trace(model).get_trace().nodes["phi"]["value"]
        >>> bool(phi[0] < phi[1])
        True
    """
    data = data_tensors(NAME)
    u, v, alpha = data["u"], data["v"], data["alpha"]
    theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
    theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
    phi = pyro.sample("phi", flat_ordered(K))
    lam = pyro.sample("lambda", flat_ordered(K))
    prior = dist.Normal(u.new_tensor(PRIOR_LOC), 1.0)
    pyro.factor("phi_prior", prior.log_prob(phi).sum(-1))
    pyro.factor("lambda_prior", prior.log_prob(lam).sum(-1))
    pyro.sample("uv", _hmm(theta1, theta2, phi, lam, u), obs=torch.stack([u, v], dim=-1))


def _hmm(theta1: Tensor, theta2: Tensor, phi: Tensor, lam: Tensor, u: Tensor) -> dist.DiscreteHMM:
    """Stan's forward algorithm as a :class:`~pyro.distributions.DiscreteHMM`.

    Pyro's HMM draws a state from ``initial_logits`` and then makes a transition
    before the first emission; Stan's ``gamma[1]`` weighs the first state
    uniformly. So the first of the N transitions has equal logits (every row
    uniform, whatever the initial state) and the other N - 1 are ``log theta``.
    The dimension left of the two state dimensions is read as time by
    DiscreteHMM, which keeps the leading batch dimensions apart.
    """
    theta1, theta2 = torch.broadcast_tensors(theta1, theta2)
    log_theta = torch.stack([theta1, theta2], dim=-2).log()  # (..., j, k): from j to k
    steps = log_theta[..., None, :, :].expand(*log_theta.shape[:-2], N - 1, K, K)
    transition = torch.cat([torch.zeros_like(steps[..., :1, :, :]), steps], dim=-3)
    loc = torch.stack(torch.broadcast_tensors(phi, lam), dim=-1)  # (..., k, 2): state k's means
    scale = u.new_tensor([float(DATA["tau"]), float(DATA["rho"])])
    emission = dist.Normal(loc[..., None, :, :], scale).to_event(1)
    return dist.DiscreteHMM(u.new_zeros(K), transition, emission, duration=N)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples to ``theta1[1..2], theta2[1..2], phi[1..2], lambda[1..2]``.

    Arguments:
        samples: the four sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name.
    """
    out: dict[str, np.ndarray] = {}
    for site in ("theta1", "theta2", "phi", "lambda"):
        out.update(vector_names(sample_site(samples, site, (K,)), site))
    return out


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``theta1``, ``theta2``, ``phi``
        and ``lambda``.

    Raises:
        KeyError: when a parameter is missing.
        ValueError: when a ``theta`` is not on the simplex (entries in (0, 1)
            summing to 1 within 1e-6), ``phi`` or ``lambda`` is not increasing,
            or a value is not finite.
    """
    out = {}
    for site in ("theta1", "theta2"):
        theta = draw_vector(draw, site, K)
        check_domain(theta, site, 0.0, 1.0)
        total = theta.sum(-1)
        check_domain(total, f"sum of {site}", 1.0 - _SIMPLEX_TOL, 1.0 + _SIMPLEX_TOL)
        out[site] = theta / total[..., None]
    for site in ("phi", "lambda"):
        value = draw_vector(draw, site, K)
        check_domain(value.diff(dim=-1), f"increments of {site}", 0.0, None)
        out[site] = value
    return out
