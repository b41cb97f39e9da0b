r"""``AutoFlowGuide``: a flow of bijections and surjections over the unconstrained latent vector.

The guide is a :class:`~pyro_relax.distributions.FlowDistribution` over the
``latent_dim`` unconstrained latents of any Pyro model
(:class:`~pyro.infer.autoguide.AutoContinuous` handles the constraints). The
stack may hold Pyro transforms, our bijections and relaxed layers
(surjections, stochastic layers). Each draw is returned to Pyro as a Delta
carrying ``rsample_and_log_q``'s log-density estimate (see
:mod:`pyro_relax.infer.guides.base`): exact ``log q`` for a bijective stack, a
path estimate otherwise, so ``Trace_ELBO`` gives the ELBO or its
auxiliary-variable bound.
"""

from __future__ import annotations

__all__ = [
    "FLOW_DEFAULTS",
    "IAF_MAX_DIM",
    "AutoFlowGuide",
    "FlowStackMixin",
    "LocScaleTransform",
    "build_flow_layers",
    "make_flow",
]

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_feasible
from torch import Tensor
from torch.distributions import Transform

from pyro_relax.core import RelaxedLayer
from pyro_relax.distributions.adapter import TransformLayer
from pyro_relax.infer.guides.base import (
    RelaxedGuideMixin,
    check_flow_config,
    check_init_scale,
    check_model,
)
from pyro_relax.infer.guides.stack import (
    FLOW_DEFAULTS,
    IAF_MAX_DIM,
    LayerSpec,
    LocScaleTransform,
    build_flow_layers,
    make_flow,
)


class _InDtype(Transform):
    """A transform applied in ``dtype`` whatever the input's (results in the input's dtype).

    NeuTra hands the guide's transform draws in the default dtype (float32) while
    the flow's parameters are float64.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, inner: Transform, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def _call(self, z: Tensor) -> Tensor:
        return self.inner(z.to(self.dtype)).to(z.dtype)

    def _inverse(self, x: Tensor) -> Tensor:
        return self.inner.inv(x.to(self.dtype)).to(x.dtype)

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        lad = self.inner.log_abs_det_jacobian(z.to(self.dtype), x.to(self.dtype))
        return lad.to(z.dtype)


class _LayerTransform(Transform):
    """A bijective relaxed layer seen as a torch ``Transform`` (base to data)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, layer: RelaxedLayer) -> None:
        super().__init__()
        self.layer = layer

    def _call(self, z: Tensor) -> Tensor:
        return self.layer.decode(z)[0]

    def _inverse(self, x: Tensor) -> Tensor:
        return self.layer.encode(x)[0]

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        return self.layer.decode(z)[1]


class FlowStackMixin:
    """The flow part of a guide: its options checked once, its stack built on the first call.

    Shared by :class:`AutoFlowGuide` and
    :class:`~pyro_relax.infer.guides.snf.AutoSNFGuide`; a subclass calls
    :meth:`_set_stack` in its constructor and :meth:`_stack` in its ``_build``.
    """

    latent_dim: int
    _initial_gaussian: Callable[[Tensor], tuple[Tensor, Tensor | None]]

    def _set_stack(
        self, model: object, layers: LayerSpec, num_layers: int, hidden: int, kind: str,
        init_scale: float,
    ) -> None:
        owner = type(self).__name__
        check_model(model, owner)
        check_flow_config(owner, num_layers, hidden, kind)
        if layers is not None and not callable(layers) and not isinstance(layers, Sequence):
            raise TypeError(
                f"{owner}: expected layers as None, a list or a callable, "
                f"got {type(layers).__name__}"
            )
        self._layer_spec = layers
        self._num_layers, self._hidden, self._kind = num_layers, hidden, kind
        self._init_scale = check_init_scale(init_scale, owner)

    def _stack(self, init_loc: Tensor) -> list[RelaxedLayer]:
        """The flow's layers for ``init_loc`` (and ``init_gaussian``, when given)."""
        loc, tril = self._initial_gaussian(init_loc)
        return build_flow_layers(
            self.latent_dim, self._layer_spec, loc, self._init_scale, self._num_layers,
            self._hidden, self._kind, tril,
        )


