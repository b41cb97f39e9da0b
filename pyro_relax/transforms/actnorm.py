"""Activation normalization (Glow's ActNorm) with data-dependent initialization."""

from __future__ import annotations

__all__ = ["ActNorm"]

import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn

from pyro_relax.core.checks import check_finite, check_positive, check_positive_int
from pyro_relax.transforms.lu_linear import check_feature_dim


class ActNorm(TransformModule):
    r"""Per-feature affine map ``y = x * exp(log_scale) + bias``, initialized from data.

    Features lie on dimension ``-event_dim`` of an event: the vector itself for
    ``event_dim=1``, the channels of ``(C, H, W)`` images for ``event_dim=3``
    (one scale and bias per channel, shared by the ``H W`` pixels); the
    dimensions after the features are spatial. ``log|det dy/dx|`` is
    ``sum(log_scale)`` times the number of spatial positions.

    Data-dependent initialization (Glow): the first call of the **inverse**
    (data to latent, the direction ``log_prob`` takes during training) sets
    ``bias`` and ``log_scale`` from that batch, without gradient, so that the
    latent output has zero mean and unit variance per feature; after that the
    two are ordinary parameters. A batch with fewer than two values per
    feature (a single vector) leaves the layer uninitialized, since it has no
    variance, and the next batch initializes it. :meth:`initialize` does the
    same explicitly. The flag is the buffer ``initialized``, so it travels
    with ``state_dict`` and ``torch.save``; a Python mirror of it is read in
    the hot path, so no call synchronizes with the device. Sampling
    (``_call``) before any inverse call uses the identity map. No cache is
    kept (``cache_size=0``), since the parameters change in place.

    Arguments:
        num_features: the number of features (channels) ``C``.
        event_dim: the number of event dimensions (1 for vectors, 3 for images).
        eps: added to the standard deviation at initialization.

    References:
        Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.

    Example:
        >>> import torch
        >>> t = ActNorm(2)
        >>> z = t.inv(3.0 + 2.0 * torch.randn(100, 2))  # initializes from this batch
        >>> bool(t.initialized), bool(z.mean(0).abs().max() < 1e-5)
        (True, True)
    """

    bijective = True

    def __init__(self, num_features: int, event_dim: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_features = check_positive_int(num_features, "num_features", "ActNorm")
        self._event_dim = check_positive_int(event_dim, "event_dim", "ActNorm")
        self.eps = check_positive(eps, "eps", "ActNorm")
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False  # host mirror of the buffer
        self.domain = self.codomain = constraints.independent(constraints.real, self._event_dim)

    # -- helpers ------------------------------------------------------------
    def _check(self, x: Tensor, who: str) -> None:
        check_feature_dim(
            x, self.num_features, -self._event_dim, self._event_dim, who, self.log_scale.dtype
        )

    def _view(self, p: Tensor) -> Tensor:
        """A parameter shaped to broadcast over the spatial dimensions."""
        return p.reshape((self.num_features,) + (1,) * (self._event_dim - 1))

    def _spatial_size(self, x: Tensor) -> int:
        return math.prod(x.shape[x.dim() - self._event_dim + 1 :])

    def _stats_rows(self, x: Tensor) -> Tensor:
        """``x`` as a ``(n, C)`` matrix of feature values (batch and spatial dims pooled)."""
        return x.detach().movedim(-self._event_dim, -1).reshape(-1, self.num_features)

    def _set_from(self, rows: Tensor) -> None:
        with torch.no_grad():
            var, mean = torch.var_mean(rows, dim=0, correction=0)
            self.bias.copy_(mean)
            self.log_scale.copy_(torch.log(var.sqrt() + self.eps))
            self.initialized.fill_(True)
        self._initialized = True

    # -- public -------------------------------------------------------------
    def initialize(self, data: Tensor) -> None:
        """Set ``bias`` and ``log_scale`` so ``inv(data)`` has zero mean, unit variance per feature.

        Arguments:
            data: data-side values of shape ``batch_shape + event_shape``, with at
                least two values per feature (batch and spatial positions pooled).
        """
        self._check(data, "ActNorm.initialize")
        check_finite(data, "ActNorm.initialize")
        rows = self._stats_rows(data)
        if rows.shape[0] < 2:
            raise ValueError(
                f"ActNorm.initialize: expected at least 2 values per feature, got {rows.shape[0]}"
            )
        self._set_from(rows)

    def _call(self, x: Tensor) -> Tensor:
        self._check(x, "ActNorm")
        return x * self._view(self.log_scale).exp() + self._view(self.bias)

    def _inverse(self, y: Tensor) -> Tensor:
        self._check(y, "ActNorm.inv")
        if not self._initialized:
            check_finite(y, "ActNorm.inv (data-dependent initialization)")
            rows = self._stats_rows(y)
            if rows.shape[0] >= 2:
                self._set_from(rows)
        return (y - self._view(self.bias)) * torch.exp(-self._view(self.log_scale))

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``spatial size * sum(log_scale)`` per batch element: shape ``x.shape[:-event_dim]``."""
        self._check(x, "ActNorm.log_abs_det_jacobian")
        ld = self._spatial_size(x) * self.log_scale.sum()
        return ld.expand(x.shape[: x.dim() - self._event_dim]).clone()

    def _load_from_state_dict(
        self, state_dict: dict[str, object], prefix: str, *args: object
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if self.initialized.device.type != "meta":
            self._initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        """The size, the event rank and whether the data initialization has run."""
        return (
            f"num_features={self.num_features}, event_dim={self._event_dim}, "
            f"initialized={self._initialized}"
        )
