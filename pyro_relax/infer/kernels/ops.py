"""Pure functions for the MCMC kernels: MALA proposals, Metropolis corrections, packing.

Everything here acts on flat tensors whose last dimension is the event (the
unconstrained latent vector) and whose leading dimensions are batch dimensions
of any rank. Nothing synchronizes with the device: decisions are tensors
(``torch.where``), never Python ``if`` on tensor values.
"""

from __future__ import annotations

__all__ = [
    "acceptance_probability",
    "flatten_params",
    "imh_log_accept_ratio",
    "mala_log_accept_ratio",
    "mala_log_transition",
    "mala_propose",
    "metropolis_accept",
    "unflatten_params",
]

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def _check_step_size(step_size: float | Tensor, where: str) -> None:
    if isinstance(step_size, Tensor):
        return  # a tensor step size is checked by its owner (no host sync here)
    if isinstance(step_size, bool) or not isinstance(step_size, int | float):
        raise TypeError(f"{where}: expected a float step size, got {type(step_size).__name__}")
    if not math.isfinite(step_size) or step_size <= 0:
        raise ValueError(f"{where}: expected a finite step size > 0, got {step_size!r}")


def _check_like(name: str, value: Tensor, ref: Tensor, where: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: expected {name} to be a tensor, got {type(value).__name__}")
    if value.shape != ref.shape:
        raise ValueError(
            f"{where}: expected {name} of shape {tuple(ref.shape)}, got {tuple(value.shape)}"
        )


def _check_inv_mass(inv_mass: Tensor, x: Tensor, where: str) -> None:
    if not isinstance(inv_mass, Tensor):
        raise TypeError(f"{where}: expected inv_mass to be a tensor, got {type(inv_mass).__name__}")
    if inv_mass.dim() != 1 or inv_mass.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"{where}: expected a diagonal inv_mass of shape ({x.shape[-1]},), "
            f"got {tuple(inv_mass.shape)}"
        )


def _drift(x: Tensor, grad_u: Tensor, step_size: float | Tensor, inv_mass: Tensor) -> Tensor:
    return x - step_size * inv_mass * grad_u


def mala_propose(
    x: Tensor, grad_u: Tensor, step_size: float | Tensor, inv_mass: Tensor, noise: Tensor
) -> Tensor:
    r"""Preconditioned Langevin proposal in the unconstrained space.

    .. math::
        y = x - \epsilon M^{-1} \nabla U(x) + \sqrt{2 \epsilon M^{-1}}\, \xi,
        \qquad \xi \sim N(0, I),

    with potential ``U = -log pi`` and a diagonal inverse mass ``M^{-1}``.

    Arguments:
        x: current points, shape ``batch_shape + (D,)``.
        grad_u: ``grad U(x)``, same shape.
        step_size: ``epsilon > 0``.
        inv_mass: diagonal of ``M^{-1}``, shape ``(D,)``.
        noise: standard normal draws ``xi``, same shape as ``x``.

    Returns:
        The proposal ``y``, same shape as ``x``.

    Example:
        >>> x = torch.zeros(3, 2)
        >>> mala_propose(x, x, 0.5, torch.ones(2), torch.ones(3, 2)).shape
        torch.Size([3, 2])
    """
    _check_step_size(step_size, "mala_propose")
    _check_like("grad_u", grad_u, x, "mala_propose")
    _check_like("noise", noise, x, "mala_propose")
    _check_inv_mass(inv_mass, x, "mala_propose")
    return _drift(x, grad_u, step_size, inv_mass) + (2.0 * step_size * inv_mass).sqrt() * noise


