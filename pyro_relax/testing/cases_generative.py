"""Registry cases: generative surjections (augment, dequantization, generative abs and sort).

No case needs ``grad_exempt``: every parameter of these layers sits in the
conditional ``q`` whose log-density at the pair is ``decode``'s ``S``, so
``decode`` reaches all of them.
"""

from __future__ import annotations

__all__ = ["CASES"]

import torch

from pyro_relax.surjections.augment import AugmentSurjection
from pyro_relax.surjections.dequantization import UniformDequantization, VariationalDequantization
from pyro_relax.surjections.generative_abs import GenerativeAbs
from pyro_relax.surjections.generative_sort import GenerativeSort
from pyro_relax.testing.case import LayerCase, event_size

NUM_BINS = 8


def integer_data(shape: torch.Size, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Integers in ``{0, ..., NUM_BINS - 1}`` stored as floats (dequantization inputs)."""
    return torch.randint(0, NUM_BINS, tuple(shape), device=device).to(dtype)


def non_negative_data(
    shape: torch.Size, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Half-normal data (the domain of :class:`GenerativeAbs`)."""
    return torch.randn(shape, dtype=dtype, device=device).abs()


def sorted_data(shape: torch.Size, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Normal vectors sorted ascending along the last dimension (for :class:`GenerativeSort`)."""
    return torch.randn(shape, dtype=dtype, device=device).sort(dim=-1).values


CASES: list[LayerCase] = [
    LayerCase("augment", lambda s: AugmentSurjection(event_size(s), extra=2, hidden=(8,))),
    LayerCase(
        "augment_conditional",
        lambda s: AugmentSurjection(event_size(s), extra=1, hidden=(8,), context_dim=3),
        conditional=3,
    ),
    LayerCase(
        "uniform_dequantization",
        lambda s: UniformDequantization(NUM_BINS),
        sample_data=integer_data,
    ),
    LayerCase(
        "uniform_dequantization_event3",
        lambda s: UniformDequantization(NUM_BINS, event_dim=3),
        event_shapes=((1, 2, 3), (2, 2, 2)),
        sample_data=integer_data,
    ),
    LayerCase(
        "variational_dequantization",
        lambda s: VariationalDequantization(event_size(s), NUM_BINS, hidden=(8,)),
        sample_data=integer_data,
    ),
    LayerCase(
        "variational_dequantization_conditional",
        lambda s: VariationalDequantization(event_size(s), NUM_BINS, hidden=(8,), context_dim=3),
        sample_data=integer_data,
        conditional=3,
    ),
    LayerCase(
        "generative_abs",
        lambda s: GenerativeAbs(event_size(s), hidden=(8,)),
        sample_data=non_negative_data,
    ),
    LayerCase(
        "generative_sort",
        lambda s: GenerativeSort(event_size(s), hidden=(8,)),
        sample_data=sorted_data,
    ),
]
