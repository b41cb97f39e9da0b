"""Divergences of vector fields: exact by autograd, and Hutchinson's trace estimator."""

from __future__ import annotations

__all__ = ["exact_divergence", "hutchinson_divergence"]

from collections.abc import Callable

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int


def _field_at(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, fn(x), zeros)`` with ``x`` requiring grad, ``fn(x)`` checked to keep its shape.

    Call it under ``torch.enable_grad()``; the zeros (shape ``x.shape[:-1]``)
    start the divergence sum.
    """
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    out = fn(x)
    if out.shape != x.shape:
        raise ValueError(
            f"divergence: expected fn(x) of shape {tuple(x.shape)}, got {tuple(out.shape)}"
        )
    return x, out, x.new_zeros(x.shape[:-1])


def exact_divergence(
    fn: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool | None = None
) -> tuple[Tensor, Tensor]:
    """``fn(x)`` and its divergence ``sum_i d fn_i / d x_i``, by ``dim`` backward passes.

    Arguments:
        fn: a map ``batch_shape + (d,) -> batch_shape + (d,)`` acting per batch element.
        x: the point, of shape ``batch_shape + (d,)``.
        create_graph: keep the graph for gradients of ``fn(x)`` and of the divergence
            (default: whether grad mode is on); without it both come back detached.

    Returns:
        ``(fn(x), div)`` with ``div`` of shape ``batch_shape``.

    Example:
        >>> import torch
        >>> v, div = exact_divergence(lambda x: 3 * x, torch.randn(4, 2))
        >>> div
        tensor([6., 6., 6., 6.])
    """
    create_graph = torch.is_grad_enabled() if create_graph is None else create_graph
    with torch.enable_grad():
        x, out, div = _field_at(fn, x)
        for i in range(x.shape[-1]):
            (g,) = torch.autograd.grad(
                out[..., i].sum(), x, create_graph=create_graph, retain_graph=True
            )
            div = div + g[..., i]
    return (out, div) if create_graph else (out.detach(), div.detach())


def hutchinson_divergence(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    num_probes: int = 1,
    noise: str = "rademacher",
    probes: Tensor | None = None,
    create_graph: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """``fn(x)`` and Hutchinson's unbiased estimate ``E[eps^T (d fn / dx) eps]`` of its divergence.

    Arguments:
        fn: a map ``batch_shape + (d,) -> batch_shape + (d,)``.
        x: the point.
        num_probes: probes averaged per batch element.
        noise: ``"rademacher"`` (lower variance) or ``"gaussian"``.
        probes: fixed probes of shape ``(num_probes,) + x.shape`` (drawn if None).
        create_graph: keep the graph (default: whether grad mode is on); without it
            both outputs come back detached.

    Returns:
        ``(fn(x), div_estimate)``.

    References:
        Hutchinson, *A stochastic estimator of the trace of the influence matrix
        for Laplacian smoothing splines*, 1990; Grathwohl et al., FFJORD, 2019.

    Example:
        >>> import torch
        >>> _, d = hutchinson_divergence(lambda x: 2 * x, torch.randn(3, 4))
        >>> d
        tensor([8., 8., 8.])
    """
    check_int(num_probes, "num_probes", "hutchinson_divergence", minimum=1)
    if noise not in ("rademacher", "gaussian"):
        raise ValueError(
            f"hutchinson_divergence: expected noise 'rademacher' or 'gaussian', got {noise!r}"
        )
    create_graph = torch.is_grad_enabled() if create_graph is None else create_graph
    if probes is not None and probes.shape[1:] != x.shape:
        raise ValueError(
            f"hutchinson_divergence: expected probes of shape (k,) + {tuple(x.shape)}, "
            f"got {tuple(probes.shape)}"
        )
    if probes is None:
        probes = torch.randn((num_probes,) + x.shape, device=x.device, dtype=x.dtype)
        if noise == "rademacher":
            probes = probes.sign()
    with torch.enable_grad():
        x, out, div = _field_at(fn, x)
        for k in range(probes.shape[0]):
            (g,) = torch.autograd.grad(
                out, x, probes[k], create_graph=create_graph, retain_graph=True
            )
            div = div + (g * probes[k]).sum(-1)
    div = div / probes.shape[0]
    return (out, div) if create_graph else (out.detach(), div.detach())
