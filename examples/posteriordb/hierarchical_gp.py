"""Hierarchical GP of state-wide presidential votes.

posteriordb ``state_wide_presidential_votes-hierarchical_gp``: 50 states x 11
elections (N = 550), 14 years, 10 regions. The Stan model (posteriordb's
program, already non-centered)::

    parameters {
      matrix[N_years, N_regions] GP_region_std; matrix[N_years, N_states] GP_state_std;
      vector[N_years_obs] year_std; vector[N_states] state_std; vector[N_regions] region_std;
      real<lower=0> tot_var; simplex[17] prop_var; real mu;
      real<lower=0> length_GP_region_long; real<lower=0> length_GP_state_long;
      real<lower=0> length_GP_region_short; real<lower=0> length_GP_state_short;
    }
    transformed parameters {
      vars = 17 * prop_var * tot_var;
      year_re = sqrt(vars[1]) * year_std; region_re = sqrt(vars[2]) * region_std;
      state_re = sqrt(vars[2 + state_region_ind]) .* state_std;
      GP_region = cholesky_decompose(K(sqrt(vars[13]), length_GP_region_long)
                                     + K(sqrt(vars[15]), length_GP_region_short) + 1e-6 I)
                  * GP_region_std;
      GP_state = (the same with vars[14], vars[16] and the state lengths) * GP_state_std;
    }
    model {
      y ~ normal(mu + year_re[year_ind] + state_re[state_ind] + region_re[region_ind]
                 + GP_region[year_ind, region_ind] + GP_state[year_ind, state_ind],
                 sqrt(vars[17]));
      to_vector(GP_region_std) ~ normal(0, 1); to_vector(GP_state_std) ~ normal(0, 1);
      year_std ~ normal(0, 1); state_std ~ normal(0, 1); region_std ~ normal(0, 1);
      mu ~ normal(.5, .5); tot_var ~ gamma(3, 3); prop_var ~ dirichlet(rep_vector(2, 17));
      length_GP_region_long ~ weibull(30, 8); length_GP_state_long ~ weibull(30, 8);
      length_GP_region_short ~ weibull(30, 3); length_GP_state_short ~ weibull(30, 3);
    }

with ``K(s, l)[t, t'] = s^2 exp(-(t - t')^2 / (2 l^2))`` over the years
``t = 1..14`` (Stan's ``gp_exp_quad_cov``) and Stan's ``weibull(shape, scale)``
(torch's ``Weibull(scale, concentration)``). The matrices are sites with event
shape ``(14, regions)`` and ``(14, states)``. Unconstrained dimension:
140 + 700 + 11 + 50 + 10 + 1 + 16 + 1 + 4 = 933. The stored reference also
holds the transformed scales ``sigma_*``, which :func:`to_reference_names`
computes.
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
    draw_matrix,
    draw_scalar,
    draw_vector,
    matrix_names,
    sample_site,
    to_numpy,
    vector_names,
    zero_based,
)

NAME = "state_wide_presidential_votes-hierarchical_gp"
LATENT_DIM = 933
DATA = load_data(NAME)
N_YEARS = int(DATA["N_years"])
N_YEARS_OBS = int(DATA["N_years_obs"])
N_STATES = int(DATA["N_states"])
N_REGIONS = int(DATA["N_regions"])
N_VARS = 17
JITTER = 1e-6
#: the length scales and their Weibull (scale, shape) priors
LENGTHS = {
    "length_GP_region_long": (8.0, 30.0),
    "length_GP_state_long": (8.0, 30.0),
    "length_GP_region_short": (3.0, 30.0),
    "length_GP_state_short": (3.0, 30.0),
}
#: the GP scales and their index into ``vars`` (0-based)
GP_SCALES = {
    "sigma_GP_region_long": 12,
    "sigma_GP_state_long": 13,
    "sigma_GP_region_short": 14,
    "sigma_GP_state_short": 15,
}


def _cholesky(scale_long: Tensor, length_long: Tensor, scale_short: Tensor,
              length_short: Tensor) -> Tensor:
    """Cholesky factor of the jittered sum of two squared-exponential kernels, ``(..., 14, 14)``."""
    years = torch.arange(1, N_YEARS + 1, dtype=scale_long.dtype, device=scale_long.device)
    sq = (years[:, None] - years[None, :]) ** 2
    cov = 0.0
    for scale, length in ((scale_long, length_long), (scale_short, length_short)):
        s, ell = scale[..., None, None], length[..., None, None]
        cov = cov + s**2 * torch.exp(-sq / (2 * ell**2))
    cov = cov + JITTER * torch.eye(N_YEARS, dtype=years.dtype, device=years.device)
    return torch.linalg.cholesky(cov)


def _transformed(v: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Stan's transformed parameters that the likelihood and the reference need."""
    variances = N_VARS * v["prop_var"] * v["tot_var"][..., None]
    scales = variances.sqrt()
    out = {
        "sigma_year": scales[..., 0],
        "sigma_region": scales[..., 1],
        "sigma_state": scales[..., 2:12],
        **{k: scales[..., i] for k, i in GP_SCALES.items()},
        "sigma_error_state_2": scales[..., 16],
    }
    for kind in ("region", "state"):
        chol = _cholesky(out[f"sigma_GP_{kind}_long"], v[f"length_GP_{kind}_long"],
                         out[f"sigma_GP_{kind}_short"], v[f"length_GP_{kind}_short"])
        out[f"GP_{kind}"] = chol @ v[f"GP_{kind}_std"]
    return out


