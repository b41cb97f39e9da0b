"""MCMC kernels driven by ``pyro.infer.MCMC``: MALA, guide-proposal IMH, and NeuTra NUTS.

The kernels are thin drivers over :mod:`pyro_relax.ops`; their shared bookkeeping
is :class:`~pyro_relax.infer.kernels.base.ChainKernel`.
"""

from pyro_relax.infer.kernels.base import ChainKernel
from pyro_relax.infer.kernels.imh import FlowIMH
from pyro_relax.infer.kernels.mala import MALA
from pyro_relax.infer.kernels.neutra import NeuTraNUTS, neutra
from pyro_relax.infer.kernels.proposal import AutoContinuousProposal, Proposal

__all__ = [
    "MALA",
    "AutoContinuousProposal",
    "ChainKernel",
    "FlowIMH",
    "NeuTraNUTS",
    "Proposal",
    "neutra",
]
