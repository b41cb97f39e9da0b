"""Pyro models and their data read from a user's Python file (``MODEL.py[:name]``).

The ``pyro-relax`` command imports the file with :func:`import_file` (never
through ``sys.modules``, and writing no ``__pycache__`` beside it).
:class:`FileModel` is such a model that survives pickling: it pickles as its
file's path and the model's name and imports the file again where it is
unpickled, e.g. in the worker processes that ``ddp_spawn`` starts, so a guide
holding it pickles too. :func:`load_data` reads the data of a data-parallel fit
(``pyro-relax fit MODEL --devices N``) from the same file.
"""

from __future__ import annotations

__all__ = [
    "DEVICES_HELP",
    "ERRORS",
    "FileModel",
    "add_devices_options",
    "check_devices_options",
    "import_file",
    "load_data",
    "prepare_data_parallel",
    "trial_run",
]

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import Tensor

# Errors the command reports as one line and exit code 1 (OSError covers missing
# files, existing folders and unwritable paths; RuntimeError covers device failures).
ERRORS = (ValueError, TypeError, OSError, FloatingPointError, ImportError, RuntimeError)
"""The exceptions a bad model file or bad data raise here; the CLI prints them as one line."""


def import_file(path: str | os.PathLike[str]) -> ModuleType:
    """Import the Python file ``path`` as a fresh module (not entered in ``sys.modules``).

    The file's folder is on ``sys.path`` while it runs (for its own imports).

    Raises:
        FileNotFoundError: if there is no such file.
        IsADirectoryError: if ``path`` is a folder.
        ImportError: if the file cannot be imported, with its error in one line,
            or calls ``sys.exit`` while it is imported.

    Example:
        >>> import_file("no/such/file.py")
        Traceback (most recent call last):
        ...
        FileNotFoundError: model file not found: no/such/file.py
    """
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(f"expected a model file (MODEL.py), {os.fspath(path)} is a folder")
    if not file.is_file():
        raise FileNotFoundError(f"model file not found: {os.fspath(path)}")
    mod_spec = importlib.util.spec_from_file_location(f"_pyro_relax_user_{file.stem}", file)
    if mod_spec is None or mod_spec.loader is None:
        raise ImportError(f"cannot import {os.fspath(path)} as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    sys.path.insert(0, str(file.resolve().parent))
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ there
    try:
        mod_spec.loader.exec_module(module)
    except Exception as err:  # the user's file: a syntax error, a failing import, ...
        detail = str(err).strip().splitlines()
        raise ImportError(f"importing {os.fspath(path)} failed: {type(err).__name__}: "
                          f"{detail[0] if detail else ''}") from err
    except SystemExit as err:  # sys.exit() at import: never the command's own exit
        raise ImportError(f"importing {os.fspath(path)} failed: it called sys.exit({err.code!r}) "
                          "(guard script code with if __name__ == '__main__':)") from None
    finally:
        sys.path.pop(0)
        sys.dont_write_bytecode = bytecode
    return module


class FileModel:
    r"""The callable ``name`` of the Python file ``path``, picklable by path.

    Calling it calls the function. Pickled, it is only ``(path, name)``: the
    unpickling process imports the file again (so the file must be importable
    there, e.g. define its data at module level or in a function, and run
    nothing else at import). ``path`` is made absolute when it is created.

    Arguments:
        path: the Python file.
        name: the name of a callable defined in it.

    Raises:
        FileNotFoundError: if there is no such file.
        ImportError: if it cannot be imported.
        ValueError: if it defines no callable ``name``.

    Example:
        >>> import pickle, tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     file = pathlib.Path(folder) / "m.py"
        ...     _ = file.write_text("def model(x):\n    return 2 * x\n")
        ...     copy = pickle.loads(pickle.dumps(FileModel(file, "model")))
        ...     copy(21), copy.name
        (42, 'model')
    """

    def __init__(self, path: str | os.PathLike[str], name: str = "model") -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"FileModel: expected a Python name, got {name!r}")
        self.path = Path(path).resolve() if Path(path).is_file() else Path(path)
        self.name = name
        self.module = import_file(self.path)
        fn = getattr(self.module, name, None)
        if fn is None or not callable(fn):
            raise ValueError(f"{os.fspath(path)} has no callable {name!r}; "
                             f"name the model as {os.fspath(path)}:NAME")
        self.function = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - the user's model
        """Call the model."""
        return self.function(*args, **kwargs)

    def __reduce__(self) -> tuple[type[FileModel], tuple[str, str]]:
        """Pickle as ``FileModel(path, name)``: the file is imported again when unpickled."""
        return (FileModel, (os.fspath(self.path), self.name))

    def __repr__(self) -> str:
        """``FileModel('path', 'name')``."""
        return f"FileModel({os.fspath(self.path)!r}, {self.name!r})"


