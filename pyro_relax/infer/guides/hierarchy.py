r"""The plate structure of a model's latent vector: global latents and per-group local blocks.

An ``AutoContinuous`` guide packs every latent site into one flat
unconstrained vector. Read from the model's (prototype) trace, a site is

* **global** when it sits outside every plate (e.g. a population mean or a
  group scale), and
* **local** when it sits inside one or more vectorized plates: it then holds
  one value (or one small vector) per plate member.

Local sites inside the same plates form one :class:`LocalBlock`: a ``(G, m)``
table of flat positions, one row per plate member (``G`` is the product of
the plate sizes) holding the ``m`` unconstrained coordinates of that member
over all the block's sites (e.g. a county's intercept and slope, ``m = 2``).
:func:`latent_structure` returns the globals' positions and the blocks,
which together cover the latent vector exactly once.

A plate axis is recognized only where the site's unconstrained value has the
plate's full size on the plate's batch axis; a site in a subsampled or
broadcast (size 1) plate is treated as global there.
"""

from __future__ import annotations

__all__ = ["LatentStructure", "LocalBlock", "conditional_prior", "latent_structure"]

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor
from torch.distributions import TransformedDistribution

from pyro_relax.infer.guides.layout import shapes_of_trace


@dataclass(frozen=True)
class LocalBlock:
    """The local sites sharing one set of plates, as a ``(G, m)`` table of flat positions.

    Attributes:
        plates: the plate names (sorted), whose members index the rows.
        sizes: the plate sizes, in the order of ``plates``; ``G = prod(sizes)``.
        sites: the block's sites, in packing order.
        index: a ``(G, m)`` long tensor: row ``i`` lists the positions of plate
            member ``i``'s unconstrained coordinates in the flat latent.
    """

    plates: tuple[str, ...]
    sizes: tuple[int, ...]
    sites: tuple[str, ...]
    index: Tensor

    @property
    def num_groups(self) -> int:
        """``G``: the number of plate members (rows)."""
        return int(self.index.shape[0])

    @property
    def group_dim(self) -> int:
        """``m``: the unconstrained coordinates per plate member."""
        return int(self.index.shape[1])


@dataclass(frozen=True)
class LatentStructure:
    """Which flat coordinates are global and which local (see the module docstring).

    Attributes:
        global_sites: the sites outside every plate, in packing order.
        global_index: the flat positions of their coordinates, shape ``(d_g,)``.
        blocks: the local blocks.
        latent_dim: the size of the flat latent.
    """

    global_sites: tuple[str, ...]
    global_index: Tensor
    blocks: tuple[LocalBlock, ...]
    latent_dim: int

    @property
    def global_dim(self) -> int:
        """``d_g``: the number of global coordinates."""
        return int(self.global_index.numel())

    def order(self) -> Tensor:
        """The permutation ``perm`` with ``z[perm] = cat(globals, block rows flattened, ...)``."""
        parts = [self.global_index] + [b.index.reshape(-1) for b in self.blocks]
        return torch.cat(parts)

    def describe(self) -> str:
        """A one-line summary, e.g. ``'globals mu, tau (2 dims); plate J: theta (30 x 1)'``.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> from pyro import poutine
            >>> def model():
            ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
            ...     with pyro.plate("J", 3):
            ...         pyro.sample("theta", dist.Normal(0.0, tau))
            >>> latent_structure(poutine.trace(model).get_trace()).describe()
            'globals tau (1 dims); plate J: theta (3 x 1)'
        """
        names = ", ".join(self.global_sites) or "none"
        parts = [f"globals {names} ({self.global_dim} dims)"]
        for b in self.blocks:
            parts.append(
                f"plate {' x '.join(b.plates)}: {', '.join(b.sites)} "
                f"({b.num_groups} x {b.group_dim})"
            )
        return "; ".join(parts)


def _plate_axes(site: dict[str, Any], shape: torch.Size) -> list[tuple[str, int, int]]:
    """``(plate name, axis in the unconstrained value, size)`` of each full plate of a site."""
    batch_ndim = site["value"].dim() - site["fn"].event_dim
    axes = []
    for frame in site["cond_indep_stack"]:
        if not frame.vectorized or frame.dim is None or frame.size is None or frame.size < 2:
            continue
        axis = batch_ndim + frame.dim
        if 0 <= axis < len(shape) and shape[axis] == frame.size:
            axes.append((frame.name, axis, int(frame.size)))
    return sorted(axes)


