"""Registry cases: the inference surjections of SurVAE Flows (sort, max, max pooling, slice).

The abs surjection's cases live in :mod:`pyro_relax.testing.cases_core`.
"""

from __future__ import annotations

__all__ = ["CASES"]

import torch

from pyro_relax.surjections.max import MaxSurjection
from pyro_relax.surjections.maxpool import MaxPool2dSurjection
from pyro_relax.surjections.slice import SliceSurjection
from pyro_relax.surjections.sort import SortSurjection
from pyro_relax.testing.case import LayerCase, event_size


def _keep(shape: torch.Size) -> int:
    return max(1, int(shape[0]) // 2)


_VECTORS = ((2,), (3,), (5,))
_IMAGES = ((2, 4, 4), (1, 2, 6))

CASES: list[LayerCase] = [
    LayerCase("sort", lambda s: SortSurjection(), event_shapes=_VECTORS),
    LayerCase("sort_rows", lambda s: SortSurjection(event_dim=2), event_shapes=((3, 4), (2, 2))),
    LayerCase(
        "max_fair", lambda s: MaxSurjection(event_size(s), learned=False), event_shapes=_VECTORS
    ),
    LayerCase(
        "max_learned", lambda s: MaxSurjection(event_size(s), hidden=(8,)), event_shapes=_VECTORS
    ),
    LayerCase(
        "max_conditional",
        lambda s: MaxSurjection(event_size(s), hidden=(8,), context_dim=3),
        event_shapes=_VECTORS,
        conditional=3,
    ),
    LayerCase(
        "maxpool2d_fair",
        lambda s: MaxPool2dSurjection(int(s[0]), learned=False),
        event_shapes=_IMAGES,
    ),
    LayerCase(
        "maxpool2d_learned",
        lambda s: MaxPool2dSurjection(int(s[0]), hidden=4),
        event_shapes=_IMAGES,
    ),
    LayerCase(
        "slice",
        lambda s: SliceSurjection(event_size(s), _keep(s), hidden=(8,)),
        event_shapes=_VECTORS,
    ),
    LayerCase(
        "slice_conditional",
        lambda s: SliceSurjection(event_size(s), _keep(s), hidden=(8,), context_dim=3),
        event_shapes=_VECTORS,
        conditional=3,
    ),
]
