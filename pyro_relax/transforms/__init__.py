"""Bijective TransformModules Pyro lacks (Glow lineage), and ready-made stacks."""

from pyro_relax.transforms.actnorm import ActNorm
from pyro_relax.transforms.conv1x1 import InvertibleConv1x1
from pyro_relax.transforms.lu_linear import LULinear, LUWeight
from pyro_relax.transforms.rqs import RQSCoupling
from pyro_relax.transforms.stacks import coupling_stack, density_stack

__all__ = [
    "ActNorm",
    "InvertibleConv1x1",
    "LULinear",
    "LUWeight",
    "RQSCoupling",
    "coupling_stack",
    "density_stack",
]
