"""A generic checker for fuzz tests: a call either succeeds cleanly or fails cleanly.

"Cleanly" means: the result holds only finite floating values (and has the
shapes asked for), or the call raised a ``ValueError``/``TypeError`` whose
message names the entry point the user called. A raw ``RuntimeError``,
``IndexError`` or similar from inside torch, or a silent NaN, is a failure.

Every fuzz suite of the project uses these, with the bad-input strategies of
:mod:`pyro_relax.testing.strategies`::

    from hypothesis import given
    from pyro_relax.testing.fuzz import assert_clean_failure, fuzz_settings
    from pyro_relax.testing.strategies import bad_tensors

    @fuzz_settings()
    @given(x=bad_tensors((2,)))
    def test_my_layer(x):
        assert_clean_failure(lambda: my_layer.encode(x), "MyLayer")

The number of examples is small by default; ``RELAX_SLOW=1`` in the
environment turns every :func:`fuzz_settings` test into a long run
(``SLOW_EXAMPLES`` examples each). A hypothesis profile ``"slow"`` with the same
count is registered too, for ``settings.load_profile("slow")``.
"""

from __future__ import annotations

__all__ = [
    "CLEAN_ERRORS",
    "SLOW_EXAMPLES",
    "assert_clean_failure",
    "assert_finite",
    "check_rejects_or_finite",
    "fuzz_settings",
    "slow_run",
]

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch
from hypothesis import HealthCheck, settings

from pyro_relax.core.checks import check_size

_T = TypeVar("_T")

#: The exception types a clean failure may raise.
CLEAN_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError)

#: Examples per fuzz test when ``RELAX_SLOW=1``.
SLOW_EXAMPLES = 500