def trial_run(model: Callable[[], Any]) -> int:
    """Run a zero-argument model once under a trace and check what the fit will need.

    It must run (without calling ``sys.exit``), have continuous latent sites
    only, each with a support that maps to unconstrained space and a name the
    output can hold (no ``/``), and a log density that is not NaN. The draw
    comes from the prior, so seed first (the command seeds with ``--seed``).

    Returns:
        The number of latent values in one draw (to size the draws asked for).

    Raises:
        ValueError: if the model raises (its error, in one line, follows), exits,
            or has a discrete latent site, or a site that cannot be transformed or
            written.
        FloatingPointError: if the log density is NaN.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> trial_run(lambda: pyro.sample("x", dist.Normal(0.0, 1.0).expand([3])))
        3
        >>> trial_run(lambda: pyro.sample("a/b", dist.Normal(0.0, 1.0)))
        Traceback (most recent call last):
        ...
        ValueError: site 'a/b': a '/' in a site name cannot be written to posterior.nc; rename it
    """
    from pyro import poutine

    from pyro_relax.infer.runner import check_continuous_model

    try:
        trace = poutine.trace(model).get_trace()
    except SystemExit as err:
        raise ValueError(f"the model called sys.exit({err.code!r}) on a trial run") from None
    except Exception as err:  # the user's model (Pyro's checks of its parameters included)
        detail = str(err).strip().splitlines()
        raise ValueError(f"the model raised {type(err).__name__} on a trial run: "
                         f"{detail[0] if detail else ''}") from err
    sites = check_continuous_model(poutine.replay(model, trace=trace))
    _check_sites(trace)
    log_p = float(trace.log_prob_sum())
    if math.isnan(log_p):
        raise FloatingPointError("the model's log density is NaN at a draw from its prior")
    return sum(math.prod(shape) for shape in sites.values())


def _check_sites(trace: Any) -> None:  # noqa: ANN401 - a Pyro trace
    """Names and supports of the latent (and deterministic) sites, before the fit."""
    from torch.distributions import biject_to

    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        deterministic = site["infer"].get("_deterministic", False)
        support = getattr(site["fn"], "support", None)  # None: a plate's subsample site
        if site["is_observed"] and not deterministic or support is None:
            continue
        if "/" in name:
            raise ValueError(f"site {name!r}: a '/' in a site name cannot be written to "
                             "posterior.nc; rename it")
        if deterministic or site["infer"].get("is_auxiliary") or support.is_discrete:
            continue
        try:
            biject_to(support)
        except NotImplementedError:
            raise ValueError(
                f"site {name!r}: its support {support} has no transform to "
                "unconstrained space, so it cannot be fitted; reparametrize it (a Wishart or "
                "positive-definite matrix as a Cholesky factor: LKJCholesky and scales)"
            ) from None


