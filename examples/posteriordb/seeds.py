"""Random-effects logistic regression of seed germination (posteriordb ``seeds_data-seeds_model``).

posteriordb's (centered) Stan model, written here::

    parameters {
      real alpha0; real alpha1; real alpha12; real alpha2; real<lower=0> tau; vector[I] b;
    }
    transformed parameters { real<lower=0> sigma = 1.0 / sqrt(tau); }
    model {
      alpha0 ~ normal(0.0, 1.0E3);   // likewise alpha1, alpha2, alpha12
      tau ~ gamma(1.0E-3, 1.0E-3);   // shape, rate
      b ~ normal(0.0, sigma);
      n ~ binomial_logit(N, alpha0 + alpha1 * x1 + alpha2 * x2 + alpha12 * x1 .* x2 + b);
    }

The reference draws come from the non-centered form ``b = sigma b_raw`` of the
same posterior; the sites here are posteriordb's parameters (the reference
stores ``b`` and ``sigma``). Unconstrained dimension: 4 + 1 + 21 = 26. The
vague precision prior makes ``tau`` heavy-tailed, with a funnel between
``sigma`` and ``b``.
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

NAME = "seeds_data-seeds_model"
LATENT_DIM = 26
DATA = load_data(NAME)
I = int(DATA["I"])  # noqa: E741 (Stan's name)
COEFFICIENTS = ("alpha0", "alpha1", "alpha12", "alpha2")


def model() -> None:
    """The centered seeds model (no arguments; data from posteriordb).

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(model).get_trace().nodes["b"]["value"].shape
        torch.Size([21])
    """
    data = data_tensors(NAME)
    x1, x2, n, total = data["x1"], data["x2"], data["n"], data["N"]
    zero = x1.new_zeros(())
    alpha = {k: pyro.sample(k, dist.Normal(zero, 1.0e3)) for k in COEFFICIENTS}
    tau = pyro.sample("tau", dist.Gamma(zero + 1.0e-3, 1.0e-3))
    sigma = 1.0 / tau.sqrt()
    b = pyro.sample("b", dist.Normal(zero, sigma[..., None].expand(*sigma.shape, I)).to_event(1))
    logits = (
        alpha["alpha0"][..., None] + alpha["alpha1"][..., None] * x1
        + alpha["alpha2"][..., None] * x2 + alpha["alpha12"][..., None] * (x1 * x2) + b
    )
    pyro.sample("n", dist.Binomial(total, logits=logits).to_event(1), obs=n)


def to_reference_names(samples: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Map samples to ``alpha0, alpha1, alpha12, alpha2, tau, b[1..21], sigma``.

    Arguments:
        samples: the latent sites with any common batch shape.

    Returns:
        float64 arrays with the batch shape, keyed by Stan parameter name (with the
        transformed ``sigma = 1 / sqrt(tau)``, as stored in the reference).
    """
    out = {k: to_numpy(sample_site(samples, k, ())) for k in COEFFICIENTS}
    tau = sample_site(samples, "tau", ())
    out["tau"] = to_numpy(tau)
    out.update(vector_names(sample_site(samples, "b", (I,)), "b"))
    out["sigma"] = to_numpy(1.0 / tau.sqrt())
    return out


def site_values_from_reference(draw: Mapping[str, object]) -> dict[str, Tensor]:
    """Latent site values for a reference draw (the sites are the Stan parameters).

    Arguments:
        draw: Stan names to floats (one draw) or arrays (a batch of draws).

    Returns:
        Tensors (default dtype and device) for ``alpha*``, ``tau`` and ``b``.
    """
    out = {k: draw_scalar(draw, k) for k in COEFFICIENTS}
    out["tau"] = draw_scalar(draw, "tau")
    check_domain(out["tau"], "tau", 0.0, None)
    out["b"] = draw_vector(draw, "b", I)
    return out