settings.register_profile(
    "slow",
    derandomize=True,
    deadline=None,
    max_examples=SLOW_EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def slow_run() -> bool:
    """Whether the long fuzz run is asked for (``RELAX_SLOW=1`` in the environment)."""
    return os.environ.get("RELAX_SLOW", "") not in ("", "0")


def fuzz_settings(max_examples: int = 10, slow_examples: int = SLOW_EXAMPLES) -> settings:
    """Hypothesis settings for a fuzz test: derandomized, no deadline.

    Arguments:
        max_examples: examples in the default run (keep each test a few seconds).
        slow_examples: examples when :func:`slow_run` is true.

    Returns:
        A ``hypothesis.settings`` object, usable as a decorator.

    Raises:
        ValueError: if a count is not a positive int.
    """
    for name, n in (("max_examples", max_examples), ("slow_examples", slow_examples)):
        check_size(n, name, "fuzz_settings")
    return settings(
        derandomize=True,
        deadline=None,
        max_examples=slow_examples if slow_run() else max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def _walk(value: object, path: str) -> list[tuple[str, object]]:
    """Every leaf of a nested result, with a readable path."""
    if isinstance(value, torch.Tensor | float | int | bool) or value is None:
        return [(path, value)]
    if isinstance(value, Mapping):
        out: list[tuple[str, object]] = []
        for k, v in value.items():
            out.extend(_walk(v, f"{path}[{k!r}]"))
        return out
    if isinstance(value, tuple | list):
        out = []
        fields = getattr(value, "_fields", None)
        for i, v in enumerate(value):
            out.extend(_walk(v, f"{path}.{fields[i]}" if fields else f"{path}[{i}]"))
        return out
    return [(path, value)]


def assert_finite(value: object, entry_point: str = "result") -> None:
    """Raise ``AssertionError`` if any floating tensor or float inside ``value`` is NaN or inf.

    Arguments:
        value: a tensor, a float, or a (named) tuple, list or dict of them;
            other leaves (ints, bools, strings, modules) are not checked.
        entry_point: what to call the value in the message.

    Raises:
        AssertionError: naming the first non-finite leaf.
    """
    for path, leaf in _walk(value, entry_point):
        if isinstance(leaf, torch.Tensor):
            if leaf.device.type == "meta" or not (leaf.is_floating_point() or leaf.is_complex()):
                continue
            if not bool(torch.isfinite(leaf).all()):
                bad = int((~torch.isfinite(leaf)).sum())
                raise AssertionError(
                    f"{path}: silent non-finite result, {bad} NaN/inf entries in a tensor of "
                    f"shape {tuple(leaf.shape)}"
                )
        elif isinstance(leaf, float) and not math.isfinite(leaf):
            raise AssertionError(f"{path}: silent non-finite result {leaf}")


def _check_shape(leaf: object, want: Sequence[int] | torch.Size | None, path: str) -> None:
    if want is None:
        return
    if not isinstance(leaf, torch.Tensor):
        raise AssertionError(f"{path}: expected a tensor of shape {tuple(want)}, got {leaf!r}")
    if tuple(leaf.shape) != tuple(want):
        raise AssertionError(f"{path}: expected shape {tuple(want)}, got {tuple(leaf.shape)}")


def assert_clean_failure(
    call: Callable[[], _T],
    entry_point: str | Sequence[str],
    *,
    shape: Sequence[int] | torch.Size | None = None,
    shapes: Sequence[Sequence[int] | torch.Size | None] | None = None,
    check: Callable[[_T], None] | None = None,
    finite: bool = True,
    errors: tuple[type[BaseException], ...] = CLEAN_ERRORS,
) -> _T | BaseException:
    """Run ``call()``; it must either succeed cleanly or fail cleanly.

    Arguments:
        call: a function of no arguments (usually a ``lambda``).
        entry_point: the name (or names, any of which will do) that an error
            message must contain, e.g. ``"AbsSurjection"`` or ``"importance_ess"``.
        shape: if given, the result must be a tensor of this shape.
        shapes: if given, the result must be a tuple/list whose ``i``-th item is a
            tensor of shape ``shapes[i]`` (``None`` entries are not checked).
        check: an extra check run on a successful result (raise ``AssertionError``).
        finite: whether every floating tensor of the result must be finite.
        errors: the exception types that count as a clean failure.

    Returns:
        The result of ``call()`` when it succeeded, else the caught exception
        (test ``isinstance(out, Exception)`` to tell the two apart).

    Raises:
        AssertionError: on a raw error (any type not in ``errors``, chained as the
            cause), an error message that names no entry point, a non-finite
            result or a wrong shape.

    Example:
        >>> import torch
        >>> from pyro_relax.surjections import AbsSurjection
        >>> layer = AbsSurjection()
        >>> out = assert_clean_failure(
        ...     lambda: layer.encode(torch.ones(4, 2)), "AbsSurjection", shapes=[(4, 2), (4,)]
        ... )
        >>> bad = assert_clean_failure(
        ...     lambda: AbsSurjection().encode(torch.full((4, 2), float("nan"))), "AbsSurjection"
        ... )
        >>> isinstance(bad, ValueError)
        True
    """
    names = (entry_point,) if isinstance(entry_point, str) else tuple(entry_point)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError(
            f"assert_clean_failure: expected entry_point a non-empty str or strs, "
            f"got {entry_point!r}"
        )
    if not callable(call):
        raise TypeError(f"assert_clean_failure: expected a callable, got {type(call).__name__}")
    label = names[0]
    try:
        result = call()
    except errors as exc:
        message = str(exc)
        if not any(n in message for n in names):
            raise AssertionError(
                f"{label}: {type(exc).__name__} does not name the entry point "
                f"(any of {list(names)}): {message!r}"
            ) from exc
        return exc
    except Exception as exc:  # noqa: BLE001 - the point is to catch raw errors
        raise AssertionError(
            f"{label}: raw {type(exc).__name__} instead of a ValueError/TypeError: {exc}"
        ) from exc
    if shape is not None:
        _check_shape(result, shape, label)
    if shapes is not None:
        if not isinstance(result, tuple | list) or len(result) != len(shapes):
            raise AssertionError(
                f"{label}: expected a sequence of {len(shapes)} results, "
                f"got {type(result).__name__}"
            )
        for i, (leaf, want) in enumerate(zip(result, shapes, strict=True)):
            _check_shape(leaf, want, f"{label}[{i}]")
    if finite:
        assert_finite(result, label)
    if check is not None:
        check(result)
    return result


def check_rejects_or_finite(
    fn: Callable[..., _T], *args: object, name: str | Sequence[str], **kwargs: object
) -> _T | BaseException:
    """``assert_clean_failure(lambda: fn(*args, **kwargs), name)``: the short form.

    Arguments:
        fn: the function under test.
        *args: its positional arguments.
        name: the entry point an error message must name.
        **kwargs: its keyword arguments.

    Returns:
        What :func:`assert_clean_failure` returns.
    """
    return assert_clean_failure(lambda: fn(*args, **kwargs), name)
