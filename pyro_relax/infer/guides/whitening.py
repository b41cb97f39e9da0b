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

:class:`LowRankAffineTransform` is the same map for a Gaussian stored as
diagonal plus low rank (Pathfinder's L-BFGS factors at large ``d``):
``O(d k)`` per row and ``O(d + k^2)`` parameters, with an exact log-det.
:func:`whitening_layer` picks one of the two from a Pathfinder Gaussian.
"""

from __future__ import annotations

__all__ = [
    "make_whitening",
    "DENSE_WHITENING_MAX_DIM", "CholeskyAffineTransform", "LowRankAffineTransform",
    "identity_splines", "start_as_identity", "whitening_layer",
]

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
        # rows times L^{-T}: one (n, d) solve, never a (n, d, d) broadcast of the factor
        lead = x.shape[:-1]
        rows = (x - self.loc0).reshape(-1, x.shape[-1])
        v = torch.linalg.solve_triangular(self.tril0.T, rows, upper=True, left=False)
        v = v - self.shift
        u = torch.linalg.solve_triangular(self._inner().T, v, upper=True, left=False)
        return u.reshape(lead + x.shape[-1:])

    def log_abs_det_jacobian(self, u: Tensor, x: Tensor | None) -> Tensor:
        """``log |det L|`` (the sum of the log diagonal) for every row of ``u``."""
        total = self.tril0.diagonal().log().sum(-1) + self.log_diag.sum(-1)
        return total.expand(u.shape[:-1])


DENSE_WHITENING_MAX_DIM = 200
"""Up to this ``d``, :func:`whitening_layer` makes a dense :class:`CholeskyAffineTransform`.

Measured (``benchmarks/pathfinder_scaling.py --whitening``, 1 CPU thread on a shared
2-core machine, 32 rows, forward, log-det, backward and one Adam step): dense 3.1 ms
against low rank 0.8 ms at d = 100, 4.7 against 2.3 ms at d = 200, 44 against 3.3 ms at
d = 500, 485 against 5.6 ms at d = 1000 and 1.9 s against 8 ms at d = 2000 (the dense
layer has ``d (d + 3) / 2`` parameters: 4 million at d = 2000). Up to d = 200 the dense
layer, whose learnable correlation is not confined to the L-BFGS subspace, costs at
most about twice as much; at d = 500 it is already 13 times slower.
"""


class LowRankAffineTransform(TransformModule):
    """A learnable affine bijection ``x = loc + C u`` with ``C`` diagonal plus low rank.

    ``C = diag(s) (I + Q (L - I) Q^T)`` with ``Q`` ``(d, k)`` orthonormal (fixed),
    ``s`` ``(d,)`` positive and ``L`` ``(k, k)`` lower triangular with a positive
    diagonal. As in :class:`CholeskyAffineTransform` the learnable parameters are
    relative to the start: ``loc = loc0 + s0 shift``, ``s = s0 exp(log_scale)``,
    ``L = L0 M`` with ``M`` lower triangular (log-parametrized diagonal), so the
    layer starts at ``N(loc0, C0 C0^T)`` and a unit step moves it by about one
    posterior standard deviation. ``C^{-1} = (I + Q (L^{-1} - I) Q^T) diag(1/s)``
    and ``log|det C| = sum log s + sum log diag L``: exact, ``O(d k)`` per row.

    Arguments:
        loc: the initial location ``(d,)`` (device and dtype are kept).
        sqrt_diag: ``s`` at the start ``(d,)``, positive.
        basis: ``Q`` ``(d, k)`` with orthonormal columns.
        core: ``L`` at the start ``(k, k)``, lower triangular with a positive diagonal.

    Raises:
        ValueError: for shapes that do not fit or a non-positive diagonal.

    Example:
        >>> import torch
        >>> Q = torch.tensor([[1.0], [0.0], [0.0]])
        >>> t = LowRankAffineTransform(torch.zeros(3), torch.ones(3), Q, torch.tensor([[2.0]]))
        >>> t(torch.tensor([[1.0, 1.0, 1.0]])).tolist()
        [[2.0, 1.0, 1.0]]
        >>> round(float(t.log_abs_det_jacobian(torch.zeros(1, 3), None)[0].detach()), 4)
        0.6931
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: Tensor, sqrt_diag: Tensor, basis: Tensor, core: Tensor) -> None:
        super().__init__()
        owner = "LowRankAffineTransform"
        if not isinstance(loc, Tensor) or loc.dim() != 1:
            got = tuple(loc.shape) if isinstance(loc, Tensor) else type(loc).__name__
            raise ValueError(f"{owner}: expected a loc of shape (dim,), got {got}")
        d = loc.shape[0]
        shapes = {"sqrt_diag": (sqrt_diag, 1), "basis": (basis, 2), "core": (core, 2)}
        for name, (t, dims) in shapes.items():
            if not isinstance(t, Tensor) or t.dim() != dims:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{owner}: expected {name} with {dims} dimension(s), got {got}")
        k = basis.shape[-1]
        if sqrt_diag.shape != (d,) or basis.shape != (d, k) or core.shape != (k, k):
            raise ValueError(
                f"{owner}: expected sqrt_diag ({d},), basis ({d}, k) and core (k, k), got "
                f"{tuple(sqrt_diag.shape)}, {tuple(basis.shape)} and {tuple(core.shape)}"
            )
        like = {"device": loc.device, "dtype": loc.dtype}
        s0, core0 = sqrt_diag.detach().to(**like), core.detach().to(**like).tril()
        ok = torch.isfinite(s0).all() and (s0 > 0).all() and torch.isfinite(core0).all()
        if not bool(ok and (core0.diagonal() > 0).all()):
            raise ValueError(f"{owner}: expected a finite positive sqrt_diag and core diagonal")
        self.register_buffer("loc0", loc.detach().clone())
        self.register_buffer("scale0", s0.clone())
        self.register_buffer("basis", basis.detach().to(**like).clone())
        self.register_buffer("core0", core0.clone())
        self.shift = nn.Parameter(torch.zeros_like(loc))
        self.log_scale = nn.Parameter(torch.zeros_like(loc))
        self.lower = nn.Parameter(torch.zeros_like(core0))
        self.log_core_diag = nn.Parameter(core0.new_zeros(k))

    @property
    def loc(self) -> Tensor:
        """The current location ``loc0 + s0 shift``."""
        return self.loc0 + self.scale0 * self.shift

    @property
    def scale(self) -> Tensor:
        """The current diagonal ``s`` ``(d,)``."""
        return self.scale0 * self.log_scale.exp()

    @property
    def core(self) -> Tensor:
        """The current ``L = L0 M`` ``(k, k)``."""
        inner = self.lower.tril(-1) + torch.diag_embed(self.log_core_diag.exp())
        return self.core0 @ inner

    @property
    def variance(self) -> Tensor:
        """The marginal variances of ``loc + C u`` with ``u ~ N(0, I)``: ``diag(C C^T)``."""
        Q, L = self.basis, self.core
        inner = L @ L.T - torch.eye(L.shape[0], dtype=L.dtype, device=L.device)
        return self.scale.square() * (1.0 + ((Q @ inner) * Q).sum(-1))

    def _call(self, u: Tensor) -> Tensor:
        v = u @ self.basis
        return self.loc + self.scale * (u + (v @ self.core.T - v) @ self.basis.T)

    def _inverse(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        rows = ((x - self.loc) / self.scale).reshape(-1, x.shape[-1])
        v = rows @ self.basis
        w = torch.linalg.solve_triangular(self.core.T, v, upper=True, left=False)
        return (rows + (w - v) @ self.basis.T).reshape(lead + x.shape[-1:])

    def log_abs_det_jacobian(self, u: Tensor, x: Tensor | None) -> Tensor:
        """``log |det C| = sum log s + sum log diag L`` for every row of ``u``."""
        total = (self.scale0.log().sum() + self.log_scale.sum()
                 + self.core0.diagonal().log().sum() + self.log_core_diag.sum())
        return total.expand(u.shape[:-1])


def whitening_layer(
    gaussian: object, max_dense_dim: int = DENSE_WHITENING_MAX_DIM
) -> CholeskyAffineTransform | LowRankAffineTransform:
    """The whitening layer ``loc + C u`` started at a Pathfinder Gaussian.

    Dense (:class:`CholeskyAffineTransform`) when the Gaussian is dense or
    ``d <= max_dense_dim`` (see :data:`DENSE_WHITENING_MAX_DIM` for the measured
    threshold); else :class:`LowRankAffineTransform` with the Gaussian's own
    factors, never forming a ``d x d`` matrix.

    Arguments:
        gaussian: a :class:`~pyro_relax.infer.pathfinder.gaussian.Gaussian` (or a
            :class:`~pyro_relax.infer.pathfinder.PathfinderResult`, whose ``gaussian``
            is used): anything with ``loc``, ``sqrt_diag``, ``basis`` (``None`` when
            dense), ``core`` and ``dense_scale_tril()``.
        max_dense_dim: the largest ``d`` given a dense layer.

    Returns:
        The layer; its ``log_abs_det_jacobian`` is exact.

    Raises:
        TypeError: when ``gaussian`` does not have those attributes.

    Example:
        >>> import torch
        >>> from pyro_relax.infer.pathfinder.gaussian import Gaussian
        >>> q = Gaussian(torch.zeros(3), torch.ones(3), torch.eye(3)[:, :1], torch.eye(1))
        >>> type(whitening_layer(q)).__name__, type(whitening_layer(q, 2)).__name__
        ('CholeskyAffineTransform', 'LowRankAffineTransform')
    """
    q = getattr(gaussian, "gaussian", gaussian)
    needed = ("loc", "sqrt_diag", "basis", "core", "dense_scale_tril")
    if not all(hasattr(q, name) for name in needed):
        raise TypeError(
            f"whitening_layer: expected a Pathfinder Gaussian (with {', '.join(needed)}), "
            f"got {type(gaussian).__name__}"
        )
    if isinstance(max_dense_dim, bool) or not isinstance(max_dense_dim, int):
        raise TypeError(f"whitening_layer: expected an int max_dense_dim, got {max_dense_dim!r}")
    d = q.loc.shape[-1]
    if q.basis is None or d <= max_dense_dim:
        return CholeskyAffineTransform(q.loc, q.dense_scale_tril())
    return LowRankAffineTransform(q.loc, q.sqrt_diag, q.basis, q.core)


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


def make_whitening(loc: Tensor, spec: object) -> TransformModule:
    """The whitening layer at ``loc``: dense from a ``scale_tril``, else :func:`whitening_layer`.

    The layer takes ``loc``'s device and dtype.

    Example:
        >>> import torch
        >>> type(make_whitening(torch.zeros(2), torch.eye(2))).__name__
        'CholeskyAffineTransform'
    """
    if isinstance(spec, Tensor):
        return CholeskyAffineTransform(loc, spec)
    layer = whitening_layer(spec)
    return layer.to(device=loc.device, dtype=loc.dtype)
