r"""Gaussian transitions ``N(mean, variance * M^{-1})``: draws, log densities, kinetic energy.

The inverse mass ``M^{-1}`` is ``None`` (the identity), a *diagonal* (a float or
a tensor broadcasting to the event shape) or a :class:`DenseInverseMass`
wrapping a symmetric positive definite ``(D, D)`` matrix for a vector event
(``event_dim=1``). Nothing here synchronizes with the device: shapes are
checked, values are not.
"""

from __future__ import annotations

__all__ = [
    "DenseInverseMass",
    "EulerMaruyamaInfo",
    "apply_inverse_mass",
    "check_like",
    "euler_maruyama_step",
    "gaussian_transition_log_prob",
    "kinetic_energy",
    "scale_noise",
]

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pyro_relax.core.layer import sum_event


class DenseInverseMass(NamedTuple):
    """A dense inverse mass: wrap a ``(D, D)`` SPD matrix to pass it as ``inv_mass``.

    Example:
        >>> DenseInverseMass(torch.eye(2)).matrix.shape
        torch.Size([2, 2])
    """

    matrix: Tensor


InverseMass = Tensor | float | DenseInverseMass | None


def check_like(name: str, value: object, ref: Tensor, where: str) -> Tensor:
    """Return ``value`` if it is a tensor of the shape of ``ref``, else raise.

    Arguments:
        name: the argument's name, for the message.
        value: the tensor to check.
        ref: a tensor of the expected shape.
        where: the caller, for the message.

    Returns:
        ``value`` unchanged.

    Raises:
        TypeError: ``value`` is not a tensor.
        ValueError: its shape differs from ``ref``'s.

    Example:
        >>> check_like("grad", torch.zeros(3), torch.ones(3), "demo").shape
        torch.Size([3])
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: expected {name} to be a tensor, got {type(value).__name__}")
    if value.shape != ref.shape:
        raise ValueError(
            f"{where}: expected {name} of shape {tuple(ref.shape)}, got {tuple(value.shape)}"
        )
    return value


def _check_inverse_mass(inv_mass: InverseMass, x: Tensor, where: str) -> None:
    """Shape checks of an inverse mass against the points ``x`` (no value checks: no sync)."""
    if inv_mass is None or isinstance(inv_mass, int | float):
        return
    if isinstance(inv_mass, DenseInverseMass):
        d = x.shape[-1] if x.dim() else 0
        if not isinstance(inv_mass.matrix, Tensor) or inv_mass.matrix.shape != (d, d):
            got = getattr(inv_mass.matrix, "shape", type(inv_mass.matrix).__name__)
            raise ValueError(f"{where}: expected a dense inv_mass of shape ({d}, {d}), got {got}")
        return
    if not isinstance(inv_mass, Tensor):
        raise TypeError(
            f"{where}: expected inv_mass as a tensor, float, DenseInverseMass or None, "
            f"got {type(inv_mass).__name__}"
        )
    try:
        fits = torch.broadcast_shapes(inv_mass.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{where}: expected a diagonal inv_mass broadcasting to the shape {tuple(x.shape)}, "
            f"got {tuple(inv_mass.shape)}"
        )


def apply_inverse_mass(v: Tensor, inv_mass: InverseMass = None) -> Tensor:
    r"""``M^{-1} v`` for a diagonal or dense inverse mass (``v`` itself for ``None``).

    Arguments:
        v: momenta or gradients, ``batch + event``.
        inv_mass: the inverse mass (see the module docstring).

    Returns:
        A tensor of the shape of ``v``.

    Example:
        >>> apply_inverse_mass(torch.ones(2, 2), torch.tensor([1.0, 3.0]))
        tensor([[1., 3.],
                [1., 3.]])
    """
    _check_inverse_mass(inv_mass, v, "apply_inverse_mass")
    if inv_mass is None:
        return v
    if isinstance(inv_mass, DenseInverseMass):
        return v @ inv_mass.matrix.T
    return inv_mass * v


def scale_noise(noise: Tensor, inv_mass: InverseMass = None) -> Tensor:
    r"""``L xi`` with ``L L^T = M^{-1}``: standard normal ``noise`` turned into ``N(0, M^{-1})``.

    Example:
        >>> scale_noise(torch.ones(2), torch.tensor([4.0, 9.0]))
        tensor([2., 3.])
    """
    _check_inverse_mass(inv_mass, noise, "scale_noise")
    if inv_mass is None:
        return noise
    if isinstance(inv_mass, DenseInverseMass):
        return noise @ torch.linalg.cholesky(inv_mass.matrix).T
    return torch.as_tensor(inv_mass, dtype=noise.dtype, device=noise.device).sqrt() * noise


def kinetic_energy(v: Tensor, inv_mass: InverseMass = None, event_dim: int = 1) -> Tensor:
    r"""``K(v) = v^T M^{-1} v / 2`` summed over the event (shape ``batch``).

    With ``inv_mass=None`` it is ``|v|^2 / 2``, the squared norm of a standard
    normal draw halved (the quadratic part of its log density).

    Example:
        >>> float(kinetic_energy(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.5])))
        2.0
    """
    if isinstance(inv_mass, DenseInverseMass):
        return 0.5 * (v * apply_inverse_mass(v, inv_mass)).sum(-1)
    _check_inverse_mass(inv_mass, v, "kinetic_energy")
    sq = v.square() if inv_mass is None else inv_mass * v.square()
    return 0.5 * sum_event(sq, event_dim)


def gaussian_transition_log_prob(
    y: Tensor, mean: Tensor, variance: Tensor | float, inv_mass: InverseMass = None,
    event_dim: int = 1, *, normalized: bool = False,
) -> Tensor:
    r"""``log N(y; mean, variance M^{-1})`` summed over the event.

    .. math::
        \log q(y) = -\frac{1}{2 \sigma^2} (y - m)^T M (y - m)
        - \frac{1}{2} \log \det(2 \pi \sigma^2 M^{-1}),

    where the second term is included only when ``normalized``: it depends on
    the variance and the mass alone, so it cancels in the ratio of a forward and
    a backward kernel with the same ones (Langevin, Euler-Maruyama).

    Arguments:
        y: end points, ``batch + event``.
        mean: the transition means, same shape.
        variance: ``sigma^2 > 0``; a float or a tensor broadcasting to ``y``
            (a scalar with a dense inverse mass).
        inv_mass: the inverse mass (see the module docstring).
        event_dim: event dimensions of ``y`` (1 with a dense inverse mass).
        normalized: include the normalizing constant.

    Returns:
        Tensor of shape ``batch``.

    Example:
        >>> y, m = torch.tensor([1.0, -1.0]), torch.zeros(2)
        >>> ref = torch.distributions.Normal(m, 0.5 ** 0.5).log_prob(y).sum()
        >>> bool(torch.isclose(gaussian_transition_log_prob(y, m, 0.5, normalized=True), ref))
        True
    """
    where = "gaussian_transition_log_prob"
    check_like("mean", mean, y, where)
    _check_inverse_mass(inv_mass, y, where)
    diff = y - mean
    if isinstance(inv_mass, DenseInverseMass):
        if event_dim != 1:
            raise ValueError(f"{where}: a dense inv_mass needs event_dim 1, got {event_dim}")
        tril = torch.linalg.cholesky(inv_mass.matrix)
        white = torch.linalg.solve_triangular(tril, diff.unsqueeze(-1), upper=False).squeeze(-1)
        out = -0.5 * white.square().sum(-1) / variance
        if normalized:
            d = y.shape[-1]
            log_det = 2.0 * tril.diagonal().log().sum() + d * torch.as_tensor(variance).to(y).log()
            out = out - 0.5 * (d * math.log(2 * math.pi) + log_det)
        return out
    cov = variance if inv_mass is None else variance * inv_mass
    out = -0.5 * sum_event(diff.square() / cov, event_dim)
    if normalized:
        full = torch.as_tensor(cov, dtype=y.dtype, device=y.device) * torch.ones_like(y)
        out = out - 0.5 * sum_event((2 * math.pi * full).log(), event_dim)
    return out


class EulerMaruyamaInfo(NamedTuple):
    """The two transition log densities of one Euler-Maruyama step (up to a shared constant).

    Attributes:
        log_controlled: ``log F(y' | y) = log N(y'; a y + delta, v I)``, the step taken.
        log_reference: ``log R(y' | y) = log N(y'; a y, v I)``, the drift-free reference.
    """

    log_controlled: Tensor
    log_reference: Tensor


def euler_maruyama_step(
    y: Tensor, decay: float | Tensor, drift: Tensor, variance: float | Tensor, noise: Tensor
) -> tuple[Tensor, EulerMaruyamaInfo]:
    r"""One Euler-Maruyama step ``y' = a y + delta + sqrt(v) eps`` and its transition densities.

    .. math::
        y' = a\, y + \delta + \sqrt{v}\, \varepsilon, \qquad
        \log F = -\tfrac12 |\varepsilon|^2, \qquad
        \log R = -\tfrac{1}{2v} |y' - a y|^2,

    both without the shared normalizer, so ``log F - log R`` is the step's
    contribution to a path-space density ratio (PIS, DDS).

    Arguments:
        y: current points, ``batch + (D,)``.
        decay: the reference's contraction ``a``.
        drift: the control ``delta``, same shape as ``y``.
        variance: the step variance ``v > 0``.
        noise: standard normal draws ``eps``, same shape as ``y``.

    Returns:
        ``(y', EulerMaruyamaInfo)``.

    Example:
        >>> y, info = euler_maruyama_step(torch.zeros(3, 2), 1.0, torch.ones(3, 2), 0.25,
        ...                               torch.zeros(3, 2))
        >>> [round(v, 3) for v in (info.log_controlled - info.log_reference).tolist()]
        [4.0, 4.0, 4.0]
    """
    where = "euler_maruyama_step"
    check_like("drift", drift, y, where)
    check_like("noise", noise, y, where)
    if isinstance(variance, int | float) and not variance > 0:
        raise ValueError(f"{where}: expected variance > 0, got {variance!r}")
    base = decay * y
    sd = math.sqrt(variance) if isinstance(variance, int | float) else variance.sqrt()
    y_next = base + drift + sd * noise
    log_controlled = -0.5 * noise.square().sum(-1)
    log_reference = gaussian_transition_log_prob(y_next, base, variance)
    return y_next, EulerMaruyamaInfo(log_controlled, log_reference)
