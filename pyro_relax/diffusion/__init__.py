"""Diffusion and score-based models: SDEs, DDPM, score models, DiffFlow, samplers, likelihood."""

from pyro_relax.diffusion.ddpm import DDPM, DDPMSchedule
from pyro_relax.diffusion.ddpm_samplers import ddim, ddpm_ancestral
from pyro_relax.diffusion.diffflow import DiffFlow, path_log_weight, time_grid
from pyro_relax.diffusion.distribution import DiffusionDistribution
from pyro_relax.diffusion.divergence import exact_divergence, hutchinson_divergence
from pyro_relax.diffusion.gaussian import GaussianNoisePredictor, GaussianScore
from pyro_relax.diffusion.likelihood import (
    bits_per_dim,
    dequantize,
    dequantized_log_prob,
    ode_log_prob,
)
from pyro_relax.diffusion.samplers import (
    euler_maruyama,
    predictor_corrector,
    probability_flow,
)
from pyro_relax.diffusion.score_model import ScoreModel, ScoreProcess
from pyro_relax.diffusion.sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "DDPM",
    "DDPMSchedule",
    "DiffFlow",
    "DiffusionDistribution",
    "GaussianNoisePredictor",
    "GaussianScore",
    "SDE",
    "ScoreModel",
    "ScoreProcess",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "ddim",
    "ddpm_ancestral",
    "dequantize",
    "dequantized_log_prob",
    "euler_maruyama",
    "exact_divergence",
    "hutchinson_divergence",
    "ode_log_prob",
    "path_log_weight",
    "predictor_corrector",
    "probability_flow",
    "time_grid",
]
