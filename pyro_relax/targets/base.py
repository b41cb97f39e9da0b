"""The base class of the benchmark target densities."""

from __future__ import annotations

__all__ = ["Target"]

import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_event_shape, check_finite, check_int


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
        self.dim = check_int(dim, "dim", type(self).__name__, minimum=1)
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

    def register_constants(self, **values: float) -> None:
        """Register each float of ``values`` as a 0-dim buffer in the default dtype.

        Buffers move and cast with the module (``.to(device)``, ``.double()``);
        :meth:`_log_prob` reads them with ``.to(x.dtype)``.

        Example:
            >>> from pyro_relax.targets import NealFunnel
            >>> target = NealFunnel()
            >>> target.register_constants(tilt=0.5)
            >>> float(target.tilt)
            0.5
        """
        dtype = torch.get_default_dtype()
        for key, value in values.items():
            self.register_buffer(key, torch.tensor(value, dtype=dtype))

    def check_points(self, x: object, method: str) -> None:
        """Raise unless ``x`` is a finite floating tensor of event shape ``(dim,)``.

        Arguments:
            x: the input of ``method``.
            method: the entry point, named in the messages.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: another event shape, or NaN or inf entries.
        """
        name = f"{type(self).__name__}.{method}"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        check_event_shape(x, (self.dim,), name)
        check_finite(x, name)

    def log_prob(self, x: Tensor) -> Tensor:
        """The unnormalized log density.

        Arguments:
            x: points of shape ``batch_shape + (dim,)``, floating point, finite.

        Returns:
            A tensor of shape ``batch_shape`` in the dtype of ``x``.
        """
        self.check_points(x, "log_prob")
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
