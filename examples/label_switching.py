"""A two-component Gaussian mixture without an ordering constraint: label switching.

The means ``mu = (mu_1, mu_2)`` have the same prior and the likelihood is
symmetric under swapping them, so the posterior has two mirror-image modes,
``mu_1 < mu_2`` and ``mu_1 > mu_2``, with exactly equal mass. A reverse-KL
flow or a NUTS chain typically stays in one; the correct answer is both, half
the mass each. Run ``python examples/label_switching.py`` to compare the
FAB-trained guide with the reverse-KL flow guide.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["data", "make_model", "mass_below_diagonal"]


def data(n: int = 60, separation: float = 2.0, seed: int = 0) -> Tensor:
    """``n`` points, half from ``N(-separation, 1)`` and half from ``N(+separation, 1)``."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.arange(n) % 2 == 0, -1.0, 1.0).double()
    return sign * separation + torch.randn(n, generator=g, dtype=torch.float64)


def make_model(y: Tensor, prior_scale: float = 5.0):  # noqa: ANN201 - a Pyro model
    """The mixture ``0.5 N(mu_1, 1) + 0.5 N(mu_2, 1)`` with ``mu_k ~ N(0, prior_scale^2)``."""

    def model() -> None:
        like = torch.zeros((), dtype=torch.get_default_dtype())
        mu = pyro.sample(
            "mu", dist.Normal(like.expand(2), like.new_full((2,), prior_scale)).to_event(1)
        )
        obs = y.to(mu.dtype)
        comp = dist.Normal(mu.unsqueeze(-1), 1.0).log_prob(obs)  # batch + (2, n)
        loglik = (torch.logsumexp(comp, -2) - math.log(2.0)).sum(-1)
        pyro.factor("loglik", loglik)

    return model


def mass_below_diagonal(mu: Tensor, log_w: Tensor) -> float:
    """The self-normalized weight of the draws with ``mu_1 < mu_2`` (0.5 is the truth)."""
    p = torch.softmax(log_w.double(), 0)
    return float(p[mu[:, 0] < mu[:, 1]].sum())


if __name__ == "__main__":
    from pyro_relax.infer.fab_guide import fit_fab_guide
    from pyro_relax.infer.runner import fit_guide

    model = make_model(data())
    guide, stats = fit_fab_guide(model, steps=300, seed=0)
    s, lw = guide.importance_weights(4000)
    print(f"FAB: mass with mu_1 < mu_2 = {mass_below_diagonal(s['mu'], lw):.3f}")
    fit = fit_guide(model, "flow", steps=1000, seed=0, init="feasible")
    s, lw = fit.guide.importance_weights(4000)
    print(f"reverse KL: mass with mu_1 < mu_2 = {mass_below_diagonal(s['mu'], lw):.3f}")
