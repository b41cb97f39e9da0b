"""A stack of bijections, surjections and stochastic layers as a Pyro distribution.

:class:`Flow` is the module that holds the layers and the base; calling it gives
the :class:`~pyro_relax.distributions.flow_distribution.FlowDistribution`.
"""

from __future__ import annotations

__all__ = ["Flow", "FlowDistribution"]

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from pyro_relax.core.layer import RelaxedLayer
from pyro_relax.distributions.adapter import as_layer
from pyro_relax.distributions.flow_distribution import (
    FlowDistribution,
    check_context,
    check_layers,
    check_sample_shape,
    context_size,
)


class Flow(nn.Module):
    """An ``nn.Module`` holding a stack of layers and a base; calling it gives the distribution.

    Register it with ``pyro.module`` (or use it inside a ``PyroModule``) so its
    parameters are trained by SVI.

    Arguments:
        base_shape: the latent event shape (an int ``n`` means ``(n,)``); the base
            is a standard normal on it (its buffers follow the module's device and dtype).
        layers: the stack, from the base to the data; an empty list is the
            identity (the flow is the base distribution).
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
        if isinstance(base_shape, int) and not isinstance(base_shape, bool):
            base_shape = (base_shape,)
        if not isinstance(base_shape, Sequence) or any(
            isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in base_shape
        ):
            raise ValueError(
                f"Flow: expected a base shape of positive ints (or one int), got {base_shape!r}"
            )
        if base is not None and not isinstance(base, Distribution | nn.Module):
            raise TypeError(
                f"Flow: expected base a Distribution, an nn.Module or None, "
                f"got {type(base).__name__}"
            )
        self.base_shape = torch.Size(base_shape)
        self.layers = nn.ModuleList(as_layer(layer) for layer in check_layers(layers, "Flow"))
        self._base = base
        self.register_buffer("_zero", torch.tensor(0.0), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the module (that of its standard normal base)."""
        return self._zero.dtype

    @property
    def device(self) -> torch.device:
        """The device of the module (that of its standard normal base)."""
        return self._zero.device

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

    def condition(self, context: Tensor) -> FlowDistribution:
        """The flow conditioned on ``context``, as Pyro's ``ConditionalTransformedDistribution``.

        Arguments:
            context: a tensor ``batch_shape + (c,)``, with ``c`` the context size
                of the conditional layers (checked where a layer states it).

        Returns:
            The :class:`FlowDistribution` ``self(context)``.

        Raises:
            TypeError: for a non-tensor context.
            ValueError: for a scalar context, a last size other than the layers',
                or a flow with no layer that takes a context.

        Example:
            >>> import torch, pyro.distributions.transforms as T
            >>> flow = Flow(2, [T.conditional_affine_coupling(2, context_dim=3)])
            >>> d = flow.condition(torch.randn(5, 3))
            >>> d.batch_shape, d.sample().shape
            (torch.Size([5]), torch.Size([5, 2]))
        """
        check_context(context, "Flow.condition")
        sizes = {size for size in map(context_size, self.layers) if size is not None}
        if not sizes:
            raise ValueError("Flow.condition: no layer of this flow takes a context")
        known = sorted(size for size in sizes if size > 0)
        if known and context.shape[-1] not in known:
            want = " or ".join(str(size) for size in known)
            raise ValueError(
                f"Flow.condition: expected a context of last size {want}, "
                f"got shape {tuple(context.shape)}"
            )
        return self(context)

    def check_data(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Validate data and return it in the flow's dtype (:meth:`FlowDistribution.check_data`).

        Example:
            >>> import torch
            >>> Flow(2, []).check_data(torch.zeros(4, 2)).shape
            torch.Size([4, 2])
        """
        return self(context).check_data(x, "Flow.check_data")

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Shortcut for ``self(context).log_prob(x)``."""
        return self(context).log_prob(x)

    def sample(self, sample_shape: Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Shortcut for ``self(context).sample(sample_shape)`` (an int ``n`` means ``(n,)``)."""
        return self(context).sample(check_sample_shape(sample_shape, "Flow.sample"))
