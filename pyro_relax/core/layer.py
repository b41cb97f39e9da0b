"""The one base class of every relaxed layer (surjections, stochastic layers, bijections)."""

from __future__ import annotations

__all__ = ["RelaxedLayer", "VectorLayer", "append_context", "sum_event"]

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_event_shape, check_finite, check_size, floating_input
from pyro_relax.core.switch import validation_enabled


def sum_event(t: Tensor, event_dim: int) -> Tensor:
    """Sum the rightmost ``event_dim`` dimensions of ``t`` (none if ``event_dim`` is 0).

    Example:
        >>> import torch
        >>> sum_event(torch.ones(2, 3, 4), 2)
        tensor([12., 12.])
    """
    if not 0 <= event_dim <= t.dim():
        raise ValueError(f"sum_event: expected 0 <= event_dim <= {t.dim()}, got {event_dim}")
    if event_dim == 0:
        return t
    return t.sum(dim=tuple(range(-event_dim, 0)))


def append_context(h: Tensor, context: Tensor | None, context_dim: int, owner: str) -> Tensor:
    """``h`` with ``context`` appended along the last dimension, batch shapes broadcast.

    For the conditioners of layers built with ``context_dim > 0``; with
    ``context_dim = 0``, ``h`` comes back as it is and a context is ignored.

    Arguments:
        h: the conditioner's input, ``batch_shape + (n,)``.
        context: ``batch_shape + (context_dim,)``.
        context_dim: the context size the layer was built with.
        owner: the layer, for the message.

    Raises:
        ValueError: a missing context, or one of another last size.

    Example:
        >>> import torch
        >>> append_context(torch.zeros(4, 3), torch.ones(2), 2, "demo").shape
        torch.Size([4, 5])
    """
    if not context_dim:
        return h
    if context is None or context.shape[-1] != context_dim:
        got = None if context is None else tuple(context.shape)
        raise ValueError(f"{owner}: expected a context of last size {context_dim}, got {got}")
    batch = torch.broadcast_shapes(h.shape[:-1], context.shape[:-1])
    return torch.cat(
        [h.expand(batch + h.shape[-1:]), context.expand(batch + context.shape[-1:])], -1
    )


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
    finiteness, the layer's domain via :meth:`check_data`) and call these; with
    validation on they also refuse a non-finite output (overflow) with a
    ``ValueError``, and turn torch's shape errors into a ``ValueError`` naming
    the layer. An empty batch gives empty outputs without calling them.

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

    Dtypes: integer and bool inputs are converted to the layer's floating dtype
    (that of its first floating parameter or buffer, else the default dtype)
    before anything is computed, except by ``encode`` of a layer with
    ``takes_integers = True`` (dequantization), which receives them as they are.
    A floating input of another dtype than the layer's is a ``TypeError``; a
    layer without floating parameters takes any floating dtype and its outputs
    follow the input (see :func:`floating_input`).

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
    takes_integers: ClassVar[bool] = False
    event_dim: int = 1

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Refuse a subclass whose class flags disagree (see the class docstring)."""
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

    def floating_dtype(self) -> torch.dtype | None:
        """The dtype of the first floating parameter or buffer, ``None`` if there is none."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            if t.is_floating_point():
                return t.dtype
        return None

    # -- public entry points ------------------------------------------------
    def _validate(self, t: Tensor, event_shape: torch.Size | None, side: str) -> Tensor:
        name = f"{type(self).__name__}.{side}"
        t = floating_input(
            t, self.floating_dtype(), name, keep_integers=side == "encode" and self.takes_integers
        )
        if event_shape is not None:
            check_event_shape(t, event_shape, name)
        elif t.dim() < self.event_dim:
            raise ValueError(
                f"{name}: expected at least {self.event_dim} event dimensions, "
                f"got shape {tuple(t.shape)}"
            )
        check_finite(t, name)
        return t

    def _check_context(self, context: Tensor | None) -> Tensor | None:
        if context is None:
            return None
        if not self.accepts_context:
            raise ValueError(f"{type(self).__name__} takes no context, got a context tensor")
        name = f"{type(self).__name__} context"
        context = floating_input(context, self.floating_dtype(), name)
        if context.dim() < 1:
            raise ValueError(f"{name}: expected shape batch_shape + (c,), got a scalar")
        check_finite(context, name)
        return context

    def encode(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data ``x`` to the latent side; return ``(z, V)`` (see the class docstring)."""
        return self._map_side("encode", x, self.expected_data_shape(), context)

    def decode(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent ``z`` to the data side; return ``(x, S)`` (see the class docstring)."""
        expected = self.expected_data_shape()
        latent = None if expected is None else self.latent_shape(expected)
        return self._map_side("decode", z, latent, context)

    def _map_side(
        self, side: str, t: Tensor, event_shape: torch.Size | None, context: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Validate the input of ``side`` (``"encode"`` or ``"decode"``) and run that direction."""
        t = self._validate(t, event_shape, side)
        context = self._check_context(context)
        encoding = side == "encode"
        if validation_enabled():
            (self.check_data if encoding else self.check_latent)(t)
        if self._empty_batch(t):
            return self._empty_result(t, self.latent_shape if encoding else self.data_shape)
        return self._checked_call(self._encode if encoding else self._decode, t, context, side)

    def encode_unchecked(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`encode` without the input and output checks, for inner calls of a stack.

        A stack whose entry point has validated its input (``FlowDistribution``
        checks the data once per call) runs its layers through this, so no layer
        re-validates what the entry point checked: no dtype, shape or finiteness
        checks, no domain check, no output check. An empty batch still gives empty
        outputs, and torch's shape errors still become a ``ValueError`` naming the
        layer. A subclass that overrides :meth:`encode` itself (to record
        statistics, say) is called through its :meth:`encode`.

        Example:
            >>> import torch
            >>> from pyro_relax.surjections import AbsSurjection
            >>> z, v = AbsSurjection().encode_unchecked(torch.tensor([[-1.0, 2.0]]))
            >>> z
            tensor([[1., 2.]])
        """
        if type(self).encode is not RelaxedLayer.encode:
            return self.encode(x, context)
        return self._unchecked("encode", x, context)

    def decode_unchecked(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`decode` without the input and output checks (see :meth:`encode_unchecked`)."""
        if type(self).decode is not RelaxedLayer.decode:
            return self.decode(z, context)
        return self._unchecked("decode", z, context)

    def _unchecked(
        self, side: str, t: Tensor, context: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        encoding = side == "encode"
        if t.dim() >= self.event_dim and self._empty_batch(t):
            return self._empty_result(t, self.latent_shape if encoding else self.data_shape)
        try:
            return (self._encode if encoding else self._decode)(t, context)
        except (torch.OutOfMemoryError, NotImplementedError):
            raise
        except (RuntimeError, IndexError) as exc:
            raise ValueError(
                f"{type(self).__name__}.{side}: cannot map an input of shape {tuple(t.shape)} "
                f"and dtype {t.dtype} (event_dim {self.event_dim}): {exc}"
            ) from exc

    def _checked_call(
        self,
        fn: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]],
        t: Tensor,
        context: Tensor | None,
        side: str,
    ) -> tuple[Tensor, Tensor]:
        """Run ``_encode``/``_decode``; name the layer in torch's shape errors, refuse overflow."""
        name = f"{type(self).__name__}.{side}"
        try:
            out, contribution = fn(t, context)
        except (torch.OutOfMemoryError, NotImplementedError):
            raise
        except (RuntimeError, IndexError) as exc:
            raise ValueError(
                f"{name}: cannot map an input of shape {tuple(t.shape)} and dtype {t.dtype} "
                f"(event_dim {self.event_dim}; is the event shape the one the layer was "
                f"built for?): {exc}"
            ) from exc
        batch = self._batch_shape(t, self.event_dim)
        event = t.shape[len(batch) :]
        want = batch + (self.latent_shape(event) if side == "encode" else self.data_shape(event))
        if out.shape != want or contribution.shape != batch:
            raise ValueError(
                f"{name}: expected outputs of shapes {tuple(want)} and {tuple(batch)} for an "
                f"input of shape {tuple(t.shape)}, got {tuple(out.shape)} and "
                f"{tuple(contribution.shape)} (is the event shape the one the layer was built for?)"
            )
        if validation_enabled() and t.device.type != "meta":
            for what, value in (("output", out), ("contribution", contribution)):
                if not bool(torch.isfinite(value).all()):
                    big = float(t.abs().max())
                    cause = "overflows this layer" if big > 1e4 else (
                        "lies on the edge of this layer's domain, or overflows it")
                    raise ValueError(
                        f"{name}: expected a finite {what}, got NaN or inf for finite input "
                        f"of magnitude up to {big:.3g} (the input {cause})"
                    )
        return out, contribution

    def _empty_batch(self, t: Tensor) -> bool:
        return math.prod(self._batch_shape(t, self.event_dim)) == 0

    def _empty_result(
        self, t: Tensor, event_map: Callable[[torch.Size], torch.Size]
    ) -> tuple[Tensor, Tensor]:
        """The output of an empty batch: no computation (many torch ops refuse it)."""
        batch = self._batch_shape(t, self.event_dim)
        event = torch.Size(event_map(t.shape[len(batch) :]))
        return t.new_zeros(batch + event), t.new_zeros(batch)

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


class VectorLayer(RelaxedLayer):
    """A :class:`RelaxedLayer` between data vectors ``(dim,)`` and latent vectors ``(latent_dim,)``.

    It holds the two sizes and answers the shape questions of the contract
    (:meth:`expected_data_shape`, :meth:`latent_shape`, :meth:`data_shape`);
    a subclass provides ``_encode`` and ``_decode`` as for any layer.

    Arguments:
        dim: the data event size.
        latent_dim: the latent event size (default ``dim``).
        min_dim: the smallest ``dim`` the layer allows.
    """

    def __init__(self, dim: int, latent_dim: int | None = None, min_dim: int = 1) -> None:
        super().__init__()
        name = type(self).__name__
        self.dim = check_size(dim, "dim", name, minimum=min_dim)
        self.latent_dim = (
            self.dim if latent_dim is None else check_size(latent_dim, "latent_dim", name)
        )

    def expected_data_shape(self) -> torch.Size:
        """The data event ``(dim,)``."""
        return torch.Size((self.dim,))

    def _event(self, shape: torch.Size, size: int, side: str) -> None:
        if tuple(shape) != (size,):
            raise ValueError(
                f"{type(self).__name__}: expected {side} event ({size},), got {tuple(shape)}"
            )

    def latent_shape(self, data_shape: torch.Size) -> torch.Size:
        """``(latent_dim,)`` for the data event ``(dim,)``."""
        self._event(data_shape, self.dim, "data")
        return torch.Size((self.latent_dim,))

    def data_shape(self, latent_shape: torch.Size) -> torch.Size:
        """``(dim,)`` for the latent event ``(latent_dim,)``."""
        self._event(latent_shape, self.latent_dim, "latent")
        return torch.Size((self.dim,))
