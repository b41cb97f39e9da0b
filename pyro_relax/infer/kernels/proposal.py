"""Proposals for independence MH: the interface, and an adapter for Pyro's AutoContinuous."""

from __future__ import annotations

__all__ = ["AutoContinuousProposal", "Proposal", "unconstrained_layout"]

from collections import OrderedDict
from typing import Protocol, runtime_checkable

import torch
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor


def unconstrained_layout(guide: AutoContinuous) -> OrderedDict[str, torch.Size]:
    """Site name to unconstrained shape, in the packing order of a run ``AutoContinuous`` guide.

    Read from the guide's prototype trace with Pyro's default ``biject_to``
    transforms, as ``AutoContinuous`` packs its latent vector.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoMultivariateNormal
        >>> pyro.clear_param_store()
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        >>> guide = AutoMultivariateNormal(model)
        >>> _ = guide()
        >>> dict(unconstrained_layout(guide))
        {'s': torch.Size([]), 'x': torch.Size([3])}
    """
    if getattr(guide, "prototype_trace", None) is None:
        raise ValueError("unconstrained_layout: expected a guide that has been run, got none")
    return OrderedDict(
        (name, biject_to(site["fn"].support).inv(site["value"]).shape)
        for name, site in guide.prototype_trace.iter_stochastic_nodes()
    )


@runtime_checkable
class Proposal(Protocol):
    """What :class:`FlowIMH` needs from a guide: flat unconstrained draws with log densities."""

    latent_dim: int

    def sample_unconstrained(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """Draw ``(z, log_q)`` with shapes ``(num_samples, latent_dim)`` and ``(num_samples,)``."""
        ...


class AutoContinuousProposal:
    """Adapter giving any set-up Pyro ``AutoContinuous`` guide the :class:`Proposal` interface.

    Draws come from ``guide.get_posterior()`` (a distribution over the flat
    unconstrained latent vector) and ``log_q`` is its exact ``log_prob``; a
    guide with its own ``sample_unconstrained`` (pyro-relax's) is used as is.

    Arguments:
        guide: an ``AutoContinuous`` guide that has been run at least once
            (e.g. trained with SVI), so its prototype trace exists.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoLowRankMultivariateNormal
        >>> pyro.clear_param_store()
        >>> scale_model = lambda: pyro.sample("scale", dist.HalfCauchy(torch.ones(3)).to_event(1))
        >>> low_rank = AutoLowRankMultivariateNormal(scale_model, rank=1)
        >>> _ = low_rank()
        >>> draws, log_q = AutoContinuousProposal(low_rank).sample_unconstrained(5)
        >>> tuple(draws.shape), tuple(log_q.shape)
        ((5, 3), (5,))
    """

    def __init__(self, guide: AutoContinuous) -> None:
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                f"AutoContinuousProposal: expected an AutoContinuous guide, got "
                f"{type(guide).__name__}"
            )
        if getattr(guide, "prototype_trace", None) is None:
            raise ValueError(
                "AutoContinuousProposal: expected a guide that has been run (trained), "
                "got one without a prototype trace; call guide(*model_args) once first"
            )
        self.guide = guide

    @property
    def latent_dim(self) -> int:
        """Size of the flat unconstrained latent vector."""
        return int(self.guide.latent_dim)

    def sample_unconstrained(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """Draw ``num_samples`` flat latents and their exact log densities.

        Arguments:
            num_samples: number of draws, ``>= 1``.

        Returns:
            ``(z, log_q)`` of shapes ``(num_samples, latent_dim)`` and ``(num_samples,)``.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"sample_unconstrained: expected num_samples >= 1, got {num_samples!r}"
            )
        own = getattr(self.guide, "sample_unconstrained", None)
        if callable(own):  # pyro-relax guides: their get_posterior is a single-draw Delta
            return own(num_samples)
        with torch.no_grad():
            posterior = self.guide.get_posterior()
            z = posterior.sample((num_samples,))
            return z, posterior.log_prob(z)
