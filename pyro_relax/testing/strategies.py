"""Hypothesis strategies for layer property tests."""

from __future__ import annotations

__all__ = ["batch_shapes", "layer_cases", "seeds"]

from collections.abc import Callable

from hypothesis import strategies as st

from pyro_relax.testing.registry import REGISTRY, LayerCase


def batch_shapes(max_dims: int = 2, max_side: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Batch shapes with 0 to ``max_dims`` dimensions of size 1 to ``max_side``."""
    return st.lists(st.integers(1, max_side), min_size=0, max_size=max_dims).map(tuple)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.manual_seed``."""
    return st.integers(0, 2**31 - 1)


def layer_cases(
    where: Callable[[LayerCase], bool] = lambda c: True,
) -> st.SearchStrategy[LayerCase]:
    """Registered cases satisfying ``where``."""
    chosen = [c for c in REGISTRY if where(c)]
    if not chosen:
        raise ValueError("layer_cases: no registered case satisfies the filter")
    return st.sampled_from(chosen)
