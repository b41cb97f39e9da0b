"""Surjective and stochastic layers (SurVAE Flows) and their base class."""

from pyro_relax.surjections.abs import AbsSurjection
from pyro_relax.surjections.base import RelaxedLayer

__all__ = ["AbsSurjection", "RelaxedLayer"]
