"""Bridges between ArviZ 0.2x (``InferenceData``) and ArviZ 1.x (``DataTree``).

ArviZ 0.23 runs on Python 3.11; Python 3.12+ users get ArviZ 1.x, which moved the
statistics into ``arviz_stats`` and the data layer into ``arviz_base``. This module
holds every place where the two differ, so that the rest of the package only calls
the helpers below:

- ``from_dict``: 0.2x takes one keyword per group (``posterior=...``); 1.x takes one
  mapping ``{group: {var: array}}`` as its first argument.
- ``psislw``: 0.2x has ``az.psislw(log_weights)``; 1.x has
  ``arviz_stats.base.array_stats.psislw(ary)`` where ``ary`` is the *negated* log
  ratio (it is written for ``log_likelihood`` in PSIS-LOO). The sign is checked at
  run time, so a change of convention cannot silently invert the diagnostic.
- custom groups: ``InferenceData.add_groups`` in 0.2x, a child ``DataTree`` in 1.x.

ArviZ is imported lazily (it takes about two seconds), so ``import pyro_relax``
stays fast.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch

if TYPE_CHECKING:  # the ArviZ types, for the annotations only (ArviZ loads lazily)
    import numpy.typing as npt
    from arviz import InferenceData
    from xarray import Dataset, DataTree

#: What the diagnostics take as numbers: a tensor (any device), an array or nested numbers.
Numbers: TypeAlias = "torch.Tensor | npt.ArrayLike"
#: ArviZ data: an ``InferenceData`` (ArviZ 0.2x) or a ``DataTree`` (ArviZ 1.x).
ArvizData: TypeAlias = "InferenceData | DataTree"

__all__ = [
    "ArvizData",
    "Numbers",
    "add_group",
    "as_numpy",
    "from_dict",
    "import_arviz",
    "psis_smooth",
]


def import_arviz() -> ModuleType:
    """Import ArviZ, hiding its import-time notice about the 1.x refactor.

    Returns:
        The ``arviz`` module.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

    return arviz


def as_numpy(x: Numbers, name: str) -> np.ndarray:
    """Convert a tensor, array or nested sequence of numbers to a numpy array.

    Floating tensors go to float64 on the host (bfloat16 has no numpy dtype); integer
    and boolean tensors keep their kind.

    Arguments:
        x: A ``torch.Tensor``, ``numpy.ndarray`` or sequence of numbers.
        name: The argument name, used in error messages.

    Returns:
        A numpy array (a copy when ``x`` was a tensor).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point():
            x = x.to(dtype=torch.float64)
        elif x.is_complex():
            raise TypeError(f"{name} must be real, got a tensor of dtype {x.dtype}")
        return x.cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64, copy=False)
    return arr


@functools.cache
def _from_dict_takes_mapping() -> bool:
    """Whether ``az.from_dict`` is the 1.x form ``from_dict(data: {group: {...}})``."""
    params = list(inspect.signature(import_arviz().from_dict).parameters)
    return bool(params) and params[0] != "posterior"


def from_dict(groups: Mapping[str, Mapping[str, np.ndarray]], attrs: dict[str, Any]) -> ArvizData:
    """Build ArviZ data from ``{group: {var: array (chain, draw, ...)}}`` on 0.2x or 1.x.

    Arguments:
        groups: Sample groups (``posterior``, ``sample_stats``), arrays shaped
            ``(chain, draw, *event)``.
        attrs: Attributes stored on the result.

    Returns:
        An ``InferenceData`` (ArviZ 0.2x) or ``DataTree`` (ArviZ 1.x).
    """
    az = import_arviz()
    groups = {k: dict(v) for k, v in groups.items() if v}
    if _from_dict_takes_mapping():  # 1.x: attrs per group, "/" is the root
        return az.from_dict(groups, attrs={"/": attrs})
    return az.from_dict(**groups, attrs=attrs)


def add_group(data: ArvizData, name: str, dataset: Dataset) -> ArvizData:
    """Attach an ``xarray.Dataset`` as a new group ``name`` of ArviZ data.

    Arguments:
        data: An ``InferenceData`` or ``DataTree``.
        name: The group name.
        dataset: The ``xarray.Dataset`` to store.

    Returns:
        ``data`` with the group added (modified in place where the type allows).
    """
    if hasattr(data, "add_groups"):  # ArviZ 0.2x InferenceData
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not defined in the InferenceData scheme")
            data.add_groups({name: dataset})
        return data
    import xarray as xr  # ArviZ 1.x DataTree

    data[name] = xr.DataTree(dataset=dataset)
    return data


def _logsumexp(x: np.ndarray) -> float:
    top = np.max(x)
    return float(top + np.log(np.sum(np.exp(x - top))))


def _smooth_1x(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    from arviz_stats.base import array_stats

    def call(ary: np.ndarray) -> tuple[np.ndarray, float]:
        try:
            out, khat = array_stats.psislw(ary, r_eff=1.0)
        except ValueError:  # a tied tail ("All tail values are the same"): no fit
            return log_weights.copy(), float("inf")
        return np.asarray(out, dtype=np.float64), float(np.asarray(khat))

    out, khat = call(-log_weights)
    finite = np.isfinite(log_weights)
    hi = np.argmax(np.where(finite, log_weights, -np.inf))
    lo = np.argmin(np.where(finite, log_weights, np.inf))
    if out[hi] < out[lo]:  # the other sign convention: the input is the log weight itself
        out, khat = call(log_weights)
    return out, khat


def psis_smooth(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smooth one 1-D vector of log importance weights with ArviZ.

    Arguments:
        log_weights: Validated float64 log weights of shape ``(n,)``; finite or ``-inf``,
            not all equal.

    Returns:
        ``(smoothed, khat)``: smoothed log weights normalized to ``logsumexp == 0``,
        and the generalized Pareto shape estimate (``inf`` when the tail can't be fit).
    """
    az = import_arviz()
    if hasattr(az, "psislw"):
        out, khat = az.psislw(log_weights.copy(), reff=1.0)
        out, khat = np.asarray(out, dtype=np.float64), float(np.asarray(khat))
    else:
        out, khat = _smooth_1x(log_weights)
    return out - _logsumexp(out), khat
