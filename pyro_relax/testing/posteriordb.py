"""Loaders for the posteriordb reference posteriors shipped next to the repository.

Nineteen posteriors from posteriordb (Magnusson et al., BSD-3) live in
``../shared/posteriordb``: each folder holds the data in Stan's data format
(a zipped JSON object) and gold-standard reference draws (a zipped JSON list
of chains, each mapping a Stan parameter name such as ``"theta[1]"`` to 1000
draws): 10 chains for the thirteen of posteriordb (:data:`POSTERIOR_NAMES`
minus :data:`HIERARCHICAL_NAMES`), 4 chains (thinned from 4 x 2500 Stan
draws) for the six larger hierarchical posteriors of
:data:`HIERARCHICAL_NAMES`. The Pyro versions of the models are in
``examples/posteriordb``.
"""

from __future__ import annotations

__all__ = [
    "HIERARCHICAL_NAMES",
    "POSTERIOR_NAMES",
    "data_tensors",
    "find_posteriordb",
    "load_data",
    "load_reference_draws",
    "reference_moments",
]

import functools
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

POSTERIOR_NAMES: tuple[str, ...] = (
    "arK-arK",
    "bball_drive_event_1-hmm_drive_1",
    "earnings-earn_height",
    "eight_schools-eight_schools_centered",
    "eight_schools-eight_schools_noncentered",
    "garch-garch11",
    "gp_pois_regr-gp_pois_regr",
    "kidiq-kidscore_momiq",
    "kilpisjarvi_mod-kilpisjarvi",
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "mesquite-mesquite",
    "nes1976-nes",
    "sblri-blr",
    "pilots-pilots",
    "seeds_data-seeds_model",
    "GLMM_data-GLMM1_model",
    "Mh_data-Mh_model",
    "butterfly-multi_occupancy",
    "state_wide_presidential_votes-hierarchical_gp",
)
#: the larger hierarchical posteriors (references: 4 chains x 1000 draws, thinned from 2500)
HIERARCHICAL_NAMES: tuple[str, ...] = POSTERIOR_NAMES[-6:]

ENV_VAR = "PYRO_RELAX_POSTERIORDB"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def _is_db(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_dir() for name in POSTERIOR_NAMES)


def _checked_db(raw: str | os.PathLike[str], described: str | None) -> Path:
    """``raw`` resolved, or ``FileNotFoundError`` naming it (as ``described``) if no database."""
    found = Path(raw).expanduser().resolve()
    if not _is_db(found):
        raise FileNotFoundError(
            f"find_posteriordb: {described or found} does not hold the posterior folders "
            f"{POSTERIOR_NAMES}"
        )
    return found


