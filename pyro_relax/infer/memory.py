"""A memory check before a large allocation: a one-line error naming the size, not a crash.

:func:`check_allocation` compares an estimated size with the memory this
process may still use (the machine's available memory, or a limit the user
sets with ``PYRO_RELAX_MEMORY_LIMIT`` in bytes, e.g. ``2e9``) and raises a
``ValueError`` that says what needs how much, before anything is allocated.
"""

from __future__ import annotations

__all__ = ["available_memory", "check_allocation", "format_bytes"]

import math
import os

_ENV = "PYRO_RELAX_MEMORY_LIMIT"


def format_bytes(n: float) -> str:
    """``n`` bytes in a short human form.

    Example:
        >>> format_bytes(25.6e9), format_bytes(512)
        ('25.6 GB', '512 B')
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_memory() -> float:
    """Bytes this process may still allocate: ``PYRO_RELAX_MEMORY_LIMIT``, else the free RAM.

    Returns ``inf`` where neither is known.
    """
    limit = os.environ.get(_ENV)
    if limit:
        try:
            value = float(limit)
        except ValueError as err:
            raise ValueError(f"expected {_ENV} as a number of bytes, got {limit!r}") from err
        if not value > 0:
            raise ValueError(f"expected {_ENV} > 0, got {limit!r}")
        return value
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return math.inf


def check_allocation(nbytes: float, what: str, owner: str, fraction: float = 0.8) -> None:
    """Raise ``ValueError`` when ``nbytes`` exceed ``fraction`` of :func:`available_memory`.

    Arguments:
        nbytes: the estimated size of the allocation.
        what: what would be allocated (said in the message).
        owner: the public function asking (said in the message).
        fraction: the share of the available memory one allocation may take.

    Example:
        >>> check_allocation(1e3, "a small buffer", "f")
        >>> check_allocation(1e30, "a 10^15 x 10^15 matrix", "f")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: f: a 10^15 x 10^15 matrix would need 1000000000000000000.0 TB, ...
    """
    if not isinstance(nbytes, int | float) or nbytes < 0:
        raise TypeError(f"check_allocation: expected a size in bytes, got {nbytes!r}")
    free = available_memory()
    if nbytes > fraction * free:
        raise ValueError(
            f"{owner}: {what} would need {format_bytes(nbytes)}, more than "
            f"{fraction:.0%} of the {format_bytes(free)} available; use a smaller model or "
            f"a method whose memory grows linearly in the dimension"
        )
