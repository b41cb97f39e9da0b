r"""Mode coverage and weighted-sample summaries for targets with known modes (pure functions).

For a multimodal target the ESS alone can look fine on a sampler that found
one mode. These functions ask which modes the weighted samples reach:

* :func:`mode_coverage`: the fraction of modes holding at least one sample
  whose self-normalized weight is not negligible, given an assignment of
  samples to modes (:func:`nearest_mode` for Gaussian mixtures,
  :func:`well_sides` for the many-well density);
* :func:`forward_kl`: ``KL(p || q)`` (or the test log-likelihood) on exact
  target samples, which is large when ``q`` misses a mode;
* :func:`weighted_summary`: ESS, ``log Z`` with its standard error and, given
  the true value, the absolute error.
"""

from __future__ import annotations

__all__ = ["forward_kl", "mode_coverage", "nearest_mode", "weighted_summary", "well_sides"]

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pyro_relax.core.checks import check_size


def _tensor(value: object, name: str, owner: str) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        got = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"{owner}: expected a floating tensor {name}, got {got}")
    return value


def nearest_mode(x: Tensor, locs: Tensor, radius: float | None = None) -> Tensor:
    """The index of the nearest mode of each sample (``-1`` beyond ``radius``).

    Arguments:
        x: samples ``(n, d)``.
        locs: mode locations ``(k, d)``.
        radius: the largest distance at which a sample still belongs to a mode.

    Returns:
        A long tensor ``(n,)``.

    Example:
        >>> import torch
        >>> nearest_mode(torch.tensor([[0.1, 0.0], [5.0, 5.0]]), torch.zeros(1, 2), 1.0).tolist()
        [0, -1]
    """
    x = _tensor(x, "x", "nearest_mode")
    locs = _tensor(locs, "locs", "nearest_mode")
    if x.dim() != 2 or locs.dim() != 2 or x.shape[1] != locs.shape[1]:
        raise ValueError(
            f"nearest_mode: expected x (n, d) and locs (k, d), got {tuple(x.shape)} and "
            f"{tuple(locs.shape)}"
        )
    dist, idx = torch.cdist(x, locs.to(x)).min(-1)
    if radius is not None:
        idx = torch.where(dist <= radius, idx, torch.full_like(idx, -1))
    return idx


def well_sides(x: Tensor) -> Tensor:
    """For the many-well density: which side of every double well each sample is on.

    Coordinates pair up as ``(x_1, x_2), (x_3, x_4), ...`` with the double-well
    coordinate first (:class:`~pyro_relax.targets.ManyWell`). Well ``j`` has two
    one-well modes, ``2 j`` (``x_{2j+1} < 0``) and ``2 j + 1`` (``> 0``); the
    result ``(n, d / 2)`` holds those mode indices, so :func:`mode_coverage`
    counts the ``d`` one-well modes (the ``2^(d/2)`` joint modes are far more
    than any sample size).

    Example:
        >>> import torch
        >>> well_sides(torch.tensor([[-1.0, 0.0, 2.0, 0.0]])).tolist()
        [[0, 3]]
    """
    x = _tensor(x, "x", "well_sides")
    if x.dim() != 2 or x.shape[1] % 2:
        raise ValueError(f"well_sides: expected x of shape (n, even d), got {tuple(x.shape)}")
    first = x[:, 0::2]
    j = torch.arange(first.shape[1], device=x.device)
    return 2 * j + (first > 0).long()


