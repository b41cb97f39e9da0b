"""Glow's invertible 1x1 convolution, in the LU parametrization."""

from __future__ import annotations

__all__ = ["InvertibleConv1x1"]

from pyro_relax.core.checks import check_positive_int
from pyro_relax.transforms.lu_linear import LUTransform


class InvertibleConv1x1(LUTransform):
    r"""Mix the channels of ``(C, H, W)`` images with one invertible ``C x C`` matrix.

    ``y[..., :, h, w] = W x[..., :, h, w]`` at every pixel with
    ``W = P L (U + diag(s))`` (:class:`~pyro_relax.transforms.lu_linear.LUWeight`;
    the code is :class:`~pyro_relax.transforms.lu_linear.LUTransform`, shared with
    :class:`~pyro_relax.transforms.lu_linear.LULinear`), so
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
        >>> images = torch.randn(2, 3, 4, 4)
        >>> mixed = t(images)
        >>> ld = t.log_abs_det_jacobian(images, mixed)
        >>> torch.allclose(ld, 16 * torch.linalg.slogdet(t.weight())[1], atol=1e-4)
        True
    """

    def __init__(self, channels: int, init: str = "orthogonal") -> None:
        check_positive_int(channels, "channels", "InvertibleConv1x1")
        super().__init__(channels, 3, False, init)
        self.channels = channels

    def extra_repr(self) -> str:
        """The number of channels."""
        return f"channels={self.channels}"
