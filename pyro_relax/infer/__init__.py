"""Training loops, autoguides and MCMC kernels, the model as a Potential, the one verdict.

Guides: :mod:`pyro_relax.infer.guides`; kernels: :mod:`pyro_relax.infer.kernels`;
the runs behind the command line: :mod:`pyro_relax.infer.runner`.
"""

from pyro_relax.infer.density import count_parameters, evaluate_nll, fit_density
from pyro_relax.infer.draws import Verdict, WeightedDraws, verdict
from pyro_relax.infer.guides import (
    AutoDiffusionGuide,
    AutoFlowGuide,
    AutoHierarchicalGuide,
    AutoSNFGuide,
)
from pyro_relax.infer.kernels import MALA, FlowIMH, NeuTraNUTS, neutra
from pyro_relax.infer.model import Potential
from pyro_relax.infer.snf_training import (
    SNFTrainer,
    forward_kl_loss,
    mixed_kl_loss,
    reverse_kl_loss,
    train_snf,
)

__all__ = [
    "MALA",
    "AutoDiffusionGuide",
    "AutoFlowGuide",
    "AutoHierarchicalGuide",
    "AutoSNFGuide",
    "FlowIMH",
    "NeuTraNUTS",
    "Potential",
    "SNFTrainer",
    "Verdict",
    "WeightedDraws",
    "count_parameters",
    "evaluate_nll",
    "fit_density",
    "forward_kl_loss",
    "mixed_kl_loss",
    "neutra",
    "reverse_kl_loss",
    "train_snf",
    "verdict",
]
