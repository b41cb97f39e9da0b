"""Stochastic layers: SNF blocks, the VAE layer, the stochastic normalizing flow.

The blocks (Langevin, MALA, underdamped Langevin, MH, HMC) are thin drivers over
:mod:`pyro_relax.ops`; the flow computes the path weights.
"""

from pyro_relax.stochastic.block import AnnealedBlock, BlockOptions
from pyro_relax.stochastic.density import AnnealedDensity
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.langevin import MALABlock, OverdampedLangevin
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.schedules import LearnedSchedule, geometric_schedule, linear_schedule
from pyro_relax.stochastic.snf import (
    SNFDistribution,
    StochasticNormalizingFlow,
    ess_from_log_weights,
    log_Z_from_log_weights,
    self_normalized_expectation,
)
from pyro_relax.stochastic.trace import BlockInfo, BlockTrace, trace_blocks
from pyro_relax.stochastic.underdamped import UnderdampedLangevin
from pyro_relax.stochastic.vae import VAELayer

__all__ = [
    "AnnealedBlock",
    "AnnealedDensity",
    "BlockInfo",
    "BlockOptions",
    "BlockTrace",
    "HMCBlock",
    "LearnedSchedule",
    "MALABlock",
    "OverdampedLangevin",
    "RandomWalkMH",
    "SNFDistribution",
    "StochasticNormalizingFlow",
    "UnderdampedLangevin",
    "VAELayer",
    "ess_from_log_weights",
    "geometric_schedule",
    "linear_schedule",
    "log_Z_from_log_weights",
    "self_normalized_expectation",
    "trace_blocks",
]
