"""Registry cases: snf (filled in as the layers land)."""

from __future__ import annotations

__all__ = ["CASES"]

from pyro_relax.testing.registry import LayerCase

CASES: list[LayerCase] = []
