"""The layout of a model's latent sites in an ``AutoContinuous`` guide's flat latent vector.

Any set-up ``AutoContinuous`` (Pyro's own or ours) packs its latent sites, in
the order of its ``prototype_trace``, into one unconstrained vector. The
functions here read that layout from the public ``prototype_trace``:
:func:`latent_shapes` gives each site's unconstrained shape, :func:`unpack_latent`
splits a flat latent into per-site values, and :func:`check_continuous_model`
checks that a model has continuous latent sites at all.
"""

from __future__ import annotations

__all__ = [
    "check_continuous_model",
    "latent_shapes",
    "shapes_of_trace",
    "unpack_latent",
    "unpack_trace",
]

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.poutine.util import site_is_subsample
from torch import Tensor


def check_continuous_model(model: Callable[[], Any]) -> dict[str, tuple[int, ...]]:
    """Trace a zero-argument model; return its latent sites and shapes.

    Raises:
        TypeError: if ``model`` is not callable.
        ValueError: if it has no latent site or a discrete latent site.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> check_continuous_model(lambda: pyro.sample("x", dist.Normal(0.0, 1.0).expand([2])))
        {'x': (2,)}
    """
    if not callable(model):
        raise TypeError(f"expected a callable Pyro model, got {type(model).__name__}")
    tr = poutine.trace(model).get_trace()
    sites: dict[str, tuple[int, ...]] = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        if site_is_subsample(site):
            continue
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"the model has a discrete latent site {name!r}; pyro-relax fits continuous "
                "latents only (marginalize it out or observe it)"
            )
        sites[name] = tuple(site["value"].shape)
    if not sites:
        raise ValueError("the model has no latent sample site to infer")
    return sites


def _prototype(guide: object, owner: str) -> Any:  # noqa: ANN401 - a Pyro trace
    trace = getattr(guide, "prototype_trace", None)
    if trace is None:
        raise ValueError(
            f"{owner}: expected an AutoContinuous guide that has run once, "
            f"got {type(guide).__name__}"
        )
    return trace


def latent_shapes(guide: object) -> dict[str, torch.Size]:
    """The unconstrained shape of each latent site of a set-up ``AutoContinuous`` guide.

    In the order the sites are packed into the guide's flat latent vector
    (any ``AutoContinuous``: Pyro's own or ours).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoDiagonalNormal
        >>> def model():
        ...     pyro.sample("c", dist.LKJCholesky(3, 1.0))
        >>> pyro.clear_param_store()
        >>> guide = AutoDiagonalNormal(model); _ = guide()
        >>> latent_shapes(guide)
        {'c': torch.Size([3])}
        >>> pyro.clear_param_store()
    """
    return shapes_of_trace(_prototype(guide, "latent_shapes"))


def shapes_of_trace(trace: Any) -> dict[str, torch.Size]:  # noqa: ANN401 - a Pyro trace
    """The unconstrained shape of each latent site of a prototype trace (packing order)."""
    return {
        name: biject_to(site["fn"].support).inv(site["value"]).shape
        for name, site in trace.iter_stochastic_nodes()
    }


def unpack_trace(
    trace: Any, shapes: dict[str, torch.Size], latent: Tensor  # noqa: ANN401 - a Pyro trace
) -> Iterator[tuple[dict[str, Any], Tensor]]:
    """``(site, unconstrained value)`` per site, as ``AutoContinuous`` packs the latent."""
    batch_shape = latent.shape[:-1]
    pos = 0
    for name, site in trace.iter_stochastic_nodes():
        shape = shapes[name]
        size = math.prod(shape)
        event_dim = site["fn"].event_dim + len(shape) - len(site["value"].shape)
        full = torch.broadcast_shapes(shape, batch_shape + (1,) * event_dim)
        yield site, latent[..., pos : pos + size].reshape(full)
        pos += size
    if pos != latent.shape[-1]:
        raise ValueError(f"expected a latent of size {pos}, got {latent.shape[-1]}")


def unpack_latent(guide: object, latent: Tensor) -> dict[str, Tensor]:
    """Split a flat unconstrained latent ``batch + (latent_dim,)`` into per-site values.

    Works for any set-up ``AutoContinuous`` guide (Pyro's own or ours); the
    values stay unconstrained, shaped ``batch + unconstrained site shape``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoDiagonalNormal
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        >>> pyro.clear_param_store()
        >>> guide = AutoDiagonalNormal(model); _ = guide()
        >>> {k: v.tolist() for k, v in unpack_latent(guide, torch.arange(3.0)).items()}
        {'a': 0.0, 'b': [1.0, 2.0]}
        >>> pyro.clear_param_store()
    """
    trace = _prototype(guide, "unpack_latent")
    return {site["name"]: u for site, u in unpack_trace(trace, shapes_of_trace(trace), latent)}
