"""Registry cases: the abs surjection and Pyro's own bijective transforms.

Pyro's transforms are here to prove they stack with our layers unchanged: the
generic checks run on them through :class:`~pyro_relax.distributions.TransformLayer`.
"""

from __future__ import annotations

__all__ = ["CASES"]

import pyro.distributions.transforms as T
import torch

from pyro_relax.surjections.abs import AbsSurjection
from pyro_relax.testing.case import LayerCase, event_size
from pyro_relax.transforms.stacks import FlipTransform, spline_coupling

CASES: list[LayerCase] = [
    LayerCase("abs_fair", lambda s: AbsSurjection()),
    LayerCase(
        "abs_learned",
        lambda s: AbsSurjection(event_size(s), hidden=(8,)),
        grad_exempt=frozenset(),
    ),
    LayerCase("pyro_affine_coupling", lambda s: T.affine_coupling(event_size(s), hidden_dims=[8])),
    LayerCase(
        "pyro_spline_coupling",
        lambda s: T.spline_coupling(event_size(s), hidden_dims=[8], count_bins=4),
        meta=False,  # Pyro's spline masks its tails with nonzero(), which has no meta kernel
    ),
    # Pyro's affine_autoregressive is left out: its AutoRegressiveNN keeps its masks
    # as plain tensors, so ``.double()`` and ``.to(device)`` leave them behind and the
    # float64 and meta checks fail inside Pyro (pyro-ppl 1.9.2).
    LayerCase("flip", lambda s: FlipTransform()),
    LayerCase(
        "spline_coupling_fast_density",
        lambda s: spline_coupling(event_size(s), 8, count_bins=4, order="quadratic").inv,
        meta=False,  # Pyro's spline masks its tails with nonzero(), which has no meta kernel
    ),
    LayerCase(
        "pyro_inverse_affine_coupling",
        lambda s: T.affine_coupling(event_size(s), hidden_dims=[8]).inv,
    ),
    LayerCase(
        "pyro_permute",
        lambda s: T.Permute(torch.arange(event_size(s) - 1, -1, -1)),
    ),
    LayerCase(
        "pyro_conditional_affine_coupling",
        lambda s: T.conditional_affine_coupling(event_size(s), context_dim=3, hidden_dims=[8]),
        conditional=3,
    ),
]