class AutoFlowGuide(FlowStackMixin, RelaxedGuideMixin, AutoContinuous):
    r"""A normalizing-flow autoguide whose stack may hold surjections and stochastic layers.

    Base ``N(0, I)`` on the stack's base shape; layers from base to data
    (the unconstrained latent). The guide carries the method of
    ``fit_guide(model, "auto")``'s flow: by default (no ``init_loc_fn``), when it
    first traces the model it runs Pathfinder on the model's
    :class:`~pyro_relax.infer.model.Potential` and its default stack (IAF layers,
    :data:`FLOW_DEFAULTS`) ends in a whitening layer started at Pathfinder's
    Gaussian, its other layers at the identity; so a plain Pyro ``SVI`` loop
    starts where ``auto`` does. With a Pyro ``init_to_*`` as ``init_loc_fn`` the
    stack ends instead in a loc/scale layer started there with scale
    ``init_scale``. The default stack is an exact flow and :meth:`get_transform`
    gives Pyro's :class:`~pyro.infer.reparam.NeuTraReparam` its transform.

    Arguments:
        model: a Pyro model (continuous latent sites).
        layers: ``None`` for the default stack; a list of layers (Pyro
            transforms, :class:`~pyro_relax.core.RelaxedLayer`) built
            for ``latent_dim``; or a callable ``latent_dim -> list`` (the latent
            size is known only after the model is traced).
        num_layers: coupling/IAF layers of the default stack.
        hidden: conditioner width of the default stack.
        kind: ``"spline"`` (rational-quadratic coupling), ``"affine"`` (RealNVP)
            or ``"iaf"`` (affine autoregressive, fast sampling).
        init_loc_fn: ``None`` (default): start at Pathfinder's Gaussian (falling
            back to ``init_to_feasible``, with a warning, when Pathfinder finds no
            finite point); or a per-site initialization (Pyro's ``init_to_*``).
        init_scale: initial scale of the default stack's loc/scale layer.
        init_gaussian: ``(loc, scale_tril)`` or a Pathfinder Gaussian: a Gaussian
            approximation in the unconstrained space given in advance (no Pathfinder
            run then); the default stack ends in a whitening layer started there.
        dtype: the dtype of the guide's parameters and latents (``None``: float64;
            see :mod:`pyro_relax.infer.model` for how a float32 model is evaluated).

    References:
        Rezende and Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
        Nielsen et al. SurVAE Flows. NeurIPS 2020 (arXiv 2007.02731).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoFlowGuide(model, num_layers=1, hidden=8)
        >>> sorted(guide())
        ['s']
        >>> z, log_q = guide.sample_unconstrained(5)
        >>> z.shape, log_q.shape
        (torch.Size([5, 1]), torch.Size([5]))
    """

    def __init__(
        self,
        model: Callable[..., Any],
        layers: LayerSpec = None,
        *,
        num_layers: int = FLOW_DEFAULTS["num_layers"],
        hidden: int = FLOW_DEFAULTS["hidden"],
        kind: str = FLOW_DEFAULTS["kind"],
        init_loc_fn: Callable[[dict], Tensor] | None = None,
        init_scale: float = FLOW_DEFAULTS["init_scale"],
        init_gaussian: tuple[Tensor, Tensor] | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self._set_stack(model, layers, num_layers, hidden, kind, init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn or init_to_feasible)
        self._init_relaxed(model, init_gaussian, dtype,
                           pathfinder=init_loc_fn is None and layers is None)

    def _build(self, init_loc: Tensor) -> None:
        flow = make_flow(self._stack(init_loc), self.latent_dim, type(self).__name__)
        self.flow = flow.to(device=init_loc.device, dtype=init_loc.dtype)

    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        return self.flow().rsample_and_log_q(sample_shape)

    @property
    def bijective(self) -> bool:
        """Whether every layer of the stack is a bijection (then ``log_q`` is exact)."""
        return self.prototype_trace is not None and all(l.bijective for l in self.flow.layers)

    def get_base_dist(self) -> dist.Distribution:
        """The standard normal ``N(0, I_latent_dim)`` on the device and dtype of the guide."""
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__}.get_base_dist: run the guide once first")
        loc = torch.zeros(self.latent_dim, dtype=self.flow.dtype, device=self.flow.device)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> Transform:  # noqa: ANN401
        """The transform from ``N(0, I)`` to the guide's unconstrained latent (bijective stacks).

        Raises:
            NotImplementedError: if a layer is not bijective or the base shape is
                not ``(latent_dim,)`` (Pyro's ``NeuTraReparam`` turns this into its
                own error message).
        """
        owner = f"{type(self).__name__}.get_transform"
        if self.prototype_trace is None:
            raise RuntimeError(f"{owner}: run the guide once first")
        for layer in self.flow.layers:
            if not layer.bijective:
                raise NotImplementedError(
                    f"{owner}: expected an all-bijective stack, got {type(layer).__name__}"
                )
        if tuple(self.flow.base_shape) != (self.latent_dim,):
            raise NotImplementedError(f"{owner}: the base shape differs from the latent shape")
        parts: list[Transform] = []
        for layer in self.flow.layers:
            if isinstance(layer, TransformLayer) and not layer.conditional:
                parts.append(layer.wrapped)
            else:
                parts.append(_LayerTransform(layer))
        return _InDtype(T.ComposeTransform(parts), self.flow.dtype)
