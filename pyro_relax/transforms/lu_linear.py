"""Invertible linear maps in the LU parametrization (Glow, neural spline flows)."""

from __future__ import annotations

__all__ = ["LULinear", "LUTransform", "LUWeight", "check_feature_dim"]

import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn

from pyro_relax.core.checks import check_positive_int

_INITS = ("orthogonal", "identity")


def check_feature_dim(
    x: Tensor, size: int, dim: int, event_dim: int, owner: str, dtype: torch.dtype | None = None
) -> None:
    """Raise unless ``x`` has ``event_dim`` event dims and size ``size`` at ``dim``.

    ``x`` must also be a floating tensor (of ``dtype`` if given): a ``TypeError``
    for the type or dtype, a ``ValueError`` for the shape.

    Example:
        >>> check_feature_dim(torch.zeros(4, 3), 3, -1, 1, "demo")
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{owner}: expected a floating tensor, got {x.dtype} (a bare transform does not "
            "convert; FlowDistribution and the layer adapter convert integer data)"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: expected {dtype} input (the dtype of its parameters), got {x.dtype}"
        )
    if x.dim() < event_dim or x.shape[dim] != size:
        got = tuple(x.shape[x.dim() - event_dim :]) if x.dim() >= event_dim else tuple(x.shape)
        raise ValueError(
            f"{owner}: expected an event of {event_dim} dims with size {size} at dim {dim}, "
            f"got event shape {got} (input shape {tuple(x.shape)})"
        )


class LUWeight(nn.Module):
    r"""An invertible ``D x D`` matrix ``W = P L (U + diag(s))``, applied along one tensor dim.

    ``P`` is a fixed permutation (stored as index buffers), ``L`` unit lower
    triangular, ``U`` strictly upper triangular and ``s = sign * exp(log_scale)``
    with a fixed sign buffer, so ``log|det W| = sum(log_scale)`` and ``W`` stays
    invertible for any parameter values. Products and solves act along any
    dimension of a tensor with any batch dimensions; the inverse uses two
    triangular solves and never forms ``W^{-1}``. Shared by :class:`LULinear`
    and :class:`~pyro_relax.transforms.conv1x1.InvertibleConv1x1`.

    Arguments:
        dim: the size ``D``.
        init: ``"orthogonal"`` (the LU factors of a random rotation from a QR
            decomposition, drawn with the global torch RNG) or ``"identity"``.

    References:
        Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.

    Example:
        >>> import torch
        >>> lu = LUWeight(3)
        >>> v = torch.randn(4, 3)
        >>> torch.allclose(lu.solve(lu.apply(v, -1), -1), v, atol=1e-5)
        True
    """

    def __init__(self, dim: int, init: str = "orthogonal") -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim", "LUWeight")
        if init not in _INITS:
            raise ValueError(f"LUWeight: expected init in {_INITS}, got {init!r}")
        if init == "orthogonal":
            # Factor in float64, then store in the default dtype like any nn.Module.
            q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
            p, lower, upper = torch.linalg.lu(q)
            perm = p.argmax(-1)  # (P v)_i = v[perm[i]]
        else:
            lower = upper = torch.eye(dim, dtype=torch.float64)
            perm = torch.arange(dim)
        lower, upper = (m.to(torch.get_default_dtype()) for m in (lower, upper))
        diag = upper.diagonal()
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))
        self.register_buffer("sign", torch.sign(diag))
        self.lower = nn.Parameter(lower.tril(-1))
        self.upper = nn.Parameter(upper.triu(1))
        self.log_scale = nn.Parameter(diag.abs().log())

    def _factors(self) -> tuple[Tensor, Tensor]:
        """``L`` (unit diagonal) and ``U + diag(s)``, masked so only the free entries count."""
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag_embed(self.sign * self.log_scale.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """The assembled matrix ``W = P L (U + diag(s))`` (for inspection and tests)."""
        lower, upper = self._factors()
        return (lower @ upper)[self.perm]

    def log_abs_det(self) -> Tensor:
        """``log|det W| = sum(log_scale)`` (a scalar)."""
        return self.log_scale.sum()

    def apply(self, v: Tensor, dim: int) -> Tensor:
        """``W v`` along dimension ``dim`` of ``v`` (every other dimension is a batch)."""
        lower, upper = self._factors()
        out = v.movedim(dim, -1) @ (lower @ upper).T
        return out[..., self.perm].movedim(-1, dim)

    def solve(self, v: Tensor, dim: int) -> Tensor:
        """``W^{-1} v`` along dimension ``dim`` of ``v``, by two triangular solves."""
        lower, upper = self._factors()
        rows = v.movedim(dim, -1)[..., self.inv_perm]
        shape = rows.shape
        rows = rows.reshape(-1, self.dim)
        # Row form: x^T = b^T A^{-T} solves X A^T = B (left=False), one row per vector.
        rows = torch.linalg.solve_triangular(
            lower.T, rows, upper=True, left=False, unitriangular=True
        )
        rows = torch.linalg.solve_triangular(upper.T, rows, upper=False, left=False)
        return rows.reshape(shape).movedim(-1, dim)

    def extra_repr(self) -> str:
        """The size ``D``."""
        return f"dim={self.dim}"


class LUTransform(TransformModule):
    r"""Base of the transforms that multiply one event dimension by an :class:`LUWeight`.

    The features lie on dimension ``-event_dim`` of an event (the vector for
    ``event_dim=1``, the channels of ``(C, H, W)`` images for ``event_dim=3``);
    the dimensions after them are positions that share ``W``, so
    ``log|det| = positions * sum log|s|``. It holds the one copy of the
    products, solves, log-determinant and input checks of :class:`LULinear`
    and :class:`~pyro_relax.transforms.conv1x1.InvertibleConv1x1`; a subclass
    only chooses the event rank and the bias. ``_call`` is the base-to-data
    direction, as in Pyro. No cache is kept (``cache_size=0``): parameters
    change in place between optimizer steps, and an identity-keyed cache
    would hand back stale values for a data tensor reused across steps.

    Arguments:
        size: the number of features ``D``.
        event_dim: the event rank (the features are its first dimension).
        bias: whether to learn a per-feature bias ``b`` (zeros at start),
            added after ``W``.
        init: ``"orthogonal"`` (a random rotation) or ``"identity"``.

    Example:
        >>> import torch
        >>> t = LUTransform(2, event_dim=2, bias=False, init="identity")
        >>> x = torch.randn(4, 2, 5)
        >>> torch.equal(t(x), x), t.log_abs_det_jacobian(x, x).shape
        (True, torch.Size([4]))
    """

    bijective = True

    def __init__(self, size: int, event_dim: int, bias: bool, init: str = "orthogonal") -> None:
        super().__init__()
        owner = type(self).__name__
        self.size = check_positive_int(size, "size", owner)
        self._event_dim = check_positive_int(event_dim, "event_dim", owner)
        if not isinstance(bias, bool):
            raise TypeError(f"{owner}: expected a bool bias, got {type(bias).__name__}")
        self.lu = LUWeight(size, init)
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None
        # Real events of event_dim dimensions (plain attributes, as in torch's transforms).
        self.domain = self.codomain = constraints.independent(constraints.real, self._event_dim)

    def weight(self) -> Tensor:
        """The assembled ``D x D`` matrix ``W``."""
        return self.lu.weight()

    def _check(self, x: Tensor, who: str) -> None:
        check_feature_dim(x, self.size, -self._event_dim, self._event_dim, who, self.lu.lower.dtype)

    def _bias(self) -> Tensor | None:
        """The bias shaped to broadcast over the positions, ``None`` without one."""
        if self.bias is None:
            return None
        return self.bias.reshape((self.size,) + (1,) * (self._event_dim - 1))

    def _call(self, x: Tensor) -> Tensor:
        self._check(x, type(self).__name__)
        y = self.lu.apply(x, -self._event_dim)
        bias = self._bias()
        return y if bias is None else y + bias

    def _inverse(self, y: Tensor) -> Tensor:
        self._check(y, f"{type(self).__name__}.inv")
        bias = self._bias()
        if bias is not None:
            y = y - bias
        return self.lu.solve(y, -self._event_dim)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``positions * sum log|s|`` for each batch element: shape ``x.shape[:-event_dim]``."""
        self._check(x, f"{type(self).__name__}.log_abs_det_jacobian")
        positions = math.prod(x.shape[x.dim() - self._event_dim + 1 :])
        ld = positions * self.lu.log_abs_det()
        return ld.expand(x.shape[: x.dim() - self._event_dim]).clone()


