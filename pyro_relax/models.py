"""Built-in Pyro models with hard posteriors, for the demo and the benchmarks."""

from __future__ import annotations

__all__ = ["EIGHT_SCHOOLS_SIGMA", "EIGHT_SCHOOLS_Y", "eight_schools_centered", "funnel"]

import pyro
import pyro.distributions as dist
import torch

#: Rubin's (1981) eight schools: estimated effects and their standard errors.
EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def eight_schools_centered() -> None:
    """Centered eight schools: ``theta_j ~ N(mu, tau)`` gives a funnel between tau and theta.

    Example:
        >>> from pyro import poutine
        >>> trace = poutine.trace(eight_schools_centered).get_trace()
        >>> sorted(n for n, s in trace.iter_stochastic_nodes() if n != "schools")  # not the plate
        ['mu', 'tau', 'theta']
    """
    dtype = torch.get_default_dtype()
    y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=dtype)
    sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=dtype)
    mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def funnel(dim: int = 10, scale: float = 3.0) -> None:
    """Neal's funnel as a Pyro model: ``v ~ N(0, scale)``, ``x_i ~ N(0, exp(v / 2))``.

    Example:
        >>> from pyro import poutine
        >>> poutine.trace(funnel).get_trace().nodes["x"]["value"].shape
        torch.Size([9])
    """
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"funnel: expected dim >= 2, got {dim!r}")
    zero = torch.zeros((), dtype=torch.get_default_dtype())
    v = pyro.sample("v", dist.Normal(zero, scale))
    sd = torch.exp(v / 2).unsqueeze(-1).expand(v.shape + (dim - 1,))  # batches of v work too
    pyro.sample("x", dist.Normal(torch.zeros_like(sd), sd).to_event(1))
