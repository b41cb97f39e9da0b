r"""The losses of FAB (:class:`~pyro_relax.train.fab.FABTrainer`): pure functions of log densities.

* :func:`fab_loss`: without a buffer, ``-sum_i softmax(log w)_i log q(x_i)``;
* :func:`buffer_loss`: with the prioritized buffer, ``-mean(r_i log q(x_i))`` with
  ``r_i = min(q_old(x_i) / q(x_i), r_max)``;
* :func:`relative_ess`: the relative effective sample size of AIS weights.
"""

from __future__ import annotations

__all__ = ["buffer_loss", "fab_loss", "relative_ess"]

import torch
from torch import Tensor


def fab_loss(log_q: Tensor, log_w: Tensor) -> Tensor:
    """``-sum_i softmax(log w)_i log q(x_i)``: FAB's loss without a buffer (NaN entries dropped).

    Arguments:
        log_q: ``log q(x_i)`` under the current flow (differentiable), ``(n,)``.
        log_w: AIS log weights towards ``p^2 / q`` (no gradient), ``(n,)``.

    Returns:
        A 0-dim loss.

    Raises:
        ValueError: if the shapes differ or no entry has a finite weight.

    Example:
        >>> import torch
        >>> float(fab_loss(torch.tensor([-1.0, -3.0]), torch.tensor([0.0, 0.0])))
        2.0
    """
    if not isinstance(log_q, Tensor) or not isinstance(log_w, Tensor) or log_q.shape != log_w.shape:
        raise ValueError("fab_loss: expected log_q and log_w tensors of the same shape (n,)")
    keep = torch.isfinite(log_w) & torch.isfinite(log_q)
    if not bool(keep.any()):
        raise ValueError("fab_loss: expected at least one finite weight and log q, got none")
    p = torch.softmax(log_w.detach()[keep], 0)
    return -(p * log_q[keep]).sum()


def buffer_loss(log_q: Tensor, log_q_old: Tensor, max_weight_ratio: float) -> Tensor:
    """``-mean_i(r_i log q(x_i))`` with ``r_i = min(q_old / q, max_weight_ratio)``.

    Entries whose ``log q`` is not finite get weight 0 (and do not count in the mean).

    Example:
        >>> float(buffer_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -2.0]), 10.0))
        1.5
    """
    finite = torch.isfinite(log_q.detach())
    ratio = torch.exp(log_q_old - log_q.detach()).clamp(max=max_weight_ratio)
    ratio = torch.where(finite, ratio, torch.zeros_like(ratio))
    safe = torch.where(finite, log_q, torch.zeros_like(log_q))
    return -(ratio * safe).sum() / finite.sum().clamp(min=1)


def relative_ess(log_w: Tensor, n: int) -> float:
    """The importance-sampling ESS of the finite ``log_w`` divided by ``n`` (0 if none is finite).

    Example:
        >>> relative_ess(torch.zeros(4), 4)
        1.0
    """
    finite = log_w[torch.isfinite(log_w)]
    if finite.numel() == 0:
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(finite, 0) - torch.logsumexp(2 * finite, 0))) / n