def find_posteriordb(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate the folder that holds the posteriordb posteriors of :data:`POSTERIOR_NAMES`.

    The places tried, in order: ``path`` if given; the environment variable
    ``PYRO_RELAX_POSTERIORDB`` if set; ``../shared/posteriordb`` relative to the
    repository root; ``../shared/posteriordb`` relative to the working
    directory. An explicit ``path`` or environment variable that does not hold
    the posteriors is an error (it is never silently skipped).

    Arguments:
        path: an explicit folder, or ``None`` to search.

    Returns:
        The absolute path of the folder.

    Raises:
        FileNotFoundError: when no candidate holds all the posterior folders.

    Example:
        >>> find_posteriordb().name
        'posteriordb'
    """
    if path is not None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"find_posteriordb: expected a path, got {type(path).__name__}")
        return _checked_db(path, None)
    env = os.environ.get(ENV_VAR)
    if env:
        return _checked_db(env, f"${ENV_VAR}={env}")
    tried = [
        (_REPO_ROOT / ".." / "shared" / "posteriordb").resolve(),
        (Path.cwd() / ".." / "shared" / "posteriordb").resolve(),
    ]
    for candidate in tried:
        if _is_db(candidate):
            return candidate
    raise FileNotFoundError(
        "find_posteriordb: no posteriordb folder found; tried "
        + ", ".join(str(c) for c in tried)
        + f". Pass a path or set ${ENV_VAR}."
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"expected a posterior name (str), got {type(name).__name__}")
    if name not in POSTERIOR_NAMES:
        raise ValueError(f"expected a posterior name in {POSTERIOR_NAMES}, got {name!r}")


@functools.lru_cache(maxsize=32)
def _read_zipped_json(folder: Path, prefix: str) -> dict[str, Any] | list[Any]:
    files = sorted(folder.glob(f"{prefix}*.json.zip"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one {prefix}*.json.zip in {folder}, found {len(files)}")
    with zipfile.ZipFile(files[0]) as archive:
        members = [m for m in archive.namelist() if m.endswith(".json")]
        if len(members) != 1:
            raise ValueError(f"expected one .json file in {files[0]}, found {members}")
        return json.loads(archive.read(members[0]))


def load_data(
    name: str, path: str | os.PathLike[str] | None = None
) -> dict[str, np.ndarray | float | int]:
    """Load a posterior's data set (Stan data format) as numpy arrays and numbers.

    Arguments:
        name: a folder name from :data:`POSTERIOR_NAMES`.
        path: the posteriordb folder, or ``None`` to use :func:`find_posteriordb`.

    Returns:
        A mapping from each data name to an ``np.ndarray`` (for lists; integer
        lists stay integer) or a Python ``int``/``float`` (for scalars).

    Example:
        >>> load_data("eight_schools-eight_schools_noncentered")["J"]
        8
    """
    _check_name(name)
    raw = _read_zipped_json(find_posteriordb(path) / name, "data_")
    out: dict[str, np.ndarray | float | int] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            out[key] = np.asarray(value)
        elif isinstance(value, bool | int | float):
            out[key] = value
        else:
            raise ValueError(f"load_data({name!r}): unexpected value for {key!r}: {value!r}")
    return out


def load_reference_draws(
    name: str, by_chain: bool = False, path: str | os.PathLike[str] | None = None
) -> dict[str, np.ndarray]:
    """Load the reference posterior draws (10 or 4 chains of 1000 Stan NUTS draws).

    Arguments:
        name: a folder name from :data:`POSTERIOR_NAMES`.
        by_chain: return arrays of shape ``(chains, draws)`` instead of all
            draws concatenated over chains (shape ``(chains * draws,)``).
        path: the posteriordb folder, or ``None`` to use :func:`find_posteriordb`.

    Returns:
        A mapping from each stored Stan parameter name (``"theta[1]"``, 1-based,
        in the stored order) to a float64 array.

    Example:
        >>> draws = load_reference_draws("kilpisjarvi_mod-kilpisjarvi", by_chain=True)
        >>> sorted(draws), draws["beta"].shape
        (['alpha', 'beta', 'sigma'], (10, 1000))
    """
    _check_name(name)
    if not isinstance(by_chain, bool):
        raise TypeError(f"load_reference_draws: expected a bool by_chain, got {by_chain!r}")
    chains = _read_zipped_json(find_posteriordb(path) / name, "reference_draws_")
    if not isinstance(chains, list) or not chains:
        raise ValueError(f"load_reference_draws({name!r}): expected a non-empty list of chains")
    keys = list(chains[0])
    for i, chain in enumerate(chains):
        if list(chain) != keys:
            raise ValueError(
                f"load_reference_draws({name!r}): chain {i} has parameters {list(chain)}, "
                f"expected {keys}"
            )
    out = {k: np.asarray([chain[k] for chain in chains], dtype=np.float64) for k in keys}
    if by_chain:
        return out
    return {k: v.reshape(-1) for k, v in out.items()}


def reference_moments(
    name: str, path: str | os.PathLike[str] | None = None
) -> dict[str, tuple[float, float]]:
    """Posterior mean and standard deviation of each stored parameter.

    Arguments:
        name: a folder name from :data:`POSTERIOR_NAMES`.
        path: the posteriordb folder, or ``None`` to use :func:`find_posteriordb`.

    Returns:
        A mapping from Stan parameter name to ``(mean, sd)`` over all 10000
        (4000 for :data:`HIERARCHICAL_NAMES`) reference draws (``sd`` with ``ddof=1``).

    Example:
        >>> mean, sd = reference_moments("eight_schools-eight_schools_noncentered")["mu"]
        >>> 3.0 < mean < 6.0
        True
    """
    draws = load_reference_draws(name, path=path)
    return {k: (float(v.mean()), float(v.std(ddof=1))) for k, v in draws.items()}


@functools.lru_cache(maxsize=64)
def _cached_tensors(
    name: str, folder: Path, dtype: torch.dtype, device: torch.device
) -> dict[str, Tensor]:
    out = {}
    for key, value in load_data(name, folder).items():
        if isinstance(value, np.ndarray):
            out[key] = torch.as_tensor(value, dtype=dtype, device=device)
    return out


def data_tensors(
    name: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> dict[str, Tensor]:
    """The array-valued data of a posterior as (cached) tensors.

    Arguments:
        name: a folder name from :data:`POSTERIOR_NAMES`.
        dtype: a floating dtype; ``None`` for ``torch.get_default_dtype()``.
        device: ``None`` for ``torch.get_default_device()``.
        path: the posteriordb folder, or ``None`` to use :func:`find_posteriordb`.

    Returns:
        A mapping from each array-valued data name to a tensor (integer data,
        such as counts, are converted to ``dtype`` too). The tensors are shared
        between calls: do not modify them in place.

    Example:
        >>> data_tensors("eight_schools-eight_schools_noncentered")["y"].shape
        torch.Size([8])
    """
    _check_name(name)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"data_tensors: expected a floating torch.dtype, got {dtype!r}")
    device = torch.get_default_device() if device is None else torch.device(device)
    return dict(_cached_tensors(name, find_posteriordb(path), dtype, device))