def model() -> None:
    """The hierarchical GP model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["GP_state_std"]["value"].shape
        torch.Size([14, 50])
    """
    y = data_tensors(NAME)["y"]
    year = zero_based(DATA["year_ind"], y.device)
    state = zero_based(DATA["state_ind"], y.device)
    region = zero_based(DATA["region_ind"], y.device)
    state_region = zero_based(DATA["state_region_ind"], y.device)
    zero = y.new_zeros(())

    def std_normal(name: str, *shape: int) -> Tensor:
        return pyro.sample(name, dist.Normal(y.new_zeros(shape), 1.0).to_event(len(shape)))

    v = {
        "GP_region_std": std_normal("GP_region_std", N_YEARS, N_REGIONS),
        "GP_state_std": std_normal("GP_state_std", N_YEARS, N_STATES),
        "year_std": std_normal("year_std", N_YEARS_OBS),
        "state_std": std_normal("state_std", N_STATES),
        "region_std": std_normal("region_std", N_REGIONS),
        "tot_var": pyro.sample("tot_var", dist.Gamma(zero + 3.0, 3.0)),
        "prop_var": pyro.sample("prop_var", dist.Dirichlet(y.new_full((N_VARS,), 2.0))),
    }
    mu = pyro.sample("mu", dist.Normal(zero + 0.5, 0.5))
    for k, (scale, shape) in LENGTHS.items():
        v[k] = pyro.sample(k, dist.Weibull(zero + scale, shape))
    t = _transformed(v)
    year_re = t["sigma_year"][..., None] * v["year_std"]
    region_re = t["sigma_region"][..., None] * v["region_std"]
    state_re = t["sigma_state"][..., state_region] * v["state_std"]
    loc = (mu[..., None] + year_re[..., year] + state_re[..., state] + region_re[..., region]
           + t["GP_region"][..., year, region] + t["GP_state"][..., year, state])
    noise = t["sigma_error_state_2"][..., None].expand(loc.shape)
    pyro.sample("y", dist.Normal(loc, noise).to_event(1), obs=y)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples to the reference names (the parameters, then the ``sigma_*`` scales).

    Arguments:
        samples: the latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan name, in the stored order.
    """
    v = {
        "GP_region_std": sample_site(samples, "GP_region_std", (N_YEARS, N_REGIONS)),
        "GP_state_std": sample_site(samples, "GP_state_std", (N_YEARS, N_STATES)),
        "year_std": sample_site(samples, "year_std", (N_YEARS_OBS,)),
        "state_std": sample_site(samples, "state_std", (N_STATES,)),
        "region_std": sample_site(samples, "region_std", (N_REGIONS,)),
        "tot_var": sample_site(samples, "tot_var", ()),
        "prop_var": sample_site(samples, "prop_var", (N_VARS,)),
        "mu": sample_site(samples, "mu", ()),
        **{k: sample_site(samples, k, ()) for k in LENGTHS},
    }
    out: dict[str, np.ndarray] = {}
    for k, value in v.items():
        if k.startswith("GP_"):
            out.update(matrix_names(value, k))
        elif value.dim() > v["mu"].dim():
            out.update(vector_names(value, k))
        else:
            out[k] = to_numpy(value)
    with torch.no_grad():
        scales = N_VARS * v["prop_var"] * v["tot_var"][..., None]
        scales = scales.sqrt()
    out["sigma_year"] = to_numpy(scales[..., 0])
    out["sigma_region"] = to_numpy(scales[..., 1])
    out.update(vector_names(scales[..., 2:12], "sigma_state"))
    out.update({k: to_numpy(scales[..., i]) for k, i in GP_SCALES.items()})
    out["sigma_error_state_2"] = to_numpy(scales[..., 16])
    return out


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    ``prop_var`` is divided by its sum: the stored values are rounded (to within
    sd/2000), so their sum is 1 only to about 1e-5.

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for the twelve sites.
    """
    out = {
        "GP_region_std": draw_matrix(draw, "GP_region_std", N_YEARS, N_REGIONS),
        "GP_state_std": draw_matrix(draw, "GP_state_std", N_YEARS, N_STATES),
        "year_std": draw_vector(draw, "year_std", N_YEARS_OBS),
        "state_std": draw_vector(draw, "state_std", N_STATES),
        "region_std": draw_vector(draw, "region_std", N_REGIONS),
        "tot_var": draw_scalar(draw, "tot_var"),
    }
    check_domain(out["tot_var"], "tot_var", 0.0, None)
    prop_var = draw_vector(draw, "prop_var", N_VARS)
    check_domain(prop_var, "prop_var", 0.0, None)
    total = prop_var.sum(-1, keepdim=True)
    check_domain(total - 1.0, "sum of prop_var - 1", -1e-3, 1e-3)
    out["prop_var"] = prop_var / total
    out["mu"] = draw_scalar(draw, "mu")
    for k in LENGTHS:
        out[k] = draw_scalar(draw, k)
        check_domain(out[k], k, 0.0, None)
    return out
