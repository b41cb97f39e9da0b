"""MCMC kernels driven by ``pyro.infer.MCMC``: MALA, guide-proposal IMH, and NeuTra NUTS."""

from pyro_relax.infer.kernels.imh import FlowIMH
from pyro_relax.infer.kernels.mala import MALA
from pyro_relax.infer.kernels.neutra import NeuTraNUTS, neutra
from pyro_relax.infer.kernels.proposal import AutoContinuousProposal, Proposal

__all__ = ["AutoContinuousProposal", "FlowIMH", "MALA", "NeuTraNUTS", "Proposal", "neutra"]