class LULinear(LUTransform):
    r"""Invertible linear layer ``y = W x + b`` with ``W = P L (U + diag(s))``.

    ``log|det dy/dx| = sum log|s|``, constant in ``x``; the inverse runs two
    triangular solves (``torch.linalg.solve_triangular``). Pyro's
    ``GeneralizedChannelPermute`` uses the same factorization for images; this
    is its vector form, with a bias, arbitrary batch dimensions, float64 and
    the ``meta`` device (the shared code is :class:`LUTransform`).

    Arguments:
        dim: the event size ``D`` (event shape ``(D,)``).
        bias: whether to learn ``b`` (zeros at start).
        init: ``"orthogonal"`` (a random rotation) or ``"identity"``.

    References:
        Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.
        Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.

    Example:
        >>> import torch
        >>> t = LULinear(3)
        >>> x = torch.randn(5, 3)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5), t.weight().shape
        (True, torch.Size([3, 3]))
    """

    def __init__(self, dim: int, bias: bool = True, init: str = "orthogonal") -> None:
        check_positive_int(dim, "dim", "LULinear")
        super().__init__(dim, 1, bias, init)
        self.dim = dim

    def extra_repr(self) -> str:
        """The size and whether there is a bias."""
        return f"dim={self.dim}, bias={self.bias is not None}"
