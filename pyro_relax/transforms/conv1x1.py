"""Glow's invertible 1x1 convolution, in the LU parametrization."""

from __future__ import annotations

__all__ = ["InvertibleConv1x1"]

from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor

from pyro_relax.transforms.lu_linear import LUWeight, check_feature_dim, check_positive_int


class InvertibleConv1x1(TransformModule):
    r"""Mix the channels of ``(C, H, W)`` images with one invertible ``C x C`` matrix.

    ``y[..., :, h, w] = W x[..., :, h, w]`` at every pixel with
    ``W = P L (U + diag(s))`` (:class:`~pyro_relax.transforms.lu_linear.LUWeight`,
    shared with :class:`~pyro_relax.transforms.lu_linear.LULinear`), so
    ``log|det dy/dx| = H W sum log|s|`` and the inverse is two triangular
    solves. The event is ``(C, H, W)`` (``event_dim = 3``); any number of
    leading batch dimensions is allowed, as are float64 and the ``meta``
    device. ``_call`` is the base-to-data direction, as in Pyro; no cache is
    kept (see :class:`~pyro_relax.transforms.lu_linear.LULinear`).

    Pyro's ``GeneralizedChannelPermute`` is the same map (``W = P L U`` with a
    free diagonal stored densely); this one keeps the sign of the diagonal
    fixed and learns its log-magnitude, so ``W`` cannot become singular during
    training, and it shares its parametrization with the vector layer. Glow
    puts the bias in the :class:`~pyro_relax.transforms.actnorm.ActNorm` that
    precedes this layer, so there is none here.

    Arguments:
        channels: the number of channels ``C``.
        init: ``"orthogonal"`` (a random rotation, Glow's choice) or ``"identity"``.

    References:
        Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.

    Example:
        >>> import torch
        >>> t = InvertibleConv1x1(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y = t(x)
        >>> torch.allclose(t.inv(y), x, atol=1e-5), t.log_abs_det_jacobian(x, y).shape
        (True, torch.Size([2]))
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    bijective = True

    def __init__(self, channels: int, init: str = "orthogonal") -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels", "InvertibleConv1x1")
        self.lu = LUWeight(channels, init)

    def weight(self) -> Tensor:
        """The ``C x C`` channel-mixing matrix ``W``."""
        return self.lu.weight()

    def _call(self, x: Tensor) -> Tensor:
        check_feature_dim(x, self.channels, -3, 3, "InvertibleConv1x1", self.lu.lower.dtype)
        return self.lu.apply(x, -3)

    def _inverse(self, y: Tensor) -> Tensor:
        check_feature_dim(y, self.channels, -3, 3, "InvertibleConv1x1.inv", self.lu.lower.dtype)
        return self.lu.solve(y, -3)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``H W sum log|s|`` for each batch element: shape ``x.shape[:-3]``."""
        check_feature_dim(
            x, self.channels, -3, 3, "InvertibleConv1x1.log_abs_det_jacobian", self.lu.lower.dtype
        )
        pixels = x.shape[-2] * x.shape[-1]
        return (pixels * self.lu.log_abs_det()).expand(x.shape[:-3]).clone()

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
