"""Helpers shared by the posteriordb example models (private to this folder)."""

from __future__ import annotations

__all__ = [
    "check_domain",
    "draw_matrix",
    "draw_scalar",
    "draw_vector",
    "flat_ordered",
    "flat_positive",
    "flat_real",
    "flat_real_vector",
    "matrix_names",
    "regression_names",
    "regression_values",
    "sample_site",
    "to_numpy",
    "vector_names",
    "zero_based",
]

from collections.abc import Mapping, Sequence

import numpy as np
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import OrderedTransform
from torch import Tensor


def _default() -> dict:
    return {"dtype": torch.get_default_dtype(), "device": torch.get_default_device()}


def draw_scalar(draw: Mapping[str, object], key: str) -> Tensor:
    """One parameter of a reference draw (a float or an array of draws) as a tensor.

    The tensor takes the default dtype and device; its shape is the batch shape
    of the draw (``()`` for a single draw).
    """
    if not isinstance(draw, Mapping):
        raise TypeError(f"expected a mapping from Stan names to values, got {type(draw).__name__}")
    if key not in draw:
        raise KeyError(f"reference draw lacks {key!r}; it has {sorted(draw)}")
    value = np.asarray(draw[key], dtype=np.float64)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"expected finite values for {key!r}, got {value}")
    return torch.as_tensor(value, **_default())


def draw_vector(draw: Mapping[str, object], base: str, size: int) -> Tensor:
    """Stack ``base[1]`` ... ``base[size]`` of a reference draw along a new last dimension."""
    parts = [draw_scalar(draw, f"{base}[{i + 1}]") for i in range(size)]
    return torch.stack(torch.broadcast_tensors(*parts), dim=-1)


def draw_matrix(draw: Mapping[str, object], base: str, rows: int, cols: int) -> Tensor:
    """Stack ``base[1,1]`` ... ``base[rows,cols]`` of a reference draw into two last dimensions."""
    names = [f"{base}[{i + 1},{j + 1}]" for i in range(rows) for j in range(cols)]
    parts = [draw_scalar(draw, name) for name in names]
    stacked = torch.stack(torch.broadcast_tensors(*parts), dim=-1)
    return stacked.reshape(*stacked.shape[:-1], rows, cols)


def zero_based(index: object, device: torch.device | None = None) -> Tensor:
    """Stan's 1-based integer data as a 0-based ``torch.long`` tensor (on ``device``)."""
    out = torch.as_tensor(np.asarray(index), dtype=torch.long, device=device) - 1
    if out.numel() and int(out.min()) < 0:
        raise ValueError(f"expected 1-based indices, got a minimum of {int(out.min()) + 1}")
    return out


def check_domain(value: Tensor, name: str, lower: float | None, upper: float | None) -> None:
    """Raise ``ValueError`` unless ``lower < value < upper`` elementwise (open bounds)."""
    ok = torch.ones_like(value, dtype=torch.bool)
    if lower is not None:
        ok = ok & (value > lower)
    if upper is not None:
        ok = ok & (value < upper)
    if not bool(ok.all()):
        raise ValueError(f"expected {name} in ({lower}, {upper}), got {value}")


def sample_site(samples: Mapping[str, Tensor], site: str, event_shape: Sequence[int]) -> Tensor:
    """Fetch a site from a samples dict and check its trailing event shape."""
    if not isinstance(samples, Mapping):
        raise TypeError(f"expected a mapping from site names to tensors, got {type(samples)}")
    if site not in samples:
        raise KeyError(f"samples lack site {site!r}; they have {sorted(samples)}")
    value = samples[site]
    if not isinstance(value, Tensor):
        raise TypeError(f"expected a tensor for site {site!r}, got {type(value).__name__}")
    event_shape = tuple(event_shape)
    got = tuple(value.shape[value.dim() - len(event_shape) :]) if event_shape else ()
    if value.dim() < len(event_shape) or got != event_shape:
        raise ValueError(
            f"site {site!r}: expected event shape {event_shape}, got shape {tuple(value.shape)}"
        )
    return value


def to_numpy(value: Tensor) -> np.ndarray:
    """A detached float64 numpy copy of a tensor."""
    return value.detach().to("cpu", torch.float64).numpy()


def vector_names(value: Tensor, base: str) -> dict[str, np.ndarray]:
    """Split the last dimension of ``value`` into ``{"base[1]": ..., "base[n]": ...}``."""
    arr = to_numpy(value)
    return {f"{base}[{i + 1}]": arr[..., i] for i in range(arr.shape[-1])}


def matrix_names(value: Tensor, base: str) -> dict[str, np.ndarray]:
    """Split the last two dimensions of ``value`` into ``{"base[1,1]": ...}`` (column-major).

    The order is Stan's (the first index runs fastest), as in the reference draws.
    """
    arr = to_numpy(value)
    rows, cols = arr.shape[-2:]
    return {f"{base}[{i + 1},{j + 1}]": arr[..., i, j] for j in range(cols) for i in range(rows)}


def flat_real() -> dist.TorchDistribution:
    """An improper flat prior on the real line (log density 0).

    ``dist.ImproperUniform`` cannot be sampled, so Pyro's initialization
    strategies (``init_to_uniform``, ``init_to_median``) fail on it; a masked
    ``Normal(0, 1)`` has the same support and log density 0, and can be sampled.
    """
    zero = torch.zeros((), **_default())
    return dist.Normal(zero, 1.0).mask(False)


def flat_positive() -> dist.TorchDistribution:
    """An improper flat prior on the positive reals (log density 0); see :func:`flat_real`."""
    zero = torch.zeros((), **_default())
    return dist.LogNormal(zero, 1.0).mask(False)


def flat_ordered(size: int) -> dist.TorchDistribution:
    """An improper flat prior on increasing vectors of length ``size`` (log density 0)."""
    zero = torch.zeros(size, **_default())
    base = dist.Normal(zero, 1.0).to_event(1)
    return dist.TransformedDistribution(base, [OrderedTransform()]).mask(False)


def flat_real_vector(size: int) -> dist.TorchDistribution:
    """An improper flat prior on real vectors of length ``size``; see :func:`flat_real`."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"flat_real_vector: expected a positive int size, got {size!r}")
    zero = torch.zeros(size, **_default())
    return dist.Normal(zero, 1.0).to_event(1).mask(False)


def regression_names(samples: Mapping[str, Tensor], size: int) -> dict[str, np.ndarray]:
    """``beta`` (``size`` coefficients) and ``sigma`` samples as ``beta[1..size], sigma``."""
    return {
        **vector_names(sample_site(samples, "beta", (size,)), "beta"),
        "sigma": to_numpy(sample_site(samples, "sigma", ())),
    }


def regression_values(draw: Mapping[str, object], size: int) -> dict[str, Tensor]:
    """The ``beta`` and ``sigma`` sites of a linear regression from a reference draw."""
    sigma = draw_scalar(draw, "sigma")
    check_domain(sigma, "sigma", 0.0, None)
    beta = draw_vector(draw, "beta", size)
    return {"beta": beta, "sigma": sigma}
