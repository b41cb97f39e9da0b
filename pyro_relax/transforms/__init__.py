"""Bijective TransformModules Pyro lacks, and ready-made stacks."""

from pyro_relax.transforms.stacks import coupling_stack

__all__ = ["coupling_stack"]
