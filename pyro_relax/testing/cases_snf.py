"""Registry cases: the SNF blocks (Langevin, MALA, underdamped Langevin, MH, HMC).

Each block gets a small isotropic Gaussian target (:class:`GaussianLogDensity`,
an ``nn.Module`` so it follows ``.to``/``.double()`` and pickles) and, where
the case anneals, the standard normal as the base. The learnable step sizes,
masses, frictions and lambdas all take part in the gradient checks.
"""

from __future__ import annotations

__all__ = ["CASES", "GaussianLogDensity"]

import math

import torch
from torch import Tensor, nn

from pyro_relax.stochastic.density import standard_normal_log_prob
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.langevin import MALABlock, OverdampedLangevin
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.underdamped import UnderdampedLangevin
from pyro_relax.testing.case import LayerCase


class GaussianLogDensity(nn.Module):
    """Normalized ``log N(x; loc, scale^2 I)`` over the last dimension (any size).

    Example:
        >>> import torch
        >>> round(float(GaussianLogDensity(0.0, 1.0)(torch.zeros(2))), 4)
        -1.8379
    """

    loc: Tensor
    scale: Tensor

    def __init__(self, loc: float = 0.5, scale: float = 1.5) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"GaussianLogDensity: expected scale > 0, got {scale!r}")
        self.register_buffer("loc", torch.tensor(float(loc)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def log_prob(self, x: Tensor) -> Tensor:
        """The normalized log density, shape ``x.shape[:-1]``."""
        loc, scale = self.loc.to(x.dtype), self.scale.to(x.dtype)
        z = (x - loc) / scale
        d = x.shape[-1]
        return -0.5 * z.square().sum(-1) - d * (scale.log() + 0.5 * math.log(2 * math.pi))

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)


def _annealed() -> dict:
    return {
        "target": GaussianLogDensity(),
        "base": standard_normal_log_prob,
        "lam": 0.5,
        "learn_lam": True,
        "learn_step_size": True,
    }


CASES: list[LayerCase] = [
    LayerCase(
        "snf_langevin",
        lambda s: OverdampedLangevin(step_size=0.05, n_steps=2, **_annealed()),
    ),
    LayerCase(
        "snf_langevin_target", lambda s: OverdampedLangevin(GaussianLogDensity(), step_size=0.1)
    ),
    LayerCase("snf_mala", lambda s: MALABlock(step_size=0.2, n_steps=2, **_annealed())),
    LayerCase(
        "snf_underdamped",
        lambda s: UnderdampedLangevin(
            step_size=0.2, n_steps=3, learn_friction=True, learn_mass=True, **_annealed()
        ),
    ),
    LayerCase("snf_rwmh", lambda s: RandomWalkMH(step_size=0.5, n_steps=3, **_annealed())),
    LayerCase(
        "snf_hmc",
        lambda s: HMCBlock(step_size=0.2, n_leapfrog=3, n_steps=2, learn_mass=True, **_annealed()),
    ),
]