def mode_coverage(
    modes: Tensor, log_w: Tensor, n_modes: int, min_relative_weight: float = 0.01
) -> float:
    """The fraction of ``n_modes`` modes holding at least one non-negligibly weighted sample.

    A sample counts when its self-normalized weight is at least
    ``min_relative_weight / n`` (a hundredth of the average by default).

    Arguments:
        modes: mode index of each sample ``(n,)`` or ``(n, m)`` (several per sample,
            as from :func:`well_sides`); ``-1``: none.
        log_w: log weights ``(n,)``; NaN and ``+inf`` are refused, ``-inf`` is weight 0.
        n_modes: the number of modes.
        min_relative_weight: the threshold, relative to the average weight.

    Returns:
        A float in ``[0, 1]``.

    Example:
        >>> import torch
        >>> mode_coverage(torch.tensor([0, 0, 1]), torch.zeros(3), n_modes=4)
        0.5
    """
    log_w = _tensor(log_w, "log_w", "mode_coverage")
    if not isinstance(modes, Tensor) or modes.dtype != torch.long:
        raise TypeError("mode_coverage: expected a long tensor of mode indices")
    if log_w.dim() != 1 or modes.shape[:1] != log_w.shape or modes.dim() > 2:
        raise ValueError(
            f"mode_coverage: expected modes (n,) or (n, m) and log_w (n,), got "
            f"{tuple(modes.shape)} and {tuple(log_w.shape)}"
        )
    check_size(n_modes, "n_modes", "mode_coverage")
    if bool(torch.isnan(log_w).any() | (log_w == math.inf).any()):
        raise ValueError("mode_coverage: expected log weights without NaN or +inf")
    if not bool(torch.isfinite(log_w).any()):
        return 0.0
    p = torch.softmax(log_w, 0)
    heavy = p >= min_relative_weight / log_w.shape[0]
    picked = modes[heavy].reshape(-1)
    picked = picked[(picked >= 0) & (picked < n_modes)]
    return picked.unique().numel() / int(n_modes)


def forward_kl(
    log_q: Callable[[Tensor], Tensor],
    samples: Tensor,
    log_p: Callable[[Tensor], Tensor] | None = None,
    log_Z: float = 0.0,
) -> dict[str, float]:
    """Test log-likelihood of exact target samples under ``q``, and ``KL(p || q)`` if ``log_p``.

    Arguments:
        log_q: the model's log density (e.g. a flow's ``log_prob``).
        samples: exact target samples ``(n, d)``.
        log_p: the unnormalized target log density (then the KL is reported).
        log_Z: the target's log normalizer.

    Returns:
        ``{"test_ll", "test_ll_se"}`` plus ``{"forward_kl", "forward_kl_se"}`` with ``log_p``
        (means over the samples and their standard errors).

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob as f
        >>> forward_kl(f, torch.randn(100, 2), f, log_Z=0.0)["forward_kl"]
        0.0
    """
    samples = _tensor(samples, "samples", "forward_kl")
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise ValueError(f"forward_kl: expected samples (n >= 2, d), got {tuple(samples.shape)}")
    with torch.no_grad():
        lq = log_q(samples)
        out = {"test_ll": float(lq.mean()), "test_ll_se": float(lq.std() / math.sqrt(len(lq)))}
        if log_p is not None:
            diff = log_p(samples) - log_Z - lq
            out["forward_kl"] = float(diff.mean())
            out["forward_kl_se"] = float(diff.std() / math.sqrt(len(diff)))
    if not all(math.isfinite(v) for v in out.values()):
        raise ValueError(f"forward_kl: expected finite log densities at the samples, got {out}")
    return out


def weighted_summary(log_w: Tensor, log_Z: float | None = None) -> dict[str, float]:
    """ESS (Kish, relative), ``log Z`` and its delta-method standard error, ``|log Z error|``.

    Non-finite weights (NaN, inf: rejected chains) are dropped and counted.

    Example:
        >>> import torch
        >>> weighted_summary(torch.zeros(4), log_Z=0.0)["abs_log_z_err"]
        0.0
    """
    log_w = _tensor(log_w, "log_w", "weighted_summary")
    if log_w.dim() != 1 or log_w.shape[0] < 2:
        raise ValueError(f"weighted_summary: expected log_w of shape (n >= 2,), got {log_w.shape}")
    ok = ~torch.isnan(log_w) & (log_w < math.inf)
    n, kept = log_w.shape[0], log_w[ok]
    if not bool(torch.isfinite(kept).any()):
        raise ValueError("weighted_summary: no sample has a finite weight")
    log_mean = torch.logsumexp(kept, 0) - math.log(n)
    rel = torch.exp(kept - log_mean)
    se = float(torch.cat([rel, rel.new_zeros(n - kept.numel())]).std() / math.sqrt(n))
    ess = float(torch.exp(2 * torch.logsumexp(kept, 0) - torch.logsumexp(2 * kept, 0))) / n
    out = {"ess": ess, "log_z": float(log_mean), "log_z_se": se, "rejected": n - kept.numel()}
    if log_Z is not None:
        out["abs_log_z_err"] = abs(float(log_mean) - float(log_Z))
    return out
