"""Ready-made stacks of Pyro coupling transforms (the 'plain flow' baselines)."""

from __future__ import annotations

__all__ = [
    "DENSITY_BINS",
    "FlipTransform",
    "coupling_stack",
    "density_stack",
    "identity_spline",
    "spline_coupling",
]

import math

import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.nn import DenseNN
from torch import Tensor

from pyro_relax.core.checks import check_positive_int
from pyro_relax.transforms.actnorm import ActNorm
from pyro_relax.transforms.rqs import RQSCoupling

_MIN_DERIVATIVE = 1e-3  # Pyro's spline adds it to softplus of the unnormalized derivatives

DENSITY_BINS = 15
"""Bins of :func:`density_stack`: at 8 layers of 2 x 64 units in 2-D, 57,184 parameters
against the 58,736 of zuko's NSF with its 8 bins (``benchmarks/density.py --peers``)."""


class FlipTransform(T.Transform):
    """Reverse the order of the last dimension (a permutation with no index tensor).

    Unlike ``pyro.distributions.transforms.Permute``, it holds no CPU index
    tensor, so a flow holding it moves to CUDA as a whole.

    Example:
        >>> import torch
        >>> FlipTransform()(torch.tensor([1.0, 2.0, 3.0]))
        tensor([3., 2., 1.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    volume_preserving = True

    def __eq__(self, other: object) -> bool:
        """All flips are equal (they hold nothing)."""
        return isinstance(other, FlipTransform)

    def __hash__(self) -> int:
        """One hash for every flip."""
        return hash(FlipTransform)

    def _call(self, x: Tensor) -> Tensor:
        return x.flip(-1)

    def _inverse(self, y: Tensor) -> Tensor:
        return y.flip(-1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """Zero: a permutation preserves volume."""
        return x.new_zeros(x.shape[:-1])


def spline_coupling(
    dim: int, hidden: int = 64, count_bins: int = 8, bound: float = 4.0, order: str = "linear"
) -> T.SplineCoupling:
    """Pyro's rational-quadratic spline coupling with the first half passed through unchanged.

    Pyro's own ``spline_coupling`` helper also applies an unconditional spline
    to the first half (``identity=False``); measured in ``benchmarks/density.py``
    that costs 1.6x the step time and fits no better, so our stacks skip it.

    Example:
        >>> spline_coupling(4, hidden=8).split_dim
        2
    """
    split = dim // 2
    rest = dim - split
    net = DenseNN(
        split,
        [hidden, hidden],
        param_dims=[rest * count_bins, rest * count_bins, rest * (count_bins - 1)]
        + ([rest * count_bins] if order == "linear" else []),
    )
    coupling = T.SplineCoupling(
        dim, split, net, count_bins=count_bins, bound=bound, order=order, identity=True
    )
    # With identity=True Pyro never calls its first-half spline; drop its unused parameters.
    coupling.lower_spline = torch.nn.Identity()
    return coupling


def identity_spline(dim: int, count_bins: int = 8, bound: float = 4.0) -> T.Spline:
    """Pyro's elementwise spline started at the identity (uniform bins, unit slopes).

    Pyro starts its ``Spline`` from random parameters: a random monotone map
    whose density is far from anything (9.4 nats on N(0, 1) data), which the
    fit then has to undo. Started at the identity, a stack of them begins as
    its base.

    Example:
        >>> import torch
        >>> x = torch.linspace(-5.0, 5.0, 7).unsqueeze(-1)
        >>> torch.allclose(identity_spline(1)(x), x, atol=1e-3)  # Pyro: slopes 1 - 1e-3 at the ends
        True
    """
    spline = T.Spline(dim, count_bins=count_bins, bound=bound)
    with torch.no_grad():
        spline.unnormalized_widths.zero_()
        spline.unnormalized_heights.zero_()
        spline.unnormalized_derivatives.fill_(math.log(math.expm1(1.0 - _MIN_DERIVATIVE)))
        spline.unnormalized_lambdas.zero_()
    return spline


def coupling_stack(
    dim: int,
    num_layers: int = 4,
    hidden: int = 64,
    kind: str = "spline",
    count_bins: int = 8,
    bound: float = 4.0,
    fast_density: bool = False,
) -> list[torch.distributions.Transform]:
    """Alternating coupling layers and reversals, as a list for a flow (base to data).

    Arguments:
        dim: event size (at least 2 for a coupling layer; 1 gives elementwise splines).
        num_layers: number of coupling layers.
        hidden: width of the two hidden layers of each conditioner.
        kind: ``"spline"`` (rational-quadratic, Durkan et al. 2019) or ``"affine"`` (RealNVP).
        count_bins: spline bins.
        bound: spline tail bound (identity outside ``[-bound, bound]``).
        fast_density: for ``kind="spline"``, use quadratic splines inserted as
            ``.inv``, so ``log_prob`` runs the cheap forward spline and sampling
            the costlier inverse (zuko's trade-off; 0.99x zuko's training step in
            ``benchmarks/density.py`` against 1.21x for the default).

    One column has no coupling: ``kind="spline"`` gives ``num_layers``
    elementwise splines started at the identity (:func:`identity_spline`) under
    a data-initialized :class:`~pyro_relax.transforms.ActNorm`, so the splines
    see standardized data; ``kind="affine"`` gives the ``ActNorm`` alone (a
    learned affine map; more would compose to one affine map).

    Example:
        >>> len(coupling_stack(2, num_layers=3))
        5
        >>> [type(t).__name__ for t in coupling_stack(1, num_layers=2)]
        ['Spline', 'Spline', 'ActNorm']
        >>> [type(t).__name__ for t in coupling_stack(1, kind="affine")]
        ['ActNorm']
    """
    check_positive_int(dim, "dim", "coupling_stack")
    check_positive_int(num_layers, "num_layers", "coupling_stack")
    if fast_density and kind != "spline":
        raise ValueError(f"coupling_stack: fast_density needs kind 'spline', got {kind!r}")
    if kind not in ("spline", "affine"):
        raise ValueError(f"coupling_stack: expected kind 'spline' or 'affine', got {kind!r}")
    if dim == 1:
        splines = [] if kind == "affine" else [
            identity_spline(1, count_bins, bound) for _ in range(num_layers)
        ]
        return [*splines, ActNorm(1)]
    layers: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        if kind == "spline":
            if fast_density:
                coupling = spline_coupling(dim, hidden, count_bins, bound, order="quadratic")
                layers.append(coupling.inv)
            else:
                layers.append(spline_coupling(dim, hidden, count_bins=count_bins, bound=bound))
        else:
            layers.append(T.affine_coupling(dim, hidden_dims=[hidden, hidden]))
        if i < num_layers - 1:
            layers.append(FlipTransform())
    return layers


def density_stack(
    dim: int,
    num_layers: int = 8,
    hidden: int = 64,
    count_bins: int = DENSITY_BINS,
    bound: float = 5.0,
) -> list[torch.distributions.Transform | RQSCoupling]:
    """The default stack for density estimation: rational-quadratic couplings, cheap ``log_prob``.

    ``num_layers`` :class:`~pyro_relax.transforms.RQSCoupling` layers that take
    turns at which half conditions the other (no permutation between them).
    ``log_prob`` (every training step) runs the splines' closed form and
    sampling the quadratic root, as zuko's NSF does; written as one pass
    without Pyro's ``Transform`` machinery. Measured on the peers' 2-D protocol
    (``benchmarks/density.py --peers``, one thread), against the rational-linear
    splines run backwards of :func:`coupling_stack`'s default: the step takes
    0.77x zuko's time at 15 bins (Pyro's couplings: 1.09x at 8 bins), and the
    conditioner outputs saved (``3K - 1`` per entry instead of ``4K - 1``) pay
    for :data:`DENSITY_BINS` bins, which narrow the NLL gap on the sharp-edged
    sets (checkerboard, rings) within zuko's parameter count.

    Arguments:
        dim: event size (1 gives identity-started elementwise splines under an
            ``ActNorm``, see :func:`coupling_stack`).
        num_layers: coupling layers.
        hidden: width of the two hidden layers of each conditioner.
        count_bins: spline bins.
        bound: spline tail bound (identity outside ``[-bound, bound]``).

    Example:
        >>> from pyro_relax.distributions import Flow
        >>> flow = Flow((2,), density_stack(2))
        >>> sum(p.numel() for p in flow.parameters())
        57184
    """
    check_positive_int(dim, "dim", "density_stack")
    check_positive_int(num_layers, "num_layers", "density_stack")
    if dim == 1:
        return coupling_stack(1, num_layers, hidden, count_bins=count_bins, bound=bound)
    return [RQSCoupling(dim, hidden, count_bins, bound, swap=i % 2 == 1)
            for i in range(num_layers)]
