"""Shared checkers, hypothesis strategies and the layer registry, for our tests and yours."""

from pyro_relax.testing import checks
from pyro_relax.testing.case import LayerCase
from pyro_relax.testing.registry import REGISTRY, get_case

__all__ = ["REGISTRY", "LayerCase", "checks", "get_case"]
