"""Pyro's (and torch's) bijective transforms seen as relaxed layers."""

from __future__ import annotations

__all__ = ["TransformLayer", "as_layer"]

import torch
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor, nn
from torch.distributions import Transform

from pyro_relax.core.checks import check_int
from pyro_relax.core.layer import RelaxedLayer, sum_event


class TransformLayer(RelaxedLayer):
    """Wrap a bijective ``torch.distributions.Transform`` (any Pyro transform) as a layer.

    Pyro's transforms run from the base to the data (``x = t(z)``); this layer
    runs ``t.inv`` in :meth:`encode` with ``V = -log|det dt/dz|`` and ``t`` in
    :meth:`decode` with ``S = +log|det dt/dz|``. Pyro ``TransformModule``s keep
    their parameters (they become submodules), and conditional transforms
    (``ConditionalTransformModule``) are conditioned on the ``context``.

    Arguments:
        transform: a bijective transform or conditional transform.
        event_dim: the number of event dimensions of the flow at this layer;
            defaults to the transform's ``codomain.event_dim``.

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> layer = TransformLayer(T.affine_coupling(2))
        >>> z, v = layer.encode(torch.randn(5, 2))
        >>> v.shape
        torch.Size([5])
    """

    bijective = True
    accepts_context = True

    def __init__(
        self, transform: Transform | ConditionalTransform, event_dim: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(transform, Transform | ConditionalTransform):
            raise TypeError(
                f"TransformLayer: expected a torch Transform or Pyro ConditionalTransform, "
                f"got {type(transform).__name__}"
            )
        if isinstance(transform, Transform) and not transform.bijective:
            raise ValueError(f"TransformLayer: expected a bijective transform, got {transform!r}")
        if isinstance(transform, nn.Module):
            self.transform = transform  # registers its parameters
        else:
            self._plain = transform
            inner = getattr(transform, "_inv", None)  # e.g. ``module.inv`` of a TransformModule
            if isinstance(inner, nn.Module):
                self.inverse_of = inner
        self._conditional = isinstance(transform, ConditionalTransform)
        if event_dim is None:
            event_dim = 1 if self._conditional else transform.codomain.event_dim
        self.event_dim = event_dim

    @property
    def wrapped(self) -> Transform | ConditionalTransform:
        """The transform this layer wraps."""
        return self._modules.get("transform", None) or self.__dict__["_plain"]

    @property
    def conditional(self) -> bool:
        """Whether the wrapped transform is conditional (it needs a ``context``)."""
        return self._conditional

    @property
    def context_dim(self) -> int | None:
        """The context size a conditional transform takes, where it says (else ``None``).

        Read from a positive ``context_dim`` of the transform or of its network
        (Pyro's couplings keep a ``ConditionalDenseNN`` there); ``None`` when
        neither says.
        """
        if not self._conditional:
            return None
        wrapped = self.wrapped
        for owner in (wrapped, getattr(wrapped, "nn", None), getattr(wrapped, "hypernet", None)):
            size = getattr(owner, "context_dim", None)
            if isinstance(size, int) and not isinstance(size, bool) and size > 0:
                return size
        return None

    def with_event_dim(self, event_dim: int) -> TransformLayer:
        """This layer if its ``event_dim`` is ``event_dim``, else a new one on the same transform.

        The new layer shares the wrapped transform (and so its parameters);
        ``self`` is left as it is. :class:`~pyro_relax.distributions.FlowDistribution`
        uses it to run an elementwise transform on whole events of the flow.

        Example:
            >>> import pyro.distributions.transforms as T
            >>> layer = TransformLayer(T.ExpTransform())
            >>> wide = layer.with_event_dim(1)
            >>> wide.event_dim, layer.event_dim, wide.wrapped is layer.wrapped
            (1, 0, True)
        """
        event_dim = check_int(event_dim, "event_dim", "TransformLayer.with_event_dim", minimum=0)
        if event_dim == self.event_dim:
            return self
        return TransformLayer(self.wrapped, event_dim)

    def _resolve(self, context: Tensor | None) -> Transform:
        if self._conditional:
            if context is None:
                raise ValueError(f"{self.wrapped!r} is conditional: expected a context, got None")
            return self.wrapped.condition(context)
        return self.wrapped  # a plain transform ignores the context

    def _reduce(self, ladj: Tensor, t: Tensor) -> Tensor:
        batch_dims = t.dim() - self.event_dim
        return sum_event(ladj, ladj.dim() - batch_dims)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        t = self._resolve(context)
        z = t.inv(x)
        return z, -self._reduce(t.log_abs_det_jacobian(z, x), x)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        t = self._resolve(context)
        x = t(z)
        return x, self._reduce(t.log_abs_det_jacobian(z, x), x)

    def latent_shape(self, data_shape: torch.Size) -> torch.Size:
        """Latent event shape, from the transform's ``inverse_shape``."""
        if self._conditional:
            return torch.Size(data_shape)
        return torch.Size(self.wrapped.inverse_shape(data_shape))

    def data_shape(self, latent_shape: torch.Size) -> torch.Size:
        """Data event shape, from the transform's ``forward_shape``."""
        if self._conditional:
            return torch.Size(latent_shape)
        return torch.Size(self.wrapped.forward_shape(latent_shape))

    def extra_repr(self) -> str:
        """The wrapped transform, when it is not a submodule (a module prints itself)."""
        return "" if "transform" in self._modules else repr(self.wrapped)


def as_layer(obj: RelaxedLayer | Transform | ConditionalTransform) -> RelaxedLayer:
    """Return a :class:`RelaxedLayer` as is; wrap a transform in :class:`TransformLayer`.

    Example:
        >>> import pyro.distributions.transforms as T
        >>> type(as_layer(T.ExpTransform())).__name__
        'TransformLayer'
    """
    if isinstance(obj, RelaxedLayer):
        return obj
    if isinstance(obj, Transform | ConditionalTransform):
        return TransformLayer(obj)
    raise TypeError(f"expected a RelaxedLayer or a torch/Pyro Transform, got {type(obj).__name__}")
