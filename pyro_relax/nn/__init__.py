"""Small networks: MLPs, conditioners, score networks."""

from pyro_relax.nn.mlp import MLP
from pyro_relax.nn.score import ScoreMLP, TimeEmbedding

__all__ = ["MLP", "ScoreMLP", "TimeEmbedding"]
