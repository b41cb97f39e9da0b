"""Training loops that need more than an ELBO: FAB (flow annealed importance sampling bootstrap)."""

from __future__ import annotations

__all__ = [
    "CountingDensity",
    "FABTrainer",
    "GradientGuard",
    "LatentAIS",
    "PrioritizedBuffer",
    "WarmupCosine",
    "fab_loss",
]

from pyro_relax.train.ais import CountingDensity, LatentAIS
from pyro_relax.train.buffer import PrioritizedBuffer
from pyro_relax.train.fab import FABTrainer, fab_loss
from pyro_relax.train.optim import GradientGuard, WarmupCosine
