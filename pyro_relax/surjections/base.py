"""The one base class of every relaxed (non-bijective or stochastic) layer."""

from __future__ import annotations

__all__ = [
    "RelaxedLayer",
    "check_event_shape",
    "check_finite",
    "sum_event",
]

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from pyro_relax._validation import validation_enabled


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


def sum_event(t: Tensor, event_dim: int) -> Tensor:
    """Sum the rightmost ``event_dim`` dimensions of ``t`` (none if ``event_dim`` is 0)."""
    if not 0 <= event_dim <= t.dim():
        raise ValueError(f"sum_event: expected 0 <= event_dim <= {t.dim()}, got {event_dim}")
    if event_dim == 0:
        return t
    return t.sum(dim=tuple(range(-event_dim, 0)))


class RelaxedLayer(nn.Module, ABC):
    r"""Base class of surjections, stochastic layers and bijections written for pyro-relax.

    A layer links a *data side* ``x`` and a *latent side* ``z``. It has one
    abstract method per direction, each returning the output **and** its
    contribution together, computed in one pass:

    * ``_encode(x, context) -> (z, V)`` (data to latent, the density direction):
      ``log p(x) ~= log p(z) + V``. For a bijection ``V = log|det dz/dx|``; for an
      inference surjection ``V = log p(x | z)``; for a generative surjection
      ``V = -log q(z | x)`` and for a stochastic layer
      ``V = log p(x | z) - log q(z | x)`` (both bounds, in expectation over
      ``z ~ q``).
    * ``_decode(z, context) -> (x, S)`` (latent to data, the sampling direction):
      ``S`` is the path-weight contribution of the pair, ``S = -V(x, z)``, so that
      ``log w = log target(x) - log q_0(z_0) + sum_k S_k``
      has ``E[exp(log w)] = Z`` (``DESIGN.md``).

    The public :meth:`encode` and :meth:`decode` validate the input (event shape,
    finiteness, the layer's domain via :meth:`check_data`) and call these.

    Class flags (``ClassVar[bool]``, checked for agreement when a subclass is made):

    * ``bijective``: both directions deterministic, ``V`` exact. Implies the three others.
    * ``stochastic_forward``: ``encode`` draws noise (generative surjections, VAE, SNF blocks).
    * ``stochastic_inverse``: ``decode`` draws noise (inference surjections, VAE, SNF blocks).
    * ``exact``: ``V`` is the exact log-likelihood contribution; else it is a
      single-sample lower bound. ``exact`` requires a deterministic ``encode``.
    * ``reparametrized``: ``decode`` is differentiable in its input and parameters
      (used for ``has_rsample``).

    Shapes: inputs are ``batch_shape + event_shape`` with any number of batch
    dimensions; contributions have shape ``batch_shape``. A layer that changes
    the event shape overrides :meth:`latent_shape` and :meth:`data_shape`.
    ``event_dim`` is the number of rightmost dimensions of an event on the data
    side (1 for vectors, 3 for ``(C, H, W)`` images).

    Context: a layer that takes a conditioning context sets
    ``accepts_context = True`` and reads the ``context`` argument
    (shape ``batch_shape + (context_dim,)``).
    """

    bijective: ClassVar[bool] = False
    stochastic_forward: ClassVar[bool] = False
    stochastic_inverse: ClassVar[bool] = False
    exact: ClassVar[bool] = True
    reparametrized: ClassVar[bool] = True
    accepts_context: ClassVar[bool] = False
    event_dim: int = 1

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.bijective and (cls.stochastic_forward or cls.stochastic_inverse or not cls.exact):
            raise TypeError(f"{cls.__name__}: a bijective layer must be deterministic and exact")
        if cls.exact and cls.stochastic_forward:
            raise TypeError(
                f"{cls.__name__}: a layer whose encode is stochastic gives a bound, set exact=False"
            )

    # -- the contract -------------------------------------------------------
    @abstractmethod
    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Data to latent: return ``(z, V)`` with ``V`` of shape ``batch_shape``."""

    @abstractmethod
    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Latent to data: return ``(x, S)`` with ``S = -V(x, z)`` of shape ``batch_shape``."""

    # -- shapes and domain --------------------------------------------------
    def latent_shape(self, data_shape: torch.Size) -> torch.Size:
        """Latent event shape for a data event shape (identity unless overridden)."""
        return torch.Size(data_shape)

    def data_shape(self, latent_shape: torch.Size) -> torch.Size:
        """Data event shape for a latent event shape (identity unless overridden)."""
        return torch.Size(latent_shape)

    def expected_data_shape(self) -> torch.Size | None:
        """The data event shape this layer was built for, or ``None`` if any fits."""
        return None

    def check_data(self, x: Tensor) -> None:
        """Raise ``ValueError`` if ``x`` lies outside the layer's domain (override)."""

    def check_latent(self, z: Tensor) -> None:
        """Raise ``ValueError`` if ``z`` lies outside the layer's range (override)."""

    # -- public entry points ------------------------------------------------
    def _validate(self, t: Tensor, event_shape: torch.Size | None, side: str) -> None:
        name = f"{type(self).__name__}.{side}"
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if event_shape is not None:
            check_event_shape(t, event_shape, name)
        elif t.dim() < self.event_dim:
            raise ValueError(
                f"{name}: expected at least {self.event_dim} event dimensions, "
                f"got shape {tuple(t.shape)}"
            )
        check_finite(t, name)

    def _check_context(self, context: Tensor | None) -> None:
        if context is not None and not self.accepts_context:
            raise ValueError(f"{type(self).__name__} takes no context, got a context tensor")

    def encode(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data ``x`` to the latent side; return ``(z, V)`` (see the class docstring)."""
        self._validate(x, self.expected_data_shape(), "encode")
        self._check_context(context)
        if validation_enabled():
            self.check_data(x)
        return self._encode(x, context)

    def decode(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent ``z`` to the data side; return ``(x, S)`` (see the class docstring)."""
        expected = self.expected_data_shape()
        self._validate(z, None if expected is None else self.latent_shape(expected), "decode")
        self._check_context(context)
        if validation_enabled():
            self.check_latent(z)
        return self._decode(z, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Only the data-side output of :meth:`decode`."""
        return self.decode(z, context)[0]

    @staticmethod
    def _batch_shape(t: Tensor, event_dim: int) -> torch.Size:
        return t.shape[: t.dim() - event_dim]

    @staticmethod
    def _log_factorial(n: int) -> float:
        return math.lgamma(n + 1)
