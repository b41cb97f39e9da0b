"""The package's shared input checks, one message style for every public function.

Each check returns the checked value or raises a ``TypeError`` (wrong kind) or
``ValueError`` (wrong value) that names the caller, what was expected and what came.
"""

from __future__ import annotations

__all__ = [
    "check_callable",
    "check_event_shape",
    "check_finite",
    "check_int",
    "check_positive",
    "check_positive_int",
    "check_probability",
    "check_real",
    "check_size",
    "floating_input",
]

import math
import numbers

import torch
from torch import Tensor

from pyro_relax.core.switch import validation_enabled


def check_int(value: object, name: str, owner: str, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int`` (at least ``minimum`` when given), else raise.

    ``bool`` is refused although it is an ``int`` subclass.

    Arguments:
        value: the value to check.
        name: the argument's name, for the message.
        owner: the caller, for the message.
        minimum: the smallest allowed value, or ``None`` for no bound.

    Returns:
        ``int(value)``.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value < minimum``.

    Example:
        >>> check_int(3, "num_steps", "demo", minimum=1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: expected an int {name}, got {type(value).__name__}")
    if minimum is not None and int(value) < minimum:
        raise ValueError(f"{owner}: expected {name} >= {minimum}, got {value!r}")
    return int(value)


def check_positive_int(value: object, name: str, owner: str) -> int:
    """Return ``value`` if it is an ``int >= 1``, else raise (see :func:`check_int`).

    Example:
        >>> check_positive_int(2, "hidden", "demo")
        2
    """
    return check_int(value, name, owner, minimum=1)


def check_size(value: object, name: str, owner: str, minimum: int = 1) -> int:
    """Return a layer size ``value`` (an ``int >= minimum``), else raise a ``ValueError``.

    For the sizes a layer is built with (``dim``, ``hidden``, ``context_dim``):
    a wrong kind and a wrong value are both configuration errors, so both raise a
    ``ValueError``, saying ``expected a positive int NAME, i.e. NAME >= 1`` for
    ``minimum=1`` and ``expected an int NAME >= MINIMUM`` otherwise.

    Example:
        >>> check_size(3, "dim", "demo")
        3
        >>> check_size(2.5, "dim", "demo")
        Traceback (most recent call last):
        ...
        ValueError: demo: expected a positive int dim, i.e. dim >= 1, got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = f"a positive int {name}, i.e. {name}" if minimum == 1 else f"an int {name}"
        what = f"{what} >= {minimum}"
        raise ValueError(f"{owner}: expected {what}, got {value!r}")
    return int(value)


def check_real(
    value: object,
    name: str,
    owner: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    closed: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` in ``(low, high)`` (``[low, high]`` if ``closed``).

    Arguments:
        value: the value to check.
        name: the argument's name, for the message.
        owner: the caller, for the message.
        low: lower bound.
        high: upper bound.
        closed: include the bounds.

    Returns:
        ``float(value)``.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is not finite or out of bounds.

    Example:
        >>> check_real(0.5, "lam", "demo", 0.0, 1.0, closed=True)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: expected a real number {name}, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{owner}: expected a finite {name}, got {value!r}")
    inside = low <= out <= high if closed else low < out < high
    if not inside:
        lo, hi = ("[", "]") if closed else ("(", ")")
        raise ValueError(f"{owner}: expected {name} in {lo}{low}, {high}{hi}, got {value!r}")
    return out


def check_positive(value: object, name: str, owner: str) -> float:
    """Return ``value`` as a finite ``float > 0``, else raise.

    Example:
        >>> check_positive(0.1, "step_size", "demo")
        0.1
    """
    out = check_real(value, name, owner)
    if out <= 0.0:
        raise ValueError(f"{owner}: expected {name} > 0, got {value!r}")
    return out


def check_probability(value: object, name: str, owner: str) -> float:
    """Return ``value`` as a ``float`` in the open interval ``(0, 1)``, else raise.

    The ends are refused: a probability of 0 or 1 makes a log or a ratio infinite.

    Example:
        >>> check_probability(0.65, "target_accept_prob", "demo")
        0.65
        >>> check_probability(1, "p", "demo")
        Traceback (most recent call last):
        ...
        ValueError: demo: expected p in (0.0, 1.0), got 1
    """
    return check_real(value, name, owner, 0.0, 1.0)


def check_callable(value: object, name: str, owner: str) -> None:
    """Raise a ``TypeError`` unless ``value`` is callable.

    Example:
        >>> check_callable(len, "model", "demo")
    """
    if not callable(value):
        raise TypeError(f"{owner}: expected a callable {name}, got {type(value).__name__}")


def check_event_shape(x: Tensor, event_shape: tuple[int, ...] | torch.Size, name: str) -> None:
    """Raise a ``ValueError`` unless the rightmost dimensions of ``x`` are ``event_shape``.

    Arguments:
        x: a tensor of shape ``batch_shape + event_shape``.
        event_shape: the expected event shape.
        name: what to call the caller in the message.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    event_shape = tuple(event_shape)
    n = len(event_shape)
    if x.dim() < n or (n and tuple(x.shape[-n:]) != event_shape):
        got = tuple(x.shape[-n:]) if n and x.dim() >= n else tuple(x.shape)
        raise ValueError(
            f"{name}: expected event shape {event_shape}, got {got} (input shape {tuple(x.shape)})"
        )


def check_finite(x: Tensor, name: str) -> None:
    """Raise a ``ValueError`` if ``x`` holds NaN or inf (skipped on the meta device).

    This synchronizes with the device once; it is meant for entry points, not
    for the inside of a sampler step. Turn it off with
    :func:`pyro_relax.validation`.
    """
    if not validation_enabled() or x.device.type == "meta":
        return
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected finite values, got {n_bad} NaN or inf entries")


def floating_input(
    t: Tensor, dtype: torch.dtype | None, name: str, keep_integers: bool = False
) -> Tensor:
    """Apply the package's one dtype rule to an input tensor ``t``.

    * integer and bool tensors are converted to ``dtype`` (or the default float
      dtype when ``dtype`` is ``None``), unless ``keep_integers`` (layers that take
      integer data, such as dequantization, convert them themselves);
    * a floating tensor of another dtype than ``dtype`` is refused with a
      ``TypeError`` (no silent down- or up-cast; move the data or the layer with
      ``.to(dtype)``); with ``dtype=None`` any floating dtype passes;
    * complex tensors and non-tensors are refused with a ``TypeError``.

    Arguments:
        t: the input.
        dtype: the floating dtype of the entry point (its parameters), or ``None``.
        name: what to call the entry point in messages.
        keep_integers: leave integer and bool tensors as they are.

    Returns:
        ``t`` itself or its floating conversion.

    Raises:
        TypeError: as described above.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise TypeError(f"{name}: expected a real tensor, got {t.dtype}")
    if not t.is_floating_point():
        if keep_integers:
            return t
        return t.to(dtype or torch.get_default_dtype())
    if dtype is not None and t.dtype != dtype:
        raise TypeError(
            f"{name}: expected {dtype} input (the dtype of its parameters), got {t.dtype}; "
            f"convert the input with .to({dtype}) or the model with .to({t.dtype})"
        )
    return t
