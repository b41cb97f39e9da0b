"""The layer contract and the shared checks that every family builds on.

* :class:`RelaxedLayer` (``core.layer``): the base class of every layer;
* :mod:`~pyro_relax.core.checks`: the input checks every public function uses
  (``check_int``, ``check_real``, ``check_event_shape``, ...), imported from there;
* ``core.switch``: the switch for the checks that synchronize with the device.

The names are loaded on first use, so ``import pyro_relax`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the names are, for type checkers and the API reference
    from pyro_relax.core.layer import RelaxedLayer, VectorLayer, append_context, sum_event
    from pyro_relax.core.switch import validation, validation_enabled

_HOMES = {
    "RelaxedLayer": "layer",
    "VectorLayer": "layer",
    "append_context": "layer",
    "sum_event": "layer",
    "validation": "switch",
    "validation_enabled": "switch",
}

__all__ = [
    "RelaxedLayer",
    "VectorLayer",
    "append_context",
    "sum_event",
    "validation",
    "validation_enabled",
]


def __getattr__(name: str) -> object:
    """Load a public name from its home module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pyro_relax.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pyro_relax.core.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones included."""
    return sorted(set(globals()) | set(__all__))
