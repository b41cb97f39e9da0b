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
from pyro.distributions.torch_transform import TransformModule
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor, nn
from torch.distributions import Transform

from pyro_relax.core import RelaxedLayer
from pyro_relax.distributions.adapter import TransformLayer, as_layer
from pyro_relax.distributions.flow import Flow
from pyro_relax.infer.guides.base import (
    RelaxedGuideMixin,
    check_flow_config,
    check_init_scale,
    check_model,
)
from pyro_relax.infer.guides.whitening import (
    identity_splines,
    make_whitening,
    start_as_identity,
)
from pyro_relax.infer.memory import check_allocation
from pyro_relax.transforms.stacks import coupling_stack

IAF_MAX_DIM = 256
"""The largest latent size given IAF layers (their conditioners need ``d^2`` parameters)."""

LayerSpec = (
    Sequence[RelaxedLayer | Transform] | Callable[[int], Sequence[RelaxedLayer | Transform]] | None
)


class LocScaleTransform(TransformModule):
    """A learnable elementwise affine bijection ``x = loc + exp(log_scale) * z`` on vectors.

    Arguments:
        loc: the initial location, shape ``(dim,)`` (its device and dtype are kept).
        scale: the initial scale (positive float or tensor broadcasting to ``loc``).

    Example:
        >>> import torch
        >>> t = LocScaleTransform(torch.zeros(2), 0.5)
        >>> t(torch.ones(3, 2))[0].tolist(), t.log_abs_det_jacobian(torch.ones(3, 2), None).shape
        ([0.5, 0.5], torch.Size([3]))
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: Tensor, scale: float | Tensor = 1.0) -> None:
        super().__init__()
        if not isinstance(loc, Tensor) or loc.dim() != 1:
            got = tuple(loc.shape) if isinstance(loc, Tensor) else type(loc).__name__
            raise ValueError(f"LocScaleTransform: expected a loc of shape (dim,), got {got}")
        scale_t = torch.as_tensor(scale, device=loc.device, dtype=loc.dtype)
        if not bool(torch.isfinite(scale_t).all() & (scale_t > 0).all()):
            raise ValueError(f"LocScaleTransform: expected a positive finite scale, got {scale!r}")
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale_t.log().expand_as(loc).clone())

    def _call(self, z: Tensor) -> Tensor:
        return self.loc + self.log_scale.exp() * z

    def _inverse(self, x: Tensor) -> Tensor:
        return (x - self.loc) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor | None) -> Tensor:
        """``sum(log_scale)`` for every row of ``z``."""
        return self.log_scale.sum(-1).expand(z.shape[:-1])


def build_flow_layers(
    latent_dim: int,
    layers: LayerSpec,
    init_loc: Tensor,
    init_scale: float,
    num_layers: int = 4,
    hidden: int = 64,
    kind: str = "spline",
    init_scale_tril: Tensor | object | None = None,
) -> list[RelaxedLayer]:
    """The stack of a flow guide: the given layers, or the default one (as relaxed layers).

    The default is ``coupling_stack(latent_dim, num_layers, hidden, kind)`` (for
    ``kind="iaf"`` an IAF stack of width ``max(hidden, latent_dim)`` up to
    :data:`IAF_MAX_DIM` dimensions and affine couplings of width ``hidden`` above,
    whose cost is linear in ``latent_dim``; elementwise splines starting as the
    identity for ``latent_dim == 1``) followed by a :class:`LocScaleTransform` starting
    at ``(init_loc, init_scale)``, or, given ``init_scale_tril``, by a whitening
    :class:`~pyro_relax.infer.guides.whitening.CholeskyAffineTransform` starting
    at ``(init_loc, init_scale_tril)``.

    Arguments:
        latent_dim: the unconstrained latent size.
        layers: ``None`` (default stack), a list (base to data), or a callable
            ``latent_dim -> list``.
        init_loc: the initial location ``(latent_dim,)``.
        init_scale: the initial scale of the default stack.
        num_layers: coupling (or IAF) layers in the default stack.
        hidden: hidden width of their conditioners.
        kind: ``"spline"``, ``"affine"`` or ``"iaf"``.
        init_scale_tril: a Pathfinder Gaussian (low rank above 200 dimensions), or a
            ``(latent_dim, latent_dim)`` Cholesky factor of the
            initial Gaussian (e.g. Pathfinder's), or ``None``.

    Example:
        >>> import torch
        >>> len(build_flow_layers(3, None, torch.zeros(3), 0.1, num_layers=2, kind="affine"))
        4
    """
    if layers is None:
        if latent_dim == 1:
            stack = list(identity_splines(num_layers))
        elif kind == "iaf" and latent_dim <= IAF_MAX_DIM:
            # an autoregressive conditioner needs a width of at least d (d^2 parameters)
            width = max(hidden, latent_dim)
            check_allocation(8.0 * num_layers * (3 * latent_dim + width) * width,
                             f"an IAF stack of width {width}", "build_flow_layers")
            stack: list[Any] = []
            for i in range(num_layers):
                stack.append(T.affine_autoregressive(latent_dim, hidden_dims=[width, width]))
                if i < num_layers - 1:
                    stack.append(T.Permute(torch.arange(latent_dim - 1, -1, -1)))
        else:  # couplings: parameters and time linear in d at a fixed width
            stack = coupling_stack(latent_dim, num_layers, hidden,
                                   "affine" if kind == "iaf" else kind)
        if isinstance(init_scale_tril, Tensor):
            check_allocation(8.0 * 3 * latent_dim**2, f"a {latent_dim} x {latent_dim} whitening "
                             "factor with its gradients", "build_flow_layers")
            # zero-initialized conditioners: the guide starts at the whitening Gaussian
            start_as_identity(stack)
            stack.append(make_whitening(init_loc, init_scale_tril))
        else:
            stack.append(LocScaleTransform(init_loc, init_scale))
    elif callable(layers):
        stack = list(layers(latent_dim))
    elif isinstance(layers, Sequence):
        stack = list(layers)
    else:
        raise TypeError(
            f"expected layers as None, a list of layers or a callable latent_dim -> list, "
            f"got {type(layers).__name__}"
        )
    return [as_layer(layer) for layer in stack]


def make_flow(
    layers: list[RelaxedLayer], latent_dim: int, owner: str, cls: type = Flow, **kwargs: Any  # noqa: ANN401
) -> Flow:
    """A ``Flow`` whose base shape is read back from the layers; checks the event shape."""
    shape = torch.Size([latent_dim])
    try:
        for layer in reversed(layers):
            shape = layer.latent_shape(shape)
        flow = cls(shape, layers, **kwargs)
        got = flow().event_shape
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"{owner}: expected layers producing event shape ({latent_dim},), "
            f"got layers that do not fit it ({err})"
        ) from err
    if tuple(got) != (latent_dim,):
        raise ValueError(
            f"{owner}: expected layers producing event shape ({latent_dim},), got {tuple(got)}"
        )
    return flow


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
    (the unconstrained latent). With the default stack (a coupling stack and a
    learnable loc/scale layer starting at ``init_loc_fn``'s point with scale
    ``init_scale``) the guide is an exact flow and :meth:`get_transform` gives
    Pyro's :class:`~pyro.infer.reparam.NeuTraReparam` its transform.

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
        init_loc_fn: per-site initialization (Pyro's ``init_to_*``).
        init_scale: initial scale of the default stack's loc/scale layer.
        init_gaussian: ``(loc, scale_tril)`` of a Gaussian approximation in the
            unconstrained space (e.g. :func:`~pyro_relax.infer.pathfinder.pathfinder_for_model`'s):
            the default stack then ends in a whitening
            :class:`~pyro_relax.infer.guides.whitening.CholeskyAffineTransform`
            started there, instead of the loc/scale layer.
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
        num_layers: int = 4,
        hidden: int = 64,
        kind: str = "spline",
        init_loc_fn: Callable[[dict], Tensor] = init_to_median,
        init_scale: float = 0.1,
        init_gaussian: tuple[Tensor, Tensor] | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self._set_stack(model, layers, num_layers, hidden, kind, init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._init_relaxed(model, init_gaussian, dtype)

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
