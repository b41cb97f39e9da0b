"""A stack of bijections, surjections and stochastic layers as a Pyro distribution."""

from __future__ import annotations

__all__ = ["Flow", "FlowDistribution"]

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor, nn
from torch.distributions import Distribution

from pyro_relax._validation import validation, validation_enabled
from pyro_relax.distributions.adapter import TransformLayer, as_layer
from pyro_relax.surjections.base import RelaxedLayer, check_event_shape, check_finite


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

    Arguments:
        base: a distribution whose event shape is the latent event shape.
        layers: relaxed layers or (conditional) Pyro/torch transforms.
        context: a conditioning tensor ``batch_shape + (c,)`` passed to the layers
            that accept a context.

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
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(base, Distribution):
            raise TypeError(
                f"FlowDistribution: expected a base Distribution, got {type(base).__name__}"
            )
        self.base = base
        self.layers = [as_layer(layer) for layer in layers]
        shape = base.event_shape
        for layer in self.layers:
            out = layer.data_shape(shape)
            if isinstance(layer, TransformLayer) and not layer._conditional:
                # event_dim counts data-side dimensions (those of the transform's output)
                layer.event_dim = max(len(out), layer.wrapped.codomain.event_dim)
            shape = out
        batch_shape = base.batch_shape
        if context is not None:
            if not isinstance(context, Tensor):
                raise TypeError(
                    f"FlowDistribution: expected a context tensor, got {type(context).__name__}"
                )
            batch_shape = torch.broadcast_shapes(batch_shape, context.shape[:-1])
        self.context = context
        super().__init__(batch_shape, torch.Size(shape), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def exact(self) -> bool:
        """Whether :meth:`log_prob` is exact (every layer exact) rather than a bound."""
        return all(layer.exact for layer in self.layers)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return bool(self.base.has_rsample) and all(layer.reparametrized for layer in self.layers)

    def _ctx(self, layer: RelaxedLayer) -> Tensor | None:
        return self.context if layer.accepts_context else None

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
        base = self._base_for(torch.Size(sample_shape))
        z = base.rsample(sample_shape) if base.has_rsample else base.sample(sample_shape)
        log_q = base.log_prob(z)
        with validation(False):
            for layer in self.layers:
                z, s = layer.decode(z, self._ctx(layer))
                log_q = log_q - s
        return z, log_q

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self.rsample_and_log_q(sample_shape)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample_and_log_q(sample_shape)[0]

    def _check_value(self, value: Tensor) -> None:
        check_event_shape(value, self.event_shape, "FlowDistribution.log_prob")
        check_finite(value, "FlowDistribution.log_prob")
        if validation_enabled() and self.layers:
            self.layers[-1].check_data(value)

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(value)``: exact if :attr:`exact`, else a single-sample lower bound."""
        self._check_value(value)
        z = value
        total = value.new_zeros(())
        with validation(False):
            for layer in reversed(self.layers):
                z, v = layer.encode(z, self._ctx(layer))
                total = total + v
        return self.base.log_prob(z) + total

    def log_prob_iw(self, value: Tensor, num_particles: int = 100) -> Tensor:
        """Importance-weighted estimate ``log (1/K) sum_k exp(bound_k)`` with ``K`` particles.

        Its expectation increases with ``K`` and tends to ``log p(value)``
        (Burda et al. 2016). For an exact flow it equals :meth:`log_prob`.
        """
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"log_prob_iw: expected num_particles >= 1, got {num_particles!r}")
        if self.exact:
            return self.log_prob(value)
        self._check_value(value)
        rep = value.expand((num_particles,) + value.shape)
        with validation(False):
            lp = self.log_prob(rep)
        return torch.logsumexp(lp, dim=0) - math.log(num_particles)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> TorchDistribution:
        return dist.ExpandedDistribution(self, batch_shape)


class Flow(nn.Module):
    """An ``nn.Module`` holding a stack of layers and a base; calling it gives the distribution.

    Register it with ``pyro.module`` (or use it inside a ``PyroModule``) so its
    parameters are trained by SVI.

    Arguments:
        base_shape: the latent event shape; the base is a standard normal on it
            (its buffers follow the module's device and dtype).
        layers: the stack, from the base to the data.
        base: optionally a distribution, or an ``nn.Module`` that returns one when
            called, to use instead of the standard normal.

    Example:
        >>> import torch, pyro, pyro.distributions.transforms as T
        >>> from pyro_relax.surjections import AbsSurjection
        >>> flow = Flow((2,), [T.spline_coupling(2), AbsSurjection()])
        >>> x = pyro.sample("x", flow(), obs=torch.rand(4, 2))
        >>> flow.log_prob(x).shape
        torch.Size([4])
    """

    def __init__(
        self,
        base_shape: Sequence[int],
        layers: Sequence[RelaxedLayer | torch.distributions.Transform],
        base: Distribution | nn.Module | None = None,
    ) -> None:
        super().__init__()
        shape = torch.Size(base_shape)
        if any(not isinstance(s, int) or s <= 0 for s in shape):
            raise ValueError(
                f"Flow: expected a base shape of positive ints, got {tuple(base_shape)}"
            )
        self.base_shape = shape
        self.layers = nn.ModuleList(as_layer(layer) for layer in layers)
        self._base = base
        self.register_buffer("_zero", torch.tensor(0.0), persistent=False)

    def base_distribution(self) -> Distribution:
        """The base distribution, on the device and dtype of this module."""
        if self._base is None:
            loc = self._zero.expand(self.base_shape)
            # validate_args=False: the parameters are ours, and checking them syncs the device
            normal = dist.Normal(loc, torch.ones_like(loc), validate_args=False)
            return normal.to_event(len(self.base_shape))
        if isinstance(self._base, nn.Module):
            return self._base()
        return self._base

    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        """The flow as a :class:`FlowDistribution`, conditioned on ``context`` if given."""
        return FlowDistribution(self.base_distribution(), list(self.layers), context=context)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Shortcut for ``self(context).log_prob(x)``."""
        return self(context).log_prob(x)

    def sample(self, sample_shape: Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Shortcut for ``self(context).sample(sample_shape)``."""
        return self(context).sample(torch.Size(sample_shape))
