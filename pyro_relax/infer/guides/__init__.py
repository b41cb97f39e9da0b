"""Autoguides for any Pyro model: flows, stochastic flows, diffusions, hierarchical.

The hierarchical guide reads the model's plates (globals, then locals given them).
All are Pyro ``AutoContinuous`` guides returning their path sample as a Delta with
its log-density estimate, so ``Trace_ELBO`` optimizes the auxiliary-variable
(path-weight) bound (see :mod:`pyro_relax.infer.guides.base`).
"""

from pyro_relax.infer.guides.base import RelaxedGuideMixin
from pyro_relax.infer.guides.diffusion import AutoDiffusionGuide
from pyro_relax.infer.guides.flow import AutoFlowGuide, LocScaleTransform, build_flow_layers
from pyro_relax.infer.guides.snf import BLOCKS, AutoSNFGuide
from pyro_relax.infer.guides.structured import AutoHierarchicalGuide

__all__ = [
    "BLOCKS",
    "AutoDiffusionGuide",
    "AutoFlowGuide",
    "AutoHierarchicalGuide",
    "AutoSNFGuide",
    "LocScaleTransform",
    "RelaxedGuideMixin",
    "build_flow_layers",
]