def mala_log_transition(
    y: Tensor, x: Tensor, grad_u_x: Tensor, step_size: float | Tensor, inv_mass: Tensor
) -> Tensor:
    r"""``log q(y | x)`` of the Langevin proposal, up to a constant that cancels in MH ratios.

    .. math::
        \log q(y \mid x) = -\frac{1}{4\epsilon}
        \big\| y - x + \epsilon M^{-1} \nabla U(x) \big\|^2_{M} + \text{const}.

    Arguments:
        y: end points, shape ``batch_shape + (D,)``.
        x: start points, same shape.
        grad_u_x: ``grad U(x)``, same shape.
        step_size: ``epsilon > 0``.
        inv_mass: diagonal of ``M^{-1}``, shape ``(D,)``.

    Returns:
        Tensor of shape ``batch_shape``.

    Example:
        >>> x = torch.zeros(2)
        >>> float(mala_log_transition(x, x, x, 0.1, torch.ones(2)))
        -0.0
    """
    _check_step_size(step_size, "mala_log_transition")
    _check_like("x", x, y, "mala_log_transition")
    _check_like("grad_u_x", grad_u_x, y, "mala_log_transition")
    _check_inv_mass(inv_mass, y, "mala_log_transition")
    diff = y - _drift(x, grad_u_x, step_size, inv_mass)
    return -(diff.square() / inv_mass).sum(-1) / (4.0 * step_size)


def mala_log_accept_ratio(
    x: Tensor,
    y: Tensor,
    u_x: Tensor,
    u_y: Tensor,
    grad_u_x: Tensor,
    grad_u_y: Tensor,
    step_size: float | Tensor,
    inv_mass: Tensor,
) -> Tensor:
    r"""Log Metropolis-Hastings ratio of a MALA move ``x -> y``.

    .. math::
        \log r = U(x) - U(y) + \log q(x \mid y) - \log q(y \mid x).

    A non-finite potential or gradient at either end gives ``-inf`` (the move
    is rejected), so a NaN from the model never enters the chain.

    Arguments:
        x: current points, shape ``batch_shape + (D,)``.
        y: proposals, same shape.
        u_x: ``U(x)``, shape ``batch_shape``.
        u_y: ``U(y)``, shape ``batch_shape``.
        grad_u_x: ``grad U(x)``, same shape as ``x``.
        grad_u_y: ``grad U(y)``, same shape as ``x``.
        step_size: ``epsilon > 0``.
        inv_mass: diagonal of ``M^{-1}``, shape ``(D,)``.

    Returns:
        Tensor of shape ``batch_shape``; ``-inf`` where the move is impossible.

    References:
        Roberts and Tweedie. Exponential convergence of Langevin distributions
        and their discrete approximations. Bernoulli, 1996.

    Example:
        >>> x, y = torch.zeros(2), torch.ones(2)
        >>> u = lambda z: 0.5 * z.square().sum(-1)
        >>> r = mala_log_accept_ratio(x, y, u(x), u(y), x, y, 0.5, torch.ones(2))
        >>> r.shape
        torch.Size([])
    """
    where = "mala_log_accept_ratio"
    _check_like("y", y, x, where)
    _check_like("grad_u_x", grad_u_x, x, where)
    _check_like("grad_u_y", grad_u_y, x, where)
    _check_like("u_x", u_x, x[..., 0], where)
    _check_like("u_y", u_y, x[..., 0], where)
    forward = mala_log_transition(y, x, grad_u_x, step_size, inv_mass)
    backward = mala_log_transition(x, y, grad_u_y, step_size, inv_mass)
    log_r = u_x - u_y + backward - forward
    finite = (
        torch.isfinite(u_x)
        & torch.isfinite(u_y)
        & torch.isfinite(grad_u_x).all(-1)
        & torch.isfinite(grad_u_y).all(-1)
        & ~torch.isnan(log_r)
    )
    return torch.where(finite, log_r, torch.full_like(log_r, -math.inf))


