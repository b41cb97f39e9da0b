r"""The affine layers that put a flow guide where the posterior is.

:class:`CholeskyAffineTransform` is the learnable full-rank affine bijection
``x = loc + L u`` (``L`` lower triangular with a positive diagonal). Started
at a Gaussian approximation of the posterior (Pathfinder's best one, see
:mod:`pyro_relax.infer.pathfinder`), it *whitens* the posterior: the layers
below it see a target with unit scale and little correlation in every
direction, which is what a flow's initialization and a single step size for
HMC or Langevin blocks assume. On posteriors such as a linear regression with
an uncentered predictor (corr(alpha, beta) = -0.99999) it is most of the fit.

:func:`identity_splines` makes elementwise rational-quadratic splines that
start as the identity (Pyro's ``Spline`` starts at a random monotone map),
so a one-dimensional flow guide starts at its loc/scale layer's point.
"""

from __future__ import annotations

__all__ = ["CholeskyAffineTransform", "identity_splines", "start_as_identity"]

import math

import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn

# Pyro's spline derivative is ``1e-3 + softplus(u)`` (its ``min_derivative``);
# this ``u`` makes it 1, so equal bins and unit knot slopes give the identity.
_UNIT_SLOPE = math.log(math.expm1(1.0 - 1e-3))


class CholeskyAffineTransform(TransformModule):
    """A learnable affine bijection ``x = loc + L u`` with ``L`` lower triangular.

    It is stored relative to its starting point ``(loc0, L0)``:
    ``x = loc0 + L0 (shift + M u)`` with ``M`` lower triangular with a positive
    (log-parametrized) diagonal, ``shift = 0`` and ``M = I`` at the start. So
    the learnable parameters are scale-free: an optimizer step of 0.01 moves
    the map by 0.01 posterior standard deviations, whatever the model's units
    (a coefficient with sd 0.001 beside one with sd 19,000). ``log|det|`` is
    ``sum log diag(L0) + sum log diag(M)``.

    Arguments:
        loc: the initial location, shape ``(dim,)`` (device and dtype are kept).
        scale_tril: the initial factor, shape ``(dim, dim)``, lower triangular
            with a positive finite diagonal (only its lower triangle is read).

    Raises:
        ValueError: for shapes that do not fit or a non-positive diagonal.

    Example:
        >>> import torch
        >>> t = CholeskyAffineTransform(torch.zeros(2), torch.tensor([[2.0, 0.0], [1.0, 0.5]]))
        >>> t(torch.tensor([[1.0, 1.0]])).tolist()
        [[2.0, 1.5]]
        >>> round(float(t.log_abs_det_jacobian(torch.zeros(1, 2), None)[0].detach()), 4)
        0.0
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: Tensor, scale_tril: Tensor) -> None:
        super().__init__()
        if not isinstance(loc, Tensor) or loc.dim() != 1:
            got = tuple(loc.shape) if isinstance(loc, Tensor) else type(loc).__name__
            raise ValueError(f"CholeskyAffineTransform: expected a loc of shape (dim,), got {got}")
        d = loc.shape[0]
        if not isinstance(scale_tril, Tensor) or tuple(scale_tril.shape) != (d, d):
            got = tuple(scale_tril.shape) if isinstance(scale_tril, Tensor) else type(scale_tril)
            raise ValueError(
                f"CholeskyAffineTransform: expected scale_tril of shape ({d}, {d}), got {got}"
            )
        tril = scale_tril.detach().to(device=loc.device, dtype=loc.dtype).tril()
        diag = tril.diagonal()
        if not bool(torch.isfinite(tril).all() and (diag > 0).all()):
            raise ValueError(
                "CholeskyAffineTransform: expected a finite scale_tril with a positive diagonal, "
                f"got diagonal {diag.tolist()}"
            )
        self.register_buffer("loc0", loc.detach().clone())
        self.register_buffer("tril0", tril.clone())
        self.shift = nn.Parameter(torch.zeros_like(loc))
        self.log_diag = nn.Parameter(torch.zeros_like(loc))
        self.lower = nn.Parameter(torch.zeros_like(tril))

    @property
    def loc(self) -> Tensor:
        """The current location ``loc0 + L0 shift``."""
        return self.loc0 + self.tril0 @ self.shift

    def _inner(self) -> Tensor:
        return self.lower.tril(-1) + torch.diag_embed(self.log_diag.exp())

    @property
    def scale_tril(self) -> Tensor:
        """The current factor ``L = L0 M``."""
        return self.tril0 @ self._inner()

    def _call(self, u: Tensor) -> Tensor:
        v = self.shift + (self._inner() @ u.unsqueeze(-1)).squeeze(-1)
        return self.loc0 + (self.tril0 @ v.unsqueeze(-1)).squeeze(-1)

    def _inverse(self, x: Tensor) -> Tensor:
        rhs = (x - self.loc0).unsqueeze(-1)
        lead = rhs.shape[:-2]
        v = torch.linalg.solve_triangular(self.tril0.expand(lead + self.tril0.shape), rhs,
                                          upper=False)
        v = v - self.shift.unsqueeze(-1)
        inner = self._inner()
        return torch.linalg.solve_triangular(inner.expand(lead + inner.shape), v,
                                             upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, u: Tensor, x: Tensor | None) -> Tensor:
        """``log |det L|`` (the sum of the log diagonal) for every row of ``u``."""
        total = self.tril0.diagonal().log().sum(-1) + self.log_diag.sum(-1)
        return total.expand(u.shape[:-1])


def identity_splines(
    count: int, dim: int = 1, count_bins: int = 8, bound: float = 4.0
) -> list[T.Spline]:
    """``count`` elementwise linear rational-quadratic splines that start as the identity.

    Example:
        >>> import torch
        >>> s = identity_splines(1)[0]
        >>> bool(torch.allclose(s(torch.tensor([[0.3]])), torch.tensor([[0.3]]), atol=1e-5))
        True
    """
    out = []
    for _ in range(count):
        spline = T.Spline(dim, count_bins=count_bins, bound=bound)
        with torch.no_grad():
            spline.unnormalized_widths.zero_()
            spline.unnormalized_heights.zero_()
            spline.unnormalized_derivatives.fill_(_UNIT_SLOPE)
        out.append(spline)
    return out


def start_as_identity(stack: list[object]) -> list[object]:
    """Zero the output layer of each conditioner in ``stack`` so every layer starts as the identity.

    Handles Pyro's affine autoregressive (IAF), affine coupling and spline
    coupling layers (others are left as they are). Below a whitening layer this
    makes the whole guide start at the whitening Gaussian (as Glow's zero
    initialization does); gradients reach the zeroed layers at once.

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> iaf = start_as_identity([T.affine_autoregressive(3)])[0]
        >>> x = torch.randn(4, 3)
        >>> bool(torch.allclose(iaf(x), x))
        True
    """
    for t in stack:
        spline = getattr(t, "upper_spline", None)  # SplineCoupling's conditional spline
        net = getattr(t, "arn", None) or getattr(t, "nn", None) or getattr(spline, "nn", None)
        last = getattr(net, "layers", [None])[-1]
        if not isinstance(last, nn.Linear):
            continue
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            if spline is not None:
                rest, bins = spline.input_dim, spline.count_bins
                start = 2 * rest * bins
                last.bias[start : start + rest * (bins - 1)] = _UNIT_SLOPE
    return stack
