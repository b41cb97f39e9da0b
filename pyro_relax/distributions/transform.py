"""Relaxed layers seen as Pyro transforms, for Pyro's own ``TransformedDistribution``."""

from __future__ import annotations

__all__ = ["LayerTransform", "as_transform"]

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor
from torch.distributions import Transform

from pyro_relax.core import RelaxedLayer, validation
from pyro_relax.core.checks import check_finite
from pyro_relax.distributions.adapter import TransformLayer


class LayerTransform(Transform):
    r"""An exact relaxed layer as a torch ``Transform`` running from the base to the data.

    The transform's forward call is the layer's :meth:`~RelaxedLayer.decode`
    (the sampling direction: for an inference surjection it draws ``x`` given
    ``z``), its inverse is the deterministic :meth:`~RelaxedLayer.encode`, and
    ``log_abs_det_jacobian(z, x)`` is ``-V(x, z)``, minus the layer's exact
    likelihood contribution. Pyro's ``TransformedDistribution`` subtracts it,
    so ``TransformedDistribution(base, [as_transform(layer)]).log_prob(x)``
    equals ``log p(z) + V``, the :class:`~pyro_relax.distributions.FlowDistribution`
    log-density. For a surjection ``bijective`` is ``False``: ``log_abs_det_jacobian``
    is then a log-likelihood term rather than a Jacobian, but it enters
    ``log_prob`` in the same place.

    The last ``V`` computed (by the inverse or the forward call) is kept with
    its pair, so ``log_prob`` runs the layer once; a pair not seen before is
    encoded again (``encode`` is deterministic, so ``V`` depends on ``x`` only).

    The forward call runs with the device-synchronizing checks off, as
    :class:`~pyro_relax.distributions.FlowDistribution` samples: a latent
    outside the layer's range (an unsorted ``z`` for the sort surjection, a
    negative one for abs) is mapped like any other, and the model is exact
    when the base puts its mass on that range (a half-normal before abs).

    Build it with :func:`as_transform`, which also checks that the layer is
    exact.

    Arguments:
        layer: a bijective or exact relaxed layer.
        context: the context passed to the layer, if it takes one.
    """

    def __init__(self, layer: RelaxedLayer, context: Tensor | None = None) -> None:
        super().__init__(cache_size=0)
        self.layer = layer
        self.context = context
        self.bijective = bool(layer.bijective)
        # Real events of layer.event_dim dimensions on both sides (plain attributes,
        # as torch's own transforms have them).
        self.domain = self.codomain = constraints.independent(constraints.real, layer.event_dim)
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # (z, x, S = -V)

    def _call(self, z: Tensor) -> Tensor:
        # NaN and inf are refused (with validation on); the range of the layer is not checked
        check_finite(z, f"as_transform({type(self.layer).__name__})")
        with validation(False):  # as FlowDistribution samples: z need not lie in f's range
            x, s = self.layer.decode(z, self.context)
        self._last = (z, x, s)
        return x

    def _inverse(self, x: Tensor) -> Tensor:
        z, v = self.layer.encode(x, self.context)
        self._last = (z, x, -v)
        return z

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``-V`` at the pair (``x`` on the base side, ``y`` on the data side), shape batch."""
        last = self._last
        if last is not None and last[0] is x and last[1] is y:
            return last[2]
        return -self.layer.encode(y, self.context)[1]

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        """The data shape for a latent ``batch + event`` shape (``layer.data_shape``)."""
        return self._map_shape(shape, self.layer.data_shape)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        """The latent shape for a data ``batch + event`` shape (``layer.latent_shape``)."""
        return self._map_shape(shape, self.layer.latent_shape)

    def _map_shape(self, shape: torch.Size, event_map: object) -> torch.Size:
        rank = self.layer.event_dim
        if len(shape) < rank:
            raise ValueError(
                f"{type(self.layer).__name__} as a transform: expected a shape with at least "
                f"{rank} event dimensions, got {tuple(shape)}"
            )
        batch, event = shape[: len(shape) - rank], shape[len(shape) - rank :]
        return torch.Size(batch) + torch.Size(event_map(torch.Size(event)))  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        """Two such transforms are equal when they wrap the same layer."""
        return isinstance(other, LayerTransform) and other.layer is self.layer

    def __hash__(self) -> int:
        """Hash of the wrapped layer's identity."""
        return hash((LayerTransform, id(self.layer)))

    def __repr__(self) -> str:
        """``LayerTransform(<layer repr>)``."""
        return f"{type(self).__name__}({self.layer!r})"


def as_transform(
    layer: RelaxedLayer | Transform | ConditionalTransform, context: Tensor | None = None
) -> Transform:
    """The layer as a Pyro transform (base to data) for ``TransformedDistribution``.

    Supported: every bijective layer (a :class:`TransformLayer` gives back the
    transform it wraps, conditioned on ``context`` if it is conditional) and
    every exact inference surjection (abs, sort, max, max pooling, slice),
    whose transform is a :class:`LayerTransform` with ``bijective=False``.
    A torch/Pyro transform is returned as is (a conditional one is conditioned).
    Layers whose contribution is a bound (generative surjections,
    dequantization, stochastic layers) have no transform: put them in a
    :class:`~pyro_relax.distributions.FlowDistribution`.

    Arguments:
        layer: the layer or transform.
        context: a context tensor for a layer or transform that takes one.

    Returns:
        A ``torch.distributions.Transform``.

    Raises:
        TypeError: for something that is neither a layer nor a transform.
        ValueError: for a layer whose contribution is not exact, or a missing context.

    Example:
        >>> import torch, pyro.distributions as dist
        >>> from pyro_relax.surjections import AbsSurjection
        >>> base = dist.HalfNormal(torch.ones(2)).to_event(1)
        >>> d = dist.TransformedDistribution(base, [as_transform(AbsSurjection())])
        >>> d.sample((4,)).shape, d.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([4, 2]), torch.Size([3]))
    """
    if context is not None and not isinstance(context, Tensor):
        raise TypeError(f"as_transform: expected a context tensor, got {type(context).__name__}")
    if isinstance(layer, ConditionalTransform):
        return _condition(layer, context, repr(layer))
    if isinstance(layer, Transform):
        return layer
    if not isinstance(layer, RelaxedLayer):
        raise TypeError(
            f"as_transform: expected a RelaxedLayer or a torch/Pyro Transform, "
            f"got {type(layer).__name__}"
        )
    name = type(layer).__name__
    if isinstance(layer, TransformLayer):
        if layer.conditional:
            return _condition(layer.wrapped, context, name)
        return layer.wrapped
    if not layer.exact:
        raise ValueError(
            f"as_transform: supports bijective layers and exact inference surjections "
            f"(abs, sort, max, max pooling, slice); {name} has exact=False (its contribution "
            f"is a bound, not a density), use it in a FlowDistribution instead"
        )
    if context is not None and not layer.accepts_context:
        raise ValueError(f"as_transform: {name} takes no context, got a context tensor")
    return LayerTransform(layer, context)


def _condition(transform: ConditionalTransform, context: Tensor | None, name: str) -> Transform:
    if context is None:
        raise ValueError(f"as_transform: {name} is conditional: expected a context, got None")
    return transform.condition(context)
