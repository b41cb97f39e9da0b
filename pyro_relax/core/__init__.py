"""The layer contract and the shared checks that every family builds on.

* :class:`RelaxedLayer` (``core.layer``): the base class of every layer;
* ``core.checks``: the input checks (``check_int``, ``check_real``, ...);
* ``core.validation``: the switch for the checks that synchronize with the device.

The names are loaded on first use, so ``import pyro_relax`` does not import torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "RelaxedLayer": "layer",
    "sum_event": "layer",
    "check_callable": "checks",
    "check_event_shape": "checks",
    "check_finite": "checks",
    "check_int": "checks",
    "check_positive": "checks",
    "check_positive_int": "checks",
    "check_probability": "checks",
    "check_real": "checks",
    "floating_input": "checks",
    "validation": "validation",
    "validation_enabled": "validation",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pyro_relax.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pyro_relax.core.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
