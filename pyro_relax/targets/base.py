"""The base class of the benchmark target densities."""

from __future__ import annotations

__all__ = ["Target"]

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from pyro_relax.core.switch import validation_enabled


def _real(value: object, name: str, owner: str) -> float:
    """Return ``value`` as a finite float, or raise ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: expected a real number for {name}, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{owner}: expected a finite {name}, got {value!r}")
    return out


def _positive(value: object, name: str, owner: str) -> float:
    """Return ``value`` as a finite positive float, or raise."""
    out = _real(value, name, owner)
    if out <= 0.0:
        raise ValueError(f"{owner}: expected {name} > 0, got {value!r}")
    return out


def _integer(value: object, name: str, owner: str, minimum: int) -> int:
    """Return ``value`` as an int at least ``minimum``, or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: expected an int for {name}, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{owner}: expected {name} >= {minimum}, got {value!r}")
    return int(value)


class Target(nn.Module, ABC):
    r"""An unnormalized benchmark density ``exp(log_prob(x))`` on ``R^dim``.

    A target knows its exact log normalizer ``log_Z``, so that
    ``normalized_log_prob(x) = log_prob(x) - log_Z`` is a proper log density;
    where it can, it also draws exact samples. All constants are registered
    buffers, so ``.to(device)`` and ``.double()`` move and cast them; ``log_Z``
    is a Python float computed once, in float64, at construction.

    Contract for a subclass:

    * call ``super().__init__(dim)`` first and register its constants as buffers;
    * set ``self._log_Z`` (a float) in its ``__init__``;
    * implement ``_log_prob(x)`` for a checked ``x`` of shape ``batch + (dim,)``,
      returning ``batch`` in the dtype of ``x`` (cast buffers with
      ``.to(x.dtype)``);
    * if ``has_exact_samples`` is true, implement ``_sample(sample_shape)``
      returning ``sample_shape + (dim,)`` on the device and in the dtype of
      :attr:`_anchor`.

    Arguments:
        dim: the event size; the event shape is ``(dim,)``.

    Example:
        >>> import torch
        >>> from pyro_relax.targets import NealFunnel
        >>> target = NealFunnel(dim=3)
        >>> target.log_prob(torch.zeros(4, 3)).shape
        torch.Size([4])
        >>> target.log_Z
        0.0
    """

    has_exact_samples: ClassVar[bool] = False
    _log_Z: float

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = _integer(dim, "dim", type(self).__name__, 1)
        # Carries the module's device and dtype for samples.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def event_shape(self) -> torch.Size:
        """The event shape ``(dim,)``."""
        return torch.Size((self.dim,))

    @property
    def log_Z(self) -> float:
        """The log normalizer ``log int exp(log_prob(x)) dx`` (float64 accuracy)."""
        return self._log_Z

    def _check(self, x: Tensor, method: str) -> None:
        name = f"{type(self).__name__}.{method}"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        if x.dim() < 1 or x.shape[-1] != self.dim:
            got = tuple(x.shape[-1:])
            raise ValueError(
                f"{name}: expected event shape ({self.dim},), got {got} "
                f"(input shape {tuple(x.shape)})"
            )
        if validation_enabled() and x.device.type != "meta":
            finite = torch.isfinite(x)
            if not bool(finite.all()):
                n_bad = int((~finite).sum())
                raise ValueError(f"{name}: expected finite values, got {n_bad} NaN or inf entries")

    def log_prob(self, x: Tensor) -> Tensor:
        """The unnormalized log density.

        Arguments:
            x: points of shape ``batch_shape + (dim,)``, floating point, finite.

        Returns:
            A tensor of shape ``batch_shape`` in the dtype of ``x``.
        """
        self._check(x, "log_prob")
        out = self._log_prob(x)
        if not isinstance(out, Tensor) or out.shape != x.shape[:-1] or out.dtype != x.dtype:
            got = (
                f"shape {tuple(out.shape)}, dtype {out.dtype}"
                if isinstance(out, Tensor)
                else type(out).__name__
            )
            raise ValueError(
                f"{type(self).__name__}.log_prob: expected _log_prob to return the batch shape "
                f"{tuple(x.shape[:-1])} in dtype {x.dtype}, got {got} (a subclass must sum over "
                f"the event only)"
            )
        return out

    def normalized_log_prob(self, x: Tensor) -> Tensor:
        """The normalized log density ``log_prob(x) - log_Z`` (same shapes as :meth:`log_prob`)."""
        return self.log_prob(x) - self._log_Z

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def sample(self, sample_shape: Sequence[int] | torch.Size = ()) -> Tensor:
        """Draw exact samples from the normalized density.

        Randomness comes from torch's global generator of the module's device.

        Arguments:
            sample_shape: the leading shape of the output.

        Returns:
            A tensor of shape ``sample_shape + (dim,)`` on the module's device,
            in the module's dtype.

        Raises:
            NotImplementedError: where the target has no exact sampler.
        """
        name = f"{type(self).__name__}.sample"
        if not self.has_exact_samples:
            raise NotImplementedError(f"{name}: this target has no exact sampler")
        if isinstance(sample_shape, int | Tensor) or not isinstance(sample_shape, Sequence):
            raise TypeError(
                f"{name}: expected sample_shape as a tuple or torch.Size of ints, "
                f"got {type(sample_shape).__name__}"
            )
        for n in sample_shape:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(
                    f"{name}: expected non-negative ints in sample_shape, got {tuple(sample_shape)}"
                )
        return self._sample(torch.Size(int(n) for n in sample_shape))

    @abstractmethod
    def _log_prob(self, x: Tensor) -> Tensor:
        """The unnormalized log density of a checked ``x``; shape ``x.shape[:-1]``."""

    def _sample(self, sample_shape: torch.Size) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.sample: this target has no exact sampler")

    def extra_repr(self) -> str:
        """The dimension and log normalizer, shown by ``repr``."""
        return f"dim={self.dim}, log_Z={self._log_Z:.6g}"
