"""Checks of the ``pyro-relax`` command's options, made before anything runs.

Used only by :mod:`pyro_relax.cli`: the bounds of the numeric options, the
device, and the quieting of Lightning's notices for ``density``.
"""

from __future__ import annotations

__all__ = [
    "BOUNDS", "LR_MAX", "check_memory", "check_numbers", "quiet_lightning", "setup_device",
]

import argparse
import math
import os

# Counts checked before anything runs: option name -> (smallest, largest) allowed value.
# ArviZ's summary (ESS, R-hat) needs at least 4 draws; the largest values keep a typo
# (an extra zero or three) from failing for want of memory after the fit.
BOUNDS = {
    "steps": (1, 10**8), "num_samples": (4, 10**7), "chains": (1, 256), "warmup": (0, 10**8),
    "guide_steps": (1, 10**8), "particles": (1, 10**5), "seed": (0, 2**32 - 1),
}
LR_MAX = 10.0  # larger learning rates only diverge


def check_numbers(args: argparse.Namespace) -> str | None:
    """The first problem with the numeric options of a parsed command line, or None.

    Example:
        >>> check_numbers(argparse.Namespace(num_samples=10**9, seed=0))
        '--num-samples must be at most 10000000, got 1000000000'
    """
    for name, (lowest, highest) in BOUNDS.items():
        value = getattr(args, name, None)
        option = f"--{name.replace('_', '-')}"
        if value is not None and value < lowest:
            return f"{option} must be at least {lowest}, got {value}"
        if value is not None and value > highest:
            return f"{option} must be at most {highest}, got {value}"
    lr = getattr(args, "lr", 1.0)
    if not (math.isfinite(lr) and 0 < lr <= LR_MAX):
        return f"--lr must be a positive number at most {LR_MAX:g}, got {lr:g}"
    budget = getattr(args, "budget", 1.0)
    if not (math.isfinite(budget) and budget > 0):
        return f"--budget must be a positive number of seconds (e.g. 600), got {budget:g}"
    return None


def check_memory(draws: int, size: int, copies: int = 4) -> None:
    """Refuse ``draws`` posterior draws of ``size`` values that cannot fit in this machine's memory.

    A run keeps about ``copies`` float64 copies of its draws (the draws, the
    corrected ones, the netCDF file being built, the summary's work).

    Raises:
        ValueError: naming ``--num-samples`` and the memory needed and present.

    Example:
        >>> check_memory(1000, 3)  # 96 kB: fine
        >>> try:
        ...     check_memory(10**7, 10**6)
        ... except ValueError as err:
        ...     print(str(err).split(",")[0])
        --num-samples: 10000000 draws of 1000000 values need about 320000 GB
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not known here: no check
        return
    need = draws * size * 8 * copies
    if need > total:
        raise ValueError(f"--num-samples: {draws} draws of {size} values need about "
                         f"{need / 1e9:.0f} GB, more than this machine's {total / 1e9:.0f} GB; "
                         "ask for fewer draws")


def setup_device(device: str) -> None:
    """Check ``--device`` (``cpu``, ``cuda`` or ``cuda:N`` that exists).

    The command then runs inside ``with torch.device(device)`` (``cli.main``):
    torch's default device is the run's only while it runs.

    Raises:
        ValueError: naming the device asked for and what is available.
    """
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"expected --device cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device here")
    if device.startswith("cuda:"):
        index, count = device[5:], torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise ValueError(f"expected --device cuda:N with N < {count}, got {device!r}")


def quiet_lightning() -> None:
    """Silence Lightning's tips, info lines and deprecation notices (this process and workers).

    Lightning sets its loggers' levels when it is imported, so it is imported first.
    """
    import importlib
    import logging
    import warnings

    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(pytorch_)?lightning")
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=r"torch")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
