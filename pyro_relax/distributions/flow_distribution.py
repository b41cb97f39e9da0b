"""The distribution of a stack of bijections, surjections and stochastic layers, and its checks."""

from __future__ import annotations

__all__ = [
    "FlowDistribution",
    "check_context",
    "check_layers",
    "check_sample_shape",
    "context_size",
]

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor, nn
from torch.distributions import Distribution

from pyro_relax.core.checks import check_event_shape, check_finite, floating_input
from pyro_relax.core.layer import RelaxedLayer, sum_event
from pyro_relax.core.switch import validation, validation_enabled
from pyro_relax.distributions.adapter import TransformLayer, as_layer


def check_layers(layers: object, name: str) -> list:
    """``layers`` as a list; a single layer or a non-sequence is a ``TypeError``."""
    if isinstance(layers, RelaxedLayer | torch.distributions.Transform) or not isinstance(
        layers, Sequence | nn.ModuleList
    ):
        raise TypeError(
            f"{name}: expected a list of layers (possibly empty), got {type(layers).__name__}"
        )
    return list(layers)


def check_sample_shape(sample_shape: object, name: str) -> torch.Size:
    """``sample_shape`` (an int or a sequence of non-negative ints) as a ``torch.Size``."""
    if isinstance(sample_shape, int) and not isinstance(sample_shape, bool):
        sample_shape = (sample_shape,)
    if not isinstance(sample_shape, Sequence) or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in sample_shape
    ):
        raise ValueError(
            f"{name}: expected a sample shape of non-negative ints, got {sample_shape!r}"
        )
    return torch.Size(sample_shape)


def check_context(context: object, owner: str) -> None:
    """Raise unless ``context`` is a tensor of at least one dimension (``batch + (c,)``)."""
    if not isinstance(context, Tensor):
        raise TypeError(f"{owner}: expected a context tensor, got {type(context).__name__}")
    if context.dim() < 1:
        raise ValueError(f"{owner}: expected a context of shape batch + (c,), got a scalar")


def context_size(layer: RelaxedLayer) -> int | None:
    """The context size a layer takes: ``None`` for none, ``0`` where it does not say."""
    if not layer.accepts_context:
        return None
    if isinstance(layer, TransformLayer):
        if not layer.conditional:
            return None
        return layer.context_dim or 0
    size = getattr(layer, "context_dim", 0)
    if isinstance(size, int) and not isinstance(size, bool):
        return size if size > 0 else None
    return 0


def _where(bad: Tensor, value: Tensor) -> str:
    """Say which finite data point got a NaN or ``+inf`` log-density, and what that means."""
    index = tuple(int(i) for i in bad.nonzero()[0])
    point = value[index] if len(index) <= value.dim() else value
    shown = [round(float(v), 4) for v in point.reshape(-1)[:4]]
    big = float(value.abs().max()) if value.numel() else 0.0
    return (f"got NaN or +inf at the finite data point {list(index)} = {shown}: it lies on "
            f"the edge of a layer's domain (0 before a softplus or a log, say), where the "
            f"density is infinite or undefined, or it overflows a layer (largest magnitude in "
            f"the data {big:.3g})")


