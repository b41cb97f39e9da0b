"""Stochastic layers: SNF blocks (Langevin, MALA, underdamped Langevin, MH, HMC),
the VAE layer, and the stochastic normalizing flow with its path weights."""

from pyro_relax.stochastic.annealing import (
    AnnealedBlock,
    AnnealedDensity,
    LearnedSchedule,
    geometric_schedule,
    linear_schedule,
)
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.langevin import MALABlock, OverdampedLangevin
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.snf import (
    StochasticNormalizingFlow,
    ess_from_log_weights,
    log_Z_from_log_weights,
    self_normalized_expectation,
)
from pyro_relax.stochastic.underdamped import UnderdampedLangevin
from pyro_relax.stochastic.vae import VAELayer

__all__ = [
    "HMCBlock",
    "MALABlock",
    "AnnealedBlock",
    "AnnealedDensity",
    "LearnedSchedule",
    "OverdampedLangevin",
    "RandomWalkMH",
    "StochasticNormalizingFlow",
    "UnderdampedLangevin",
    "VAELayer",
    "ess_from_log_weights",
    "geometric_schedule",
    "linear_schedule",
    "log_Z_from_log_weights",
    "self_normalized_expectation",
]
