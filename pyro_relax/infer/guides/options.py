"""The options the relaxed guides share, checked once: dtype, sample counts, starts, stacks."""

from __future__ import annotations

__all__ = [
    "DEFAULT_DTYPE",
    "DTYPES",
    "check_dtype",
    "check_flow_config",
    "check_init_gaussian",
    "check_init_scale",
    "check_model",
    "check_num_samples",
]

from typing import Any

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int, check_positive

_FLOW_KINDS = ("spline", "affine", "iaf")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
"""The dtypes a fit may run in, by name."""
DEFAULT_DTYPE = torch.float64
"""The dtype of the guides' parameters, latents and weights unless told otherwise."""


def check_dtype(dtype: object, owner: str) -> torch.dtype:
    """``"float32"``/``"float64"`` or a floating ``torch.dtype`` as a ``torch.dtype``.

    Example:
        >>> check_dtype("float64", "fit")
        torch.float64
    """
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise ValueError(f"{owner}: expected dtype 'float32' or 'float64', got {dtype!r}")


def check_num_samples(n: object, name: str, minimum: int = 1) -> int:
    """Return ``n`` as an int, or raise ``TypeError`` (not an int) / ``ValueError`` (too small).

    Example:
        >>> check_num_samples(5, "f")
        5
    """
    return check_int(n, "num_samples", name, minimum)


def check_model(model: object, owner: str) -> None:
    """Raise ``TypeError`` unless ``model`` is callable."""
    if not callable(model):
        raise TypeError(f"{owner}: expected a callable Pyro model, got {type(model).__name__}")


def check_init_scale(init_scale: object, owner: str) -> float:
    """Return ``init_scale`` as a positive finite float or raise ``ValueError``."""
    return check_positive(init_scale, "init_scale", owner)


def check_init_gaussian(value: object, owner: str) -> Any:  # noqa: ANN401
    """Validate an initial Gaussian: ``(loc, scale_tril)``, a Pathfinder Gaussian, or ``None``.

    A Pathfinder :class:`~pyro_relax.infer.pathfinder.gaussian.Gaussian` (diagonal plus
    low rank) is kept as it is, so a large model's whitening layer never needs a
    ``d x d`` factor.
    """
    if value is None:
        return None
    if all(hasattr(value, k) for k in ("loc", "sqrt_diag", "basis", "core")):
        return value
    if not (isinstance(value, tuple | list) and len(value) == 2
            and all(isinstance(v, Tensor) for v in value)):
        raise TypeError(
            f"{owner}: expected init_gaussian as a (loc, scale_tril) pair of tensors or a "
            f"Pathfinder Gaussian, got {type(value).__name__}"
        )
    loc, tril = value
    d = loc.shape[-1] if loc.dim() == 1 else -1
    if loc.dim() != 1 or tuple(tril.shape) != (d, d):
        raise ValueError(
            f"{owner}: expected init_gaussian shapes (d,) and (d, d), "
            f"got {tuple(loc.shape)} and {tuple(tril.shape)}"
        )
    if not bool(torch.isfinite(loc).all() and torch.isfinite(tril.tril()).all()
                and (tril.diagonal() > 0).all()):
        raise ValueError(f"{owner}: expected a finite init_gaussian with a positive diagonal")
    return loc.detach(), tril.detach().tril()


def check_flow_config(owner: str, num_layers: object, hidden: object, kind: object) -> None:
    """Validate the default-stack options of a flow guide."""
    for name, v in (("num_layers", num_layers), ("hidden", hidden)):
        check_int(v, name, owner, 1)
    if kind not in _FLOW_KINDS:
        raise ValueError(f"{owner}: expected kind in {_FLOW_KINDS}, got {kind!r}")