def imh_log_accept_ratio(log_w_proposal: Tensor, log_w_current: Tensor) -> Tensor:
    r"""Log acceptance ratio of independence Metropolis-Hastings, ``log w' - log w``.

    With importance weights ``w = pi(z) / q(z)`` the IMH ratio
    ``pi(z') q(z) / (pi(z) q(z'))`` equals ``w' / w``. A NaN proposal weight
    gives ``-inf`` (rejected); a current weight of ``-inf`` (an arbitrary
    starting point) makes any finite proposal be accepted.

    Arguments:
        log_w_proposal: log weights of the proposals, any shape.
        log_w_current: log weights of the current states, same shape.

    Returns:
        Tensor of the same shape.

    Example:
        >>> imh_log_accept_ratio(torch.tensor([0.0, float("nan")]), torch.zeros(2))
        tensor([0., -inf])
    """
    _check_like("log_w_current", log_w_current, log_w_proposal, "imh_log_accept_ratio")
    log_r = log_w_proposal - log_w_current
    bad = torch.isnan(log_r) | torch.isnan(log_w_proposal) | (log_w_proposal == math.inf)
    return torch.where(bad, torch.full_like(log_r, -math.inf), log_r)


def metropolis_accept(log_ratio: Tensor, uniform: Tensor) -> Tensor:
    """Accept where ``log u < log r``; NaN compares false, so it is rejected.

    Arguments:
        log_ratio: log acceptance ratios, any shape.
        uniform: ``U(0, 1)`` draws, same shape.

    Returns:
        Boolean tensor of the same shape.

    Example:
        >>> metropolis_accept(torch.tensor([0.0, -math.inf]), torch.full((2,), 0.5))
        tensor([ True, False])
    """
    _check_like("uniform", uniform, log_ratio, "metropolis_accept")
    return uniform.log() < log_ratio


def acceptance_probability(log_ratio: Tensor) -> Tensor:
    """``min(1, exp(log r))``, with 0 for NaN.

    Arguments:
        log_ratio: log acceptance ratios, any shape.

    Returns:
        Tensor of the same shape with values in ``[0, 1]``.

    Example:
        >>> acceptance_probability(torch.tensor([1.0, 0.0, float("nan")]))
        tensor([1., 1., 0.])
    """
    if not isinstance(log_ratio, Tensor):
        raise TypeError(
            f"acceptance_probability: expected a tensor, got {type(log_ratio).__name__}"
        )
    prob = log_ratio.clamp(max=0.0).exp()
    return torch.nan_to_num(prob, nan=0.0)


def flatten_params(params: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    """Concatenate the sites ``names`` of ``params`` (each flattened) into one vector.

    Arguments:
        params: per-site unconstrained values.
        names: site order.

    Returns:
        Tensor of shape ``(sum of numel,)``.

    Example:
        >>> flatten_params({"a": torch.zeros(2, 2), "b": torch.ones(())}, ["a", "b"]).shape
        torch.Size([5])
    """
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"flatten_params: expected sites {list(names)}, missing {missing}")
    if not names:
        raise ValueError("flatten_params: expected at least one site, got none")
    return torch.cat([params[n].reshape(-1) for n in names])


def unflatten_params(flat: Tensor, shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """Split a flat vector (last dimension) into sites of the given shapes, in the given order.

    Leading batch dimensions of ``flat`` are kept in front of each site's shape.

    Arguments:
        flat: tensor of shape ``batch_shape + (D,)``, ``D`` the total number of elements.
        shapes: site name to its (unbatched) shape, in packing order.

    Returns:
        Dict of tensors of shape ``batch_shape + shape``.

    Example:
        >>> out = unflatten_params(torch.zeros(4, 5), {"a": torch.Size([2, 2]), "b": torch.Size()})
        >>> out["a"].shape, out["b"].shape
        (torch.Size([4, 2, 2]), torch.Size([4]))
    """
    total = sum(math.prod(s) for s in shapes.values())
    if flat.dim() < 1 or flat.shape[-1] != total:
        raise ValueError(
            f"unflatten_params: expected a last dimension of size {total}, "
            f"got shape {tuple(flat.shape)}"
        )
    batch = flat.shape[:-1]
    out: dict[str, Tensor] = {}
    pos = 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = flat[..., pos : pos + size].reshape(batch + tuple(shape))
        pos += size
    return out
