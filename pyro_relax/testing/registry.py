"""The registry of layer factories that every generic check runs on.

Add a :class:`LayerCase` to the ``CASES`` list of a ``cases_*.py`` module and
the layer gets every check in :mod:`pyro_relax.testing.checks` (the tests in
``tests/test_layers_generic.py`` are parametrized over :data:`REGISTRY`).
"""

from __future__ import annotations

__all__ = ["REGISTRY", "LayerCase", "get_case", "normal_data"]

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.distributions import Transform

from pyro_relax.core import RelaxedLayer
from pyro_relax.distributions.adapter import as_layer


def normal_data(shape: torch.Size, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Standard normal data of a given full shape (the default ``sample_data``)."""
    return torch.randn(shape, dtype=dtype, device=device)


@dataclass(frozen=True)
class LayerCase:
    """One layer factory of the registry.

    Arguments:
        name: a readable id for the test reports.
        make: builds the layer (or Pyro transform) for a data event shape.
        event_shapes: data event shapes the checks try.
        sample_data: draws data-side inputs of a full shape (``batch + event``)
            in the layer's domain with the global torch RNG.
        meta: whether every operation of the layer runs on the ``meta`` device.
        grad_exempt: parameter names that need not get a gradient from
            ``decode`` (e.g. a sign classifier whose sign is sampled discretely).
        conditional: size of the context the layer takes (0 for none).
    """

    name: str
    make: Callable[[torch.Size], RelaxedLayer | Transform]
    event_shapes: tuple[tuple[int, ...], ...] = ((2,), (3,), (5,))
    sample_data: Callable[[torch.Size, torch.dtype, torch.device | str], torch.Tensor] = normal_data
    meta: bool = True
    grad_exempt: frozenset[str] = field(default_factory=frozenset)
    conditional: int = 0

    def build(self, event_shape: tuple[int, ...] | None = None) -> RelaxedLayer:
        """The layer for ``event_shape`` (the first listed by default), as a RelaxedLayer."""
        shape = torch.Size(event_shape or self.event_shapes[0])
        return as_layer(self.make(shape))

    def __repr__(self) -> str:
        return self.name


def _collect() -> list[LayerCase]:
    from pyro_relax.testing import (
        cases_bijections,
        cases_core,
        cases_generative,
        cases_snf,
        cases_stochastic,
        cases_surjections,
    )

    cases: list[LayerCase] = []
    modules = (
        cases_core,
        cases_bijections,
        cases_surjections,
        cases_generative,
        cases_stochastic,
        cases_snf,
    )
    for module in modules:
        cases.extend(module.CASES)
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"duplicate layer case names in the registry: {sorted(dupes)}")
    return cases


REGISTRY: list[LayerCase] = _collect()


def get_case(name: str) -> LayerCase:
    """The registered case called ``name``."""
    for case in REGISTRY:
        if case.name == name:
            return case
    raise ValueError(f"no layer case {name!r}; known: {[c.name for c in REGISTRY]}")
