"""A switch for the input checks that synchronize with the device."""

from __future__ import annotations

__all__ = ["validation", "validation_enabled"]

import contextlib
from collections.abc import Iterator

_ENABLED = [True]


def validation_enabled() -> bool:
    """Whether pyro-relax checks its inputs for NaN/inf and domain errors."""
    return _ENABLED[0]


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Turn the input checks on or off inside a ``with`` block.

    The checks cost one host synchronization per call; switch them off in a
    hot training loop once the inputs are known to be good.

    Example:
        >>> import pyro_relax
        >>> with pyro_relax.validation(False):
        ...     pass
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"validation: expected a bool, got {type(enabled).__name__}")
    old = _ENABLED[0]
    _ENABLED[0] = enabled
    try:
        yield
    finally:
        _ENABLED[0] = old
