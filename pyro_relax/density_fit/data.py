"""The data of ``pyro-relax density``: built-in sets, ``.npy`` and ``.csv`` files, the split."""

from __future__ import annotations

__all__ = ["BUILTIN", "load_data", "split_data"]

import csv
import math
from pathlib import Path

import torch
from torch import Tensor

from pyro_relax import datasets

BUILTIN = sorted([*datasets.DATASETS, "digits"])
"""The names of the built-in data sets."""


def load_data(spec: str, *, n: int = 5000, seed: int = 0) -> Tensor:
    """The data named by ``spec``: a built-in set, a ``.npy`` or a ``.csv`` file, as ``(n, d)``.

    A CSV may start with one header row; every other cell must be a number and
    every row must have the same number of columns. Values must be finite.

    Arguments:
        spec: a name from ``BUILTIN`` or the path of a ``.npy``/``.csv`` file.
        n: points drawn from a 2-D built-in set.
        seed: seed of the built-in sets.

    Returns:
        A float tensor of shape ``(n, d)`` (the default dtype).

    Raises:
        ValueError: naming what was expected, for every bad input.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"expected DATA a .npy or .csv file or one of {BUILTIN}, got {spec!r}")
    # on the CPU whatever torch's default device: the DataLoaders move each batch
    if spec in datasets.DATASETS:
        return datasets.load(spec, n, seed=seed).cpu()
    if spec == "digits":
        return torch.cat(datasets.digits(seed=seed)).cpu()
    path = Path(spec)
    if path.suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"expected DATA a .npy or .csv file or one of {BUILTIN}, got {spec!r}")
    if not path.is_file():
        raise ValueError(f"expected DATA an existing file, {spec} does not exist")
    array = _read_npy(path) if path.suffix.lower() == ".npy" else _read_csv(path)
    return _check_values(array, path.name)


def _read_npy(path: Path) -> Tensor:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"expected {path.name} a numeric .npy array, could not read it: "
                         f"{str(err).splitlines()[0]}") from err
    if array.dtype.kind not in "biuf":
        raise ValueError(f"expected a numeric array in {path.name}, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array (points, columns) in {path.name}, "
                         f"got shape {tuple(array.shape)}")
    return torch.as_tensor(array.astype("float64"), dtype=torch.get_default_dtype(), device="cpu")


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: Path) -> Tensor:
    try:
        with path.open(newline="") as f:
            rows = [(i + 1, r) for i, r in enumerate(csv.reader(f)) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"expected {path.name} a text CSV of numbers: {err}") from err
    if rows and all(_number(c) is None for c in rows[0][1]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError(f"expected rows of numbers in {path.name}, found none")
    width = len(rows[0][1])
    values = []
    for line, row in rows:
        if len(row) != width:
            raise ValueError(f"expected {width} columns on every row of {path.name} (as on its "
                             f"first data row), line {line} has {len(row)}")
        parsed = [_number(c) for c in row]
        for j, v in enumerate(parsed):
            if v is None:
                raise ValueError(f"expected a number in every cell of {path.name}; line {line}, "
                                 f"column {j + 1} holds {row[j].strip()!r}")
        values.append(parsed)
    return torch.tensor(values, dtype=torch.get_default_dtype(), device="cpu")


def _check_values(x: Tensor, name: str) -> Tensor:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"expected finite values in {name}; point {i + 1}, column {j + 1} "
                         f"is {float(x[i, j])}")
    return x


def split_data(x: Tensor, val_fraction: float, test_fraction: float,
               seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Shuffle (seeded) and cut ``x`` into train, validation and test parts.

    Raises:
        ValueError: for fractions outside ``(0, 1)`` or too few points for three parts.
    """
    for name, f in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not (math.isfinite(f) and 0 < f < 1):
            raise ValueError(f"expected {name} strictly between 0 and 1, got {f}")
    if val_fraction + test_fraction >= 0.9:
        raise ValueError(f"expected --val-fraction + --test-fraction below 0.9, "
                         f"got {val_fraction + test_fraction:.3g}")
    n = x.shape[0]
    n_val, n_test = max(1, int(n * val_fraction)), max(1, int(n * test_fraction))
    if n - n_val - n_test < 8:
        left = max(n - n_val - n_test, 0)
        raise ValueError(f"expected at least 8 training points after the split, got {left} "
                         f"of {n} point{'s' if n != 1 else ''} ({n_val} go to validation and "
                         f"{n_test} to test; the data needs at least {8 + n_val + n_test} rows)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    x = x[perm.to(x.device)]
    return x[n_val + n_test:], x[:n_val], x[n_val:n_val + n_test]