class FlowDistribution(TorchDistribution):
    r"""The distribution of ``x = layer_K(... layer_1(z))`` with ``z ~ base``.

    ``layers`` are listed in the order samples pass through them, from the
    base to the data, exactly as in Pyro's ``TransformedDistribution``, so a
    list of Pyro transforms can be extended with surjections and stochastic
    layers unchanged.

    ``log_prob`` is exact when every layer is exact (:attr:`exact`). Otherwise
    it is a **single-sample lower bound**: its expectation is at most
    ``log p(x)`` and ``exp`` of it is unbiased for ``p(x)``; use
    :meth:`log_prob_iw` for the importance-weighted estimate with ``K``
    particles, which tightens towards ``log p(x)`` as ``K`` grows.

    Dtypes: ``log_prob`` converts integer and bool values to the flow's
    floating dtype (that of the base distribution), so count data and
    dequantization layers work on integer tensors; a floating value of another
    dtype is a ``TypeError`` (convert it, or the flow with ``.to(dtype)``), as a
    torch module would refuse it, only with a message saying so. An empty batch
    (``(0,) + event_shape``) gives an empty ``log_prob``, and ``sample((0,))``
    an empty sample.

    Arguments:
        base: a distribution whose event shape is the latent event shape.
        layers: relaxed layers or (conditional) Pyro/torch transforms, possibly
            none (the flow is then the base distribution).
        context: a conditioning tensor ``batch_shape + (c,)`` passed to the layers
            that accept a context.

    The layers are used as given, never changed (their ``event_dim`` included).
    There is no ``validate_args``: the checks are those of
    :func:`pyro_relax.validation` (data checks always run; the checks that
    synchronize with the device can be switched off).

    Example:
        >>> import torch, pyro.distributions as dist, pyro.distributions.transforms as T
        >>> from pyro_relax.surjections import AbsSurjection
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> d = FlowDistribution(base, [T.affine_coupling(2), AbsSurjection()])
        >>> d.log_prob(d.sample((3,))).shape
        torch.Size([3])
    """

    arg_constraints: dict = {}

    def __init__(
        self,
        base: Distribution,
        layers: Sequence[RelaxedLayer | torch.distributions.Transform],
        context: Tensor | None = None,
    ) -> None:
        if not isinstance(base, Distribution):
            raise TypeError(
                f"FlowDistribution: expected a base Distribution, got {type(base).__name__}"
            )
        self.base = base
        given = [as_layer(layer) for layer in check_layers(layers, "FlowDistribution")]
        self.layers: list[RelaxedLayer] = []
        shape = base.event_shape
        self._data_ranks: list[int] = []  # event rank on the data side of each layer
        for layer in given:
            if isinstance(layer, TransformLayer) and not layer.conditional:
                # event_dim counts data-side dimensions (those of the transform's output); a
                # transform with fewer (an elementwise one) runs as a new layer on whole events
                # of the flow, sharing the transform, so the layer handed in is not changed.
                out = layer.data_shape(shape)
                layer = layer.with_event_dim(max(len(out), layer.wrapped.codomain.event_dim))
            else:
                out = layer.data_shape(shape)
            if not isinstance(layer, TransformLayer) and layer.event_dim > len(out):
                raise ValueError(
                    f"FlowDistribution: {type(layer).__name__} has event_dim {layer.event_dim}, "
                    f"more than the rank of the flow's event shape {tuple(out)} at that layer"
                )
            self.layers.append(layer)
            self._data_ranks.append(len(out))
            shape = out
        batch_shape = base.batch_shape
        if context is not None:
            check_context(context, "FlowDistribution")
            try:
                batch_shape = torch.broadcast_shapes(batch_shape, context.shape[:-1])
            except RuntimeError as exc:
                raise ValueError(
                    f"FlowDistribution: context batch shape {tuple(context.shape[:-1])} does not "
                    f"broadcast with the base batch shape {tuple(batch_shape)}"
                ) from exc
        self.context = context
        super().__init__(batch_shape, torch.Size(shape), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        """Real events of the flow's event rank."""
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def exact(self) -> bool:
        """Whether :meth:`log_prob` is exact (every layer exact) rather than a bound."""
        return all(layer.exact for layer in self.layers)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        """Whether samples are reparametrized: the base's and every layer's ``decode``."""
        return bool(self.base.has_rsample) and all(layer.reparametrized for layer in self.layers)

    def _ctx(self, layer: RelaxedLayer) -> Tensor | None:
        return self.context if layer.accepts_context else None

    @property
    def dtype(self) -> torch.dtype | None:
        """The flow's floating dtype: the base's (its mean's), else its layers', else ``None``."""
        try:
            mean = self.base.mean
        except (NotImplementedError, AttributeError, RuntimeError, ValueError):
            mean = None
        if isinstance(mean, Tensor) and mean.is_floating_point():
            return mean.dtype
        for layer in self.layers:
            dtype = layer.floating_dtype()
            if dtype is not None:
                return dtype
        return None

    @staticmethod
    def _per_event(v: Tensor, x: Tensor, rank: int) -> Tensor:
        """Sum a contribution over the event dims a layer with a smaller event_dim left."""
        return sum_event(v, v.dim() - (x.dim() - rank))

    def _base_log_prob(self, z: Tensor) -> Tensor:
        """``base.log_prob(z)``, also for an empty batch (Pyro's ``Independent`` fails there)."""
        if z.numel() == 0:
            batch = z.shape[: z.dim() - len(self.base.event_shape)]
            shape = torch.broadcast_shapes(batch, self.base.batch_shape)
            return z.new_zeros(shape)
        return self.base.log_prob(z)

    def _base_for(self, sample_shape: torch.Size) -> Distribution:
        base = self.base
        if base.batch_shape != self.batch_shape:
            base = base.expand(self.batch_shape)
        return base

    def rsample_and_log_q(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Draw ``x`` and a log-density estimate ``log q_0(z_0) - sum_k S_k``.

        For an exact flow the estimate is ``log q(x)`` itself; with bound or
        stochastic layers it is the path estimate whose use in
        ``log target(x) - estimate`` gives unbiased importance weights.
        """
        sample_shape = check_sample_shape(sample_shape, "FlowDistribution.sample")
        base = self._base_for(sample_shape)
        z = base.rsample(sample_shape) if base.has_rsample else base.sample(sample_shape)
        log_q = self._base_log_prob(z)
        with validation(False):
            for layer, rank in zip(self.layers, self._data_ranks, strict=True):
                z, s = layer.decode_unchecked(z, self._ctx(layer))
                log_q = log_q - self._per_event(s, z, rank)
        return z, log_q

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """A reparametrized sample of shape ``sample_shape + batch_shape + event_shape``."""
        return self.rsample_and_log_q(sample_shape)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """A sample without gradient, of shape ``sample_shape + batch_shape + event_shape``."""
        with torch.no_grad():
            return self.rsample_and_log_q(sample_shape)[0]

    def check_data(self, value: Tensor, name: str = "FlowDistribution.check_data") -> Tensor:
        """Validate data for this flow and return it in the flow's dtype, as ``log_prob`` does.

        Integer and bool values are converted to :attr:`dtype`; the event shape,
        finiteness and (with validation on) the last layer's data domain are
        checked.

        Arguments:
            value: data of shape ``sample_shape + batch_shape + event_shape``.
            name: the caller's name, for the error messages.

        Returns:
            ``value`` as a floating tensor of :attr:`dtype`.

        Raises:
            TypeError: for a non-tensor, or a floating dtype other than :attr:`dtype`.
            ValueError: for a wrong event shape, NaN/inf or values outside the domain.

        Example:
            >>> import torch, pyro.distributions as dist
            >>> d = FlowDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1), [])
            >>> d.check_data(torch.tensor([[1, 2]])).dtype
            torch.float32
        """
        value = floating_input(value, self.dtype, name)
        check_event_shape(value, self.event_shape, name)
        check_finite(value, name)
        if validation_enabled() and self.layers:
            try:
                self.layers[-1].check_data(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
        return value

    def _check_value(self, value: Tensor, name: str = "FlowDistribution.log_prob") -> Tensor:
        """The former name of :meth:`check_data` (kept for existing callers)."""
        return self.check_data(value, name)

    def _check_result(self, lp: Tensor, value: Tensor, name: str) -> Tensor:
        """Refuse a NaN or ``+inf`` log-density (``-inf``, zero density, is a value)."""
        if validation_enabled() and lp.device.type != "meta":
            bad = torch.isnan(lp) | (lp == math.inf)
            if bool(bad.any()):
                where = _where(bad, value)
                raise ValueError(f"{name}: expected a log-density in [-inf, inf), {where}")
        return lp

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(value)``: exact if :attr:`exact`, else a single-sample lower bound.

        Arguments:
            value: data of shape ``sample_shape + batch_shape + event_shape``;
                integer and bool tensors are converted to :attr:`dtype`.

        Returns:
            A tensor of shape ``sample_shape + batch_shape``.

        Raises:
            TypeError: for a non-tensor, or a floating dtype other than :attr:`dtype`.
            ValueError: for a wrong event shape, NaN/inf, values outside the
                data domain of the last layer, or a NaN/``+inf`` result (overflow).
                ``-inf`` (zero density, or underflow far out in the tails) is returned.
        """
        value = self.check_data(value, "FlowDistribution.log_prob")
        z = value
        total = value.new_zeros(())
        with validation(False):
            for layer, rank in zip(reversed(self.layers), reversed(self._data_ranks), strict=True):
                x = z
                z, v = layer.encode_unchecked(z, self._ctx(layer))
                total = total + self._per_event(v, x, rank)
        return self._check_result(
            self._base_log_prob(z) + total, value, "FlowDistribution.log_prob"
        )

    def log_prob_iw(self, value: Tensor, num_particles: int = 100) -> Tensor:
        """Importance-weighted estimate ``log (1/K) sum_k exp(bound_k)`` with ``K`` particles.

        Its expectation increases with ``K`` and tends to ``log p(value)``
        (Burda et al. 2016). For an exact flow it equals :meth:`log_prob`.
        """
        bad = isinstance(num_particles, bool) or not isinstance(num_particles, int)
        if bad or num_particles < 1:
            raise ValueError(
                f"FlowDistribution.log_prob_iw: expected an int num_particles >= 1, "
                f"got {num_particles!r}"
            )
        if self.exact:
            return self.log_prob(value)
        value = self.check_data(value, "FlowDistribution.log_prob_iw")
        rep = value.expand((num_particles,) + value.shape)
        with validation(False):
            lp = self.log_prob(rep)
        return torch.logsumexp(lp, dim=0) - math.log(num_particles)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> TorchDistribution:
        """The flow with its batch shape expanded (Pyro's ``ExpandedDistribution``)."""
        return dist.ExpandedDistribution(self, batch_shape)
