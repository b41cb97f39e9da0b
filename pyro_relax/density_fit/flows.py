"""The flows of ``pyro-relax density`` by name, and the file a run saves its flow in."""

from __future__ import annotations

__all__ = ["FLOWS", "FORMAT", "build_flow", "load_density_model", "save_density_model"]

import os
from pathlib import Path
from typing import Any

import torch

from pyro_relax.distributions.flow import Flow

FLOWS: dict[str, str] = {
    "spline": "rational-quadratic spline couplings, density_stack (exact)",
    "affine": "affine (RealNVP) couplings (exact)",
    "abs": "splines, softplus and the abs surjection (exact; sign-symmetric data)",
    "sort": "splines, an ordered map and the sort surjection (exact; exchangeable columns)",
    "max": "splines and the max surjection (exact)",
    "augment": "splines on the data plus --extra dimensions, augment surjection (a bound)",
    "dequantize": "splines, sigmoid, uniform dequantization (integers 0..bins-1; a bound)",
    "vdequantize": "as dequantize with learned (variational) dequantization noise (a bound)",
}
"""The flow kinds of ``--flow`` and their one-line descriptions."""
FORMAT = "pyro-relax-density/2"
"""The format tag of a saved ``model.pt``."""


def build_flow(kind: str, dim: int, *, num_layers: int = 4, hidden: int = 64, extra: int = 2,
               num_bins: int = 256) -> Flow:
    """A flow of kind ``kind`` (one of :data:`FLOWS`) for data of ``dim`` columns.

    Raises:
        ValueError: for an unknown kind, or a dimension the kind cannot take.
    """
    import pyro.distributions.transforms as T

    from pyro_relax.surjections import (
        AbsSurjection,
        AugmentSurjection,
        MaxSurjection,
        SortSurjection,
        UniformDequantization,
        VariationalDequantization,
    )
    from pyro_relax.transforms import ActNorm
    from pyro_relax.transforms.stacks import coupling_stack, density_stack

    if kind not in FLOWS:
        raise ValueError(f"expected --flow one of {sorted(FLOWS)}, got {kind!r}")
    if kind in ("sort", "max") and dim < 2:
        raise ValueError(f"--flow {kind} needs data with at least 2 columns, got {dim}")
    small = (max(8, hidden // 2),)
    stack = (coupling_stack(dim, num_layers, hidden, kind="affine") if kind == "affine"
             else density_stack(dim, num_layers, hidden))
    layers: dict[str, Any] = {
        "spline": lambda: ((dim,), stack),
        "affine": lambda: ((dim,), stack),
        "abs": lambda: ((dim,), [*stack, ActNorm(dim), T.SoftplusTransform(), AbsSurjection()]),
        "sort": lambda: ((dim,), [*stack, ActNorm(dim), T.OrderedTransform(), SortSurjection()]),
        "max": lambda: ((dim,), [*stack, ActNorm(dim), MaxSurjection(dim, hidden=small)]),
        "augment": lambda: ((dim + extra,), [*density_stack(dim + extra, num_layers, hidden),
                                             AugmentSurjection(dim, extra, hidden=small)]),
        "dequantize": lambda: ((dim,), [*stack, ActNorm(dim), T.SigmoidTransform(),
                                        UniformDequantization(num_bins)]),
        "vdequantize": lambda: ((dim,), [*stack, ActNorm(dim), T.SigmoidTransform(),
                                         VariationalDequantization(dim, num_bins, hidden=small)]),
    }
    base_shape, stack_layers = layers[kind]()
    return Flow(base_shape, stack_layers)


def load_density_model(path: str | os.PathLike[str]) -> Flow:
    """Load the flow a ``pyro-relax density`` run wrote (its folder or its ``model.pt``).

    Read with ``torch.load(weights_only=True)``: no pickled code runs.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> config = {"flow": "affine", "dim": 2, "layers": 1, "hidden": 8, "extra": 2,
        ...           "bins": 256}
        >>> save_density_model(folder, build_flow("affine", 2, num_layers=1, hidden=8), config)
        >>> load_density_model(folder).log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
    """
    p = Path(path)
    p = p / "model.pt" if p.is_dir() else p
    if not p.is_file():
        raise ValueError(f"expected a pyro-relax density output folder or model.pt, got {path}")
    saved = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"expected {p} written by pyro-relax density ({FORMAT}), it is not")
    cfg = saved["config"]
    flow = build_flow(cfg["flow"], cfg["dim"], num_layers=cfg["layers"], hidden=cfg["hidden"],
                      extra=cfg["extra"], num_bins=cfg["bins"])
    flow.load_state_dict(saved["state_dict"])
    return flow


def save_density_model(
    folder: str | os.PathLike[str], flow: Flow, config: dict[str, Any]
) -> None:
    """Save ``flow`` as ``folder/model.pt`` with the :func:`build_flow` options in ``config``.

    ``config`` holds ``flow``, ``dim``, ``layers``, ``hidden``, ``extra`` and
    ``bins`` (what :func:`load_density_model` rebuilds the flow from).

    Raises:
        ValueError: if ``config`` lacks one of those keys.
    """
    missing = sorted({"flow", "dim", "layers", "hidden", "extra", "bins"} - set(config))
    if missing:
        raise ValueError(f"save_density_model: expected config keys {missing} too")
    torch.save({"format": FORMAT, "config": config, "state_dict": flow.state_dict()},
               Path(folder) / "model.pt")
