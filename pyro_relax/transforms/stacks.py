"""Ready-made stacks of Pyro coupling transforms (the 'plain flow' baselines)."""

from __future__ import annotations

__all__ = ["coupling_stack"]

import pyro.distributions.transforms as T
import torch


def coupling_stack(
    dim: int,
    num_layers: int = 4,
    hidden: int = 64,
    kind: str = "spline",
    count_bins: int = 8,
    bound: float = 4.0,
) -> list[torch.distributions.Transform]:
    """Alternating coupling layers and reversals, as a list for a flow (base to data).

    Arguments:
        dim: event size (at least 2 for a coupling layer; 1 gives elementwise splines).
        num_layers: number of coupling layers.
        hidden: width of the two hidden layers of each conditioner.
        kind: ``"spline"`` (rational-quadratic, Durkan et al. 2019) or ``"affine"`` (RealNVP).
        count_bins: spline bins.
        bound: spline tail bound (identity outside ``[-bound, bound]``).

    Example:
        >>> len(coupling_stack(2, num_layers=3))
        5
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"coupling_stack: expected a positive int dim, got {dim!r}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"coupling_stack: expected num_layers >= 1, got {num_layers!r}")
    if kind not in ("spline", "affine"):
        raise ValueError(f"coupling_stack: expected kind 'spline' or 'affine', got {kind!r}")
    layers: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        if dim == 1:
            layers.append(T.Spline(1, count_bins=count_bins, bound=bound))
            continue
        if kind == "spline":
            layers.append(
                T.spline_coupling(
                    dim, hidden_dims=[hidden, hidden], count_bins=count_bins, bound=bound
                )
            )
        else:
            layers.append(T.affine_coupling(dim, hidden_dims=[hidden, hidden]))
        if i < num_layers - 1:
            layers.append(T.Permute(torch.arange(dim - 1, -1, -1)))
    return layers