def latent_structure(trace: Any) -> LatentStructure:  # noqa: ANN401 - a Pyro trace
    """Global and local latents of a model trace, in ``AutoContinuous``'s packing order.

    Arguments:
        trace: a Pyro trace of the model (an ``AutoContinuous`` guide's
            ``prototype_trace``, or ``poutine.trace(model).get_trace()``).

    Returns:
        The :class:`LatentStructure`.

    Raises:
        TypeError: if ``trace`` is not a Pyro trace.
        ValueError: if it has no latent site.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro import poutine
        >>> def model():
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("county", 4):
        ...         a = pyro.sample("a", dist.Normal(mu, 1.0))
        ...         b = pyro.sample("b", dist.Normal(0.0, 1.0))
        >>> s = latent_structure(poutine.trace(model).get_trace())
        >>> s.global_index.tolist(), s.blocks[0].sites, s.blocks[0].index[1].tolist()
        ([0], ('a', 'b'), [2, 6])
    """
    if not hasattr(trace, "iter_stochastic_nodes"):
        raise TypeError(f"latent_structure: expected a Pyro trace, got {type(trace).__name__}")
    trace = prune_subsample_sites(trace)
    shapes = shapes_of_trace(trace)
    if not shapes:
        raise ValueError("latent_structure: expected a trace with latent sites, got none")
    global_sites: list[str] = []
    global_parts: list[Tensor] = []
    groups: dict[tuple[tuple[str, int], ...], list[tuple[str, Tensor]]] = {}
    pos = 0
    for name, site in trace.iter_stochastic_nodes():
        shape = shapes[name]
        size = math.prod(shape)
        flat = torch.arange(pos, pos + size)
        pos += size
        axes = _plate_axes(site, shape)
        if not axes:
            global_sites.append(name)
            global_parts.append(flat)
            continue
        plate_axes = [axis for _, axis, _ in axes]
        rest = [i for i in range(len(shape)) if i not in plate_axes]
        table = flat.reshape(shape).permute(plate_axes + rest)
        num_groups = math.prod(s for _, _, s in axes)
        key = tuple((plate, s) for plate, _, s in axes)
        groups.setdefault(key, []).append((name, table.reshape(num_groups, -1)))
    blocks = tuple(
        LocalBlock(
            plates=tuple(p for p, _ in key),
            sizes=tuple(s for _, s in key),
            sites=tuple(n for n, _ in members),
            index=torch.cat([t for _, t in members], dim=1),
        )
        for key, members in groups.items()
    )
    empty = torch.zeros(0, dtype=torch.long)
    return LatentStructure(
        global_sites=tuple(global_sites),
        global_index=torch.cat(global_parts) if global_parts else empty,
        blocks=blocks,
        latent_dim=pos,
    )


def _loc_scale(fn: Any) -> tuple[Tensor, Tensor] | None:  # noqa: ANN401 - a distribution
    """``(loc, scale)`` of a location-scale distribution on the reals (unwrapped), else ``None``."""
    while hasattr(fn, "base_dist") and not isinstance(fn, TransformedDistribution):
        fn = fn.base_dist
    support = fn.support
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    if support is not constraints.real or not {"loc", "scale"} <= set(fn.arg_constraints):
        return None
    return fn.loc, fn.scale


def conditional_prior(
    model: Callable[..., Any],
    values: dict[str, Tensor],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """The prior ``(loc, scale)`` of each location-scale latent site, given other sites' values.

    The model runs once with ``values`` (constrained, by site name)
    substituted; the latent sites not in ``values`` are drawn from their
    priors. For every latent site (given a value or not) on the reals whose
    (unwrapped) distribution has a ``loc`` and a ``scale`` (Normal, StudentT,
    Laplace, Cauchy, ...), both are returned, broadcast to the site's shape:
    the prior of a local given its parents' values.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
        ...     with pyro.plate("J", 2):
        ...         pyro.sample("theta", dist.Normal(1.0, tau))
        >>> loc, scale = conditional_prior(model, {"tau": torch.tensor(0.5)})["theta"]
        >>> loc.tolist(), scale.tolist()
        ([1.0, 1.0], [0.5, 0.5])
    """
    if not callable(model):
        raise TypeError(
            f"conditional_prior: expected a callable model, got {type(model).__name__}"
        )
    if not isinstance(values, dict):
        raise TypeError(
            f"conditional_prior: expected values as a dict, got {type(values).__name__}"
        )
    with torch.no_grad(), poutine.block():  # invisible to any enclosing trace (e.g. an ELBO's)
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace(
            *args, **(kwargs or {})
        )
    out = {}
    for name, site in prune_subsample_sites(trace).nodes.items():
        if site["type"] != "sample" or (site["is_observed"] and name not in values):
            continue
        found = _loc_scale(site["fn"])
        if found is not None:
            shape = site["value"].shape
            out[name] = (found[0].broadcast_to(shape), found[1].broadcast_to(shape))
    return out
