"""Small networks: MLPs, conditioners, score networks."""

from pyro_relax.nn.mlp import MLP

__all__ = ["MLP"]
