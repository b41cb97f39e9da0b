"""Automatic non-centering: Pyro's ``LocScaleReparam`` on a model's local location-scale sites.

A centered hierarchy ``theta_i ~ N(mu, tau)`` has a funnel between ``tau``
and the ``theta_i`` when the groups have little data; its non-centered form
``theta_i = mu + tau * eps_i``, ``eps_i ~ N(0, 1)`` has none, but gets one
of its own when the groups have much data. Which one a guide fits better is
an empirical question, so :func:`choose_noncentering` asks it: it fits the
caller's guide to both forms and keeps the one with the higher ELBO (both are
bounds on the same evidence: the reparametrized site becomes a deterministic
function of ``{name}_decentered``), and says which sites were changed.

:func:`loc_scale_sites` finds the candidates (latent sites inside a plate, on
the reals, whose distribution has a ``loc`` and a ``scale``);
:func:`noncentered` applies the reparametrization.
"""

from __future__ import annotations

__all__ = ["NonCentering", "choose_noncentering", "loc_scale_sites", "noncentered"]

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.infer.reparam import LocScaleReparam
from pyro.poutine.util import prune_subsample_sites

from pyro_relax.infer.guides.hierarchy import conditional_prior, latent_structure


def loc_scale_sites(model: Callable[..., Any], *args: Any, **kwargs: Any) -> list[str]:  # noqa: ANN401
    """The local latent sites that ``LocScaleReparam`` can non-center, in the model's order.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
        ...     with pyro.plate("J", 3):
        ...         pyro.sample("theta", dist.Normal(0.0, tau))
        ...         pyro.sample("rate", dist.Gamma(2.0, tau))
        >>> loc_scale_sites(model)
        ['theta']
    """
    if not callable(model):
        raise TypeError(f"loc_scale_sites: expected a callable model, got {type(model).__name__}")
    with torch.no_grad(), poutine.block():
        trace = prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs))
    local = {s for b in latent_structure(trace).blocks for s in b.sites}
    with_loc_scale = conditional_prior(model, {}, args, kwargs)
    return [name for name, _ in trace.iter_stochastic_nodes()
            if name in local and name in with_loc_scale]


def noncentered(model: Callable[..., Any], sites: Sequence[str]) -> Callable[..., Any]:
    """``model`` with each of ``sites`` fully non-centered by Pyro's ``LocScaleReparam``.

    The site ``name`` becomes a deterministic function of a new latent site
    ``{name}_decentered`` with a standard (zero-loc, unit-scale) prior.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro import poutine
        >>> def model():
        ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
        ...     with pyro.plate("J", 3):
        ...         pyro.sample("theta", dist.Normal(0.0, tau))
        >>> tr = poutine.trace(noncentered(model, ["theta"])).get_trace()
        >>> [n for n in tr.stochastic_nodes if n != "J"]  # J: the plate's subsample site
        ['tau', 'theta_decentered']
    """
    if not callable(model):
        raise TypeError(f"noncentered: expected a callable model, got {type(model).__name__}")
    if isinstance(sites, str) or not all(isinstance(s, str) for s in sites):
        raise TypeError(f"noncentered: expected a sequence of site names, got {sites!r}")
    return poutine.reparam(model, config={s: LocScaleReparam(centered=0.0) for s in sites})


@dataclass(frozen=True)
class NonCentering:
    """What :func:`choose_noncentering` chose.

    Attributes:
        model: the model to use (the given one, or its non-centered form).
        sites: the sites that were non-centered (empty: the model was kept).
        candidates: the sites that could be.
        elbo_centered: the ELBO the caller's fit reached on the given model.
        elbo_noncentered: the same on the non-centered model (``nan`` without candidates).
    """

    model: Callable[..., Any]
    sites: tuple[str, ...]
    candidates: tuple[str, ...]
    elbo_centered: float
    elbo_noncentered: float

    def describe(self) -> str:
        """One line: which sites were reparameterized and the two ELBOs."""
        if not self.candidates:
            return "no location-scale local site to non-center"
        which = ", ".join(self.sites) if self.sites else "none (centered kept)"
        return (
            f"non-centered: {which}; ELBO centered {self.elbo_centered:.3f}, "
            f"non-centered {self.elbo_noncentered:.3f}"
        )


def choose_noncentering(
    model: Callable[..., Any],
    fit: Callable[[Callable[..., Any]], float],
    *args: Any,  # noqa: ANN401 - the model's arguments
    margin: float = 0.0,
    **kwargs: Any,  # noqa: ANN401
) -> NonCentering:
    """Fit a guide to the centered and the non-centered model; keep the higher ELBO.

    Arguments:
        model: a Pyro model.
        fit: ``fit(model) -> elbo``: fits the caller's guide to a model and
            returns its ELBO estimate (e.g. the mean of ``log p - log q`` over
            a few thousand draws), so any guide and budget can be compared.
        *args: the model's arguments (to find the candidate sites).
        margin: the ELBO gain (nats) the non-centered form must show to be chosen.
        **kwargs: the model's keyword arguments.

    Returns:
        The :class:`NonCentering`, whose ``describe()`` says which sites
        were reparameterized.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
        ...     with pyro.plate("J", 3):
        ...         pyro.sample("theta", dist.Normal(0.0, tau))
        >>> elbo = lambda m: 0.0 if m is model else 1.0  # a stand-in for a real fit
        >>> choose_noncentering(model, elbo).describe()
        'non-centered: theta; ELBO centered 0.000, non-centered 1.000'
    """
    if not callable(fit):
        raise TypeError(f"choose_noncentering: expected a callable fit, got {type(fit).__name__}")
    if not (isinstance(margin, int | float) and math.isfinite(margin)):
        raise ValueError(f"choose_noncentering: expected a finite margin, got {margin!r}")
    candidates = tuple(loc_scale_sites(model, *args, **kwargs))
    elbo_c = float(fit(model))
    if not candidates:
        return NonCentering(model, (), (), elbo_c, math.nan)
    other = noncentered(model, candidates)
    elbo_nc = float(fit(other))
    if elbo_nc > elbo_c + margin:
        return NonCentering(other, candidates, candidates, elbo_c, elbo_nc)
    return NonCentering(model, (), candidates, elbo_c, elbo_nc)