def load_data(module: ModuleType, name: str = "data") -> tuple[Tensor, ...]:
    """The data tensors of a model file: its attribute ``name``.

    The attribute is a tensor, a tuple or list of tensors, or a zero-argument
    function returning one of these. The tensors must share their first
    dimension (the size of the model's subsampled plate).

    Raises:
        ValueError: if there is no such attribute, no tensor, or the first
            dimensions differ.
        TypeError: if something in it is not a tensor.

    Example:
        >>> import torch, types
        >>> m = types.ModuleType("m"); m.data = lambda: (torch.zeros(5), torch.ones(5, 2))
        >>> [tuple(t.shape) for t in load_data(m)]
        [(5,), (5, 2)]
    """
    where = getattr(module, "__file__", None) or module.__name__
    if not hasattr(module, name):
        raise ValueError(f"{where} defines no {name!r}: a data-parallel fit needs the data as a "
                         f"tuple of tensors {name} = (x, ...) or a function {name}() returning "
                         f"it (or name it with --data NAME)")
    value = getattr(module, name)
    if callable(value) and not isinstance(value, Tensor):
        try:
            value = value()
        except Exception as err:  # the user's function
            raise ValueError(f"{name}() in {where} raised {type(err).__name__}: {err}") from err
    items = (value,) if isinstance(value, Tensor) else value
    if not isinstance(items, tuple | list) or not items:
        raise TypeError(f"expected {name} in {where} a tensor or a tuple of tensors, "
                        f"got {type(value).__name__}")
    bad = [type(t).__name__ for t in items if not isinstance(t, Tensor)]
    if bad:
        raise TypeError(f"expected {name} in {where} to hold only tensors, got {bad}")
    shapes = [tuple(t.shape) for t in items]
    if any(not s for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(f"expected the tensors of {name} in {where} to share their first "
                         f"dimension (the plate's), got shapes {shapes}")
    return tuple(items)


# -- pyro-relax fit --devices N ------------------------------------------------
DEVICES_HELP = (
    "data-parallel fit on N processes (CPU) or GPUs through pyro_relax.lightning: the model "
    "file then defines model(ind, *data), with pyro.plate(name, size, subsample=ind) over the "
    "data, and the data (see --data); each step's --batch-size indices are split between the "
    "workers. The posterior is drawn with the model on all indices")
"""The ``--devices`` help text, shared by the parser and the error messages."""


def add_devices_options(fit: argparse.ArgumentParser) -> None:
    """Add ``--devices``, ``--strategy``, ``--batch-size`` and ``--data`` to the ``fit`` parser."""
    from pyro_relax.infer.runner import GUIDES

    svi = ", ".join(k for k, m in GUIDES.items() if m.make is not None)  # lightning's GUIDE_NAMES
    fit.add_argument("--devices", type=int, default=None, metavar="N",
                     help=f"{DEVICES_HELP} (guides: {svi})")
    fit.add_argument("--strategy", default=None,
                     help="with --devices: auto (one process) or ddp (DistributedDataParallel, "
                          "workers spawned from this process); default ddp for N > 1")
    fit.add_argument("--batch-size", type=int, default=None,
                     help="with --devices: indices per step, over all workers (divisible by "
                          "N; default 64 or the data size, rounded down to a multiple of N)")
    fit.add_argument("--data", default=None, metavar="NAME",
                     help="with --devices: the model file's data, a tensor or tuple of tensors "
                          "sharing their first dimension, or a function NAME() returning it "
                          "(default: data)")


def check_devices_options(args: argparse.Namespace) -> tuple[str, int]:
    """Check the options of a data-parallel fit that need no file; return accelerator, devices.

    Raises:
        ValueError: for a guide that does not train by SVI steps, a bad strategy,
            dtype or device, or more devices than this machine has.
        ImportError: without the ``lightning`` package.
    """
    if args.devices < 1:
        raise ValueError(f"--devices must be at least 1, got {args.devices}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    from pyro_relax.lightning import GUIDE_NAMES, check_devices

    if args.guide not in GUIDE_NAMES:
        raise ValueError(f"--devices trains the guide by SVI steps on subsamples: expected "
                         f"--guide one of {list(GUIDE_NAMES)}, got {args.guide!r}")
    if args.strategy is None:
        args.strategy = "ddp" if args.devices > 1 else "auto"
    if args.strategy not in ("auto", "ddp"):
        raise ValueError(f"expected --strategy auto or ddp, got {args.strategy!r}")
    if args.strategy == "auto" and args.devices > 1:
        raise ValueError(f"--devices {args.devices} needs --strategy ddp")
    if args.dtype != "float32":
        raise ValueError(f"--devices fits in float32 (torch's default in the worker processes), "
                         f"got --dtype {args.dtype}")
    if args.device.startswith("cuda:"):
        raise ValueError(f"--devices {args.devices} uses the first N GPUs: give --device cuda, "
                         f"got --device {args.device}")
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    try:
        check_devices(accelerator, args.devices)
    except ValueError as err:
        raise ValueError(f"--devices {args.devices}: {err}") from err
    return accelerator, args.devices


def prepare_data_parallel(args: argparse.Namespace) -> tuple[FileModel, tuple[Tensor, ...]]:
    """Check the options, import the model file and its data; return the model and the data.

    Also sets ``args.batch_size`` when it was not given.

    Raises:
        ValueError, TypeError, ImportError, FileNotFoundError: one line each, as
        :func:`check_devices_options`, :class:`FileModel` and :func:`load_data` say,
        and for a ``--batch-size`` not divisible by the devices or larger than the data.
    """
    _, devices = check_devices_options(args)
    args.data = args.data or "data"
    path, _, name = args.model.partition(":")
    model = FileModel(path, name or "model")
    data = load_data(model.module, args.data)
    size = data[0].shape[0]
    if args.batch_size is None:
        args.batch_size = min(64, size) // devices * devices
        if args.batch_size < 1:
            raise ValueError(f"--devices {devices} needs at least {devices} data items, "
                             f"got {size}")
    if args.batch_size % devices:
        raise ValueError(f"--batch-size {args.batch_size} is not divisible by --devices "
                         f"{devices}")
    if args.batch_size > size:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the data "
                         f"({size} items in {args.data})")
    return model, data
