"""One layer factory of the registry (:class:`LayerCase`) and the helpers the cases share.

The ``cases_*.py`` modules import from here and :mod:`pyro_relax.testing.registry`
collects them, so the imports run one way (no cycle).
"""

from __future__ import annotations

__all__ = ["LayerCase", "event_size", "normal_data"]

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.distributions import Transform

from pyro_relax.core import RelaxedLayer
from pyro_relax.distributions.adapter import as_layer


def normal_data(shape: torch.Size, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Standard normal data of a given full shape (the default ``sample_data``).

    Example:
        >>> normal_data(torch.Size((2, 3)), torch.float64, "cpu").dtype
        torch.float64
    """
    return torch.randn(shape, dtype=dtype, device=device)


def event_size(shape: torch.Size) -> int:
    """The size of the first event dimension: the features of a vector, the channels of an image.

    Example:
        >>> event_size(torch.Size((3, 4, 4)))
        3
    """
    return int(shape[0])


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

    Example:
        >>> from pyro_relax.surjections import SortSurjection
        >>> case = LayerCase("sort", lambda s: SortSurjection())
        >>> case, type(case.build()).__name__
        (sort, 'SortSurjection')
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
        """The case's name (the test id)."""
        return self.name
