"""The latent sites of a traced Pyro model, as laid out in a flat unconstrained vector.

:func:`read_layout` reads them from a trace in the order Pyro's
``AutoContinuous`` packs them; :func:`is_dtype_mismatch` tells torch's refusal
to mix dtypes from other errors (the dtype rule of :mod:`pyro_relax.infer.model`).
"""

from __future__ import annotations

__all__ = ["EvaluationMode", "LatentSite", "is_dtype_mismatch", "read_layout", "sum_rows"]

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.distributions.transforms import biject_to
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Transform

_MISMATCH = ("same dtype", "expected scalar type", "dtype mismatch", "have same dtype")


def is_dtype_mismatch(err: BaseException) -> bool:
    """Whether an exception is torch refusing to mix dtypes (e.g. ``float32 @ float64``).

    Example:
        >>> import torch
        >>> try:
        ...     torch.ones(2, 2) @ torch.ones(2, dtype=torch.float64)
        ... except RuntimeError as err:
        ...     is_dtype_mismatch(err)
        True
    """
    text = str(err).lower()
    return isinstance(err, RuntimeError | TypeError) and any(m in text for m in _MISMATCH)


@dataclass(frozen=True)
class LatentSite:
    """One latent sample site of a model, as laid out in the flat unconstrained vector.

    Attributes:
        name: the site's name.
        shape: the constrained value's shape.
        unconstrained_shape: the shape of its unconstrained value.
        offset: where its entries start in the flat vector.
        size: how many entries it takes.
        transform: ``biject_to(support)``, unconstrained to constrained.
        event_dim: the event dimensions of the unconstrained value.
        dtype: the dtype the model's own prior gives the site.
        plates: ``(name, dim, size)`` of each plate it sits in, outermost first.
    """

    name: str
    shape: torch.Size
    unconstrained_shape: torch.Size
    offset: int
    size: int
    transform: Transform
    event_dim: int
    dtype: torch.dtype
    plates: tuple[tuple[str, int | None, int], ...]


def read_layout(trace: Any) -> tuple[tuple[LatentSite, ...], int]:  # noqa: ANN401 - a trace
    """The latent sites of a trace (packing order) and its plate nesting (batch dims used).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro import poutine
        >>> def model():
        ...     with pyro.plate("g", 3):
        ...         pyro.sample("b", dist.Normal(0.0, 1.0))
        >>> sites, nesting = read_layout(poutine.trace(model).get_trace())
        >>> [(s.name, s.size, s.plates) for s in sites], nesting
        ([('b', 3, (('g', -1, 3),))], 1)
    """
    sites: list[LatentSite] = []
    nesting, offset = 0, 0
    for name, node in trace.nodes.items():
        if node["type"] != "sample":
            continue
        nesting = max(nesting, len(getattr(node["fn"], "batch_shape", ())))
        for frame in node["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
        if node["is_observed"] or site_is_subsample(node):
            continue
        fn, value = node["fn"], node["value"]
        transform = biject_to(fn.support)
        ushape = transform.inv(value).shape
        event_dim = fn.event_dim + len(ushape) - len(value.shape)
        plates = tuple((f.name, f.dim, f.size) for f in node["cond_indep_stack"]
                       if f.vectorized)
        size = math.prod(ushape)
        sites.append(LatentSite(name, value.shape, ushape, offset, size, transform,
                                event_dim, value.dtype, plates))
        offset += size
    return tuple(sites), nesting


@dataclass
class EvaluationMode:
    """What a potential decided on its first evaluations (shared by its bound copies)."""

    evaluation: str = "fit dtype"
    vectorization: str | None = None
    checked: bool = False
    plate_failure: str = ""
    notes: list[str] = field(default_factory=list)


def sum_rows(t: Tensor | float, p: int, m: int, like: Tensor) -> Tensor:
    """Sum a log-prob tensor (particle dim at ``-p``) to shape ``(m,)`` in ``like``'s dtype."""
    if not isinstance(t, Tensor):
        return like.new_full((m,), float(t))
    if t.dim() < p:
        t = t.reshape((1,) * (p - t.dim()) + t.shape)
    t = t.reshape(t.shape[: t.dim() - p + 1] + (-1,)).sum(-1)
    return t.to(like.dtype).expand(m)
