"""Pareto-smoothed importance sampling (PSIS) and importance-sampling ESS.

Log importance weights ``log w = log p(x) - log q(x)`` come from a guide, a
stochastic flow's path weight or any proposal. Draws run along the first axis;
trailing axes are independent batches (e.g. ``(n, *batch_shape)`` from a flow's
``log_prob`` with ``sample_shape=(n,)``). A weight of ``-inf`` (zero weight) is
allowed; ``NaN`` and ``+inf`` are not, and neither is a set (or a batch
column) whose weights are all ``-inf``: no draw has positive weight, so no
estimate exists, and every function here raises a ``ValueError`` naming itself
instead of returning ``NaN``.
"""

from __future__ import annotations

import numpy as np

from pyro_relax.diagnostics._compat import Numbers, as_numpy, psis_smooth

__all__ = [
    "KHAT_GOOD",
    "KHAT_RELIABLE",
    "MIN_IS_DRAWS",
    "MIN_PSIS_DRAWS",
    "check_log_weights",
    "importance_ess",
    "importance_ess_fraction",
    "khat_verdict",
    "psis_expectation",
    "psis_khat",
]

MIN_IS_DRAWS = 10
"""Fewest draws accepted by the importance-sampling ESS functions."""

MIN_PSIS_DRAWS = 25
"""Fewest draws for PSIS: the Pareto fit uses the top ``n/5`` weights and needs at least 5."""


def check_log_weights(log_weights: Numbers, min_draws: int, fn: str) -> np.ndarray:
    """Check log importance weights and return them as a float64 array ``(n, *batch)``.

    Arguments:
        log_weights: the log weights, draws along axis 0; finite or ``-inf``.
        min_draws: the fewest draws the caller needs.
        fn: the caller, named in every message.

    Raises:
        TypeError: for booleans or values that are not numbers.
        ValueError: for a scalar, too few draws, an empty batch, NaN or ``+inf``
            entries, or a batch column whose weights are all ``-inf``.

    Example:
        >>> check_log_weights([0.0, -1.0, -float("inf")], 2, "demo").shape
        (3,)
    """
    raw = as_numpy(log_weights, f"{fn}: log_weights")
    if raw.dtype.kind == "b":
        raise TypeError(f"{fn}: expected real log weights, got booleans")
    lw = raw.astype(np.float64)
    if lw.ndim == 0:
        raise ValueError(
            f"{fn}: expected log_weights of shape (n, *batch), draws first, got a scalar"
        )
    if lw.shape[0] < min_draws:
        raise ValueError(
            f"{fn}: expected at least {min_draws} draws along axis 0 of log_weights, "
            f"got shape {lw.shape}"
        )
    if lw.size == 0:
        raise ValueError(f"{fn}: expected a non-empty batch of log_weights, got shape {lw.shape}")
    n_nan, n_pos = int(np.isnan(lw).sum()), int(np.isposinf(lw).sum())
    if n_nan or n_pos:
        raise ValueError(
            f"{fn}: expected log weights finite or -inf (zero weight), got {n_nan} NaN and "
            f"{n_pos} +inf entries"
        )
    dead = np.isneginf(lw).all(axis=0)
    if dead.any():
        where = "" if lw.ndim == 1 else f" in batch column(s) {np.argwhere(dead).tolist()[:5]}"
        raise ValueError(f"{fn}: all log weights are -inf{where}: no draw has positive weight")
    return lw


def _scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if x.ndim == 0 else x


def _smooth_column(lw: np.ndarray) -> tuple[np.ndarray, float]:
    finite = lw[np.isfinite(lw)]
    if finite.max() == finite.min():  # equal weights: no tail at all, nothing to smooth
        out = np.where(np.isfinite(lw), -np.log(finite.size), -np.inf)
        return out, float("-inf")
    return psis_smooth(lw)


def psis_khat(log_weights: Numbers) -> tuple[np.ndarray, float | np.ndarray]:
    """Pareto-smooth log importance weights and estimate the tail shape k-hat.

    The largest weights are replaced by quantiles of a generalized Pareto fit
    (ArviZ's PSIS); its shape ``k`` says how many moments of the weights exist
    (``1/k``) and so whether importance sampling can be trusted (see
    :func:`khat_verdict`). Equal weights have no tail and give ``k = -inf``.

    Arguments:
        log_weights: Log importance weights, shape ``(n, *batch)`` with ``n >= 25``
            draws first; a tensor (any device) or array.

    Returns:
        ``(smoothed, khat)``: smoothed log weights, shape ``(n, *batch)``, normalized so
        that ``exp(smoothed)`` sums to one over the draws; ``khat`` a float for 1-D input,
        else an array of shape ``batch``.

    Raises:
        TypeError: if the log weights are not real numbers.
        ValueError: for too few draws, NaN or ``+inf`` entries, or all weights ``-inf``
            (in any batch column).

    References:
        Vehtari, Simpson, Gelman, Yao, Gabry (2024). Pareto smoothed importance
        sampling. JMLR 25(72). arXiv 1507.02646.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = 2.0 * torch.randn(1000)  # proposal N(0, 2), target N(0, 1)
        >>> log_w = -0.5 * x**2 + 0.5 * (x / 2) ** 2
        >>> smoothed, khat = psis_khat(log_w)
        >>> smoothed.shape, khat < 0.5
        ((1000,), True)
    """
    lw = check_log_weights(log_weights, MIN_PSIS_DRAWS, "psis_khat")
    cols = lw.reshape(lw.shape[0], -1)
    out = np.empty_like(cols)
    khat = np.empty(cols.shape[1])
    for j in range(cols.shape[1]):
        out[:, j], khat[j] = _smooth_column(cols[:, j])
    return out.reshape(lw.shape), _scalar_or_array(khat.reshape(lw.shape[1:]))


KHAT_GOOD = 0.5
"""Below this k-hat the importance weights have finite variance (Yao et al. 2018)."""
KHAT_RELIABLE = 0.7
"""At or above this k-hat PSIS estimates may be far off; below it they converge."""


def khat_verdict(k: float) -> str:
    """Classify a Pareto k-hat by the thresholds of Yao et al. (2018).

    Arguments:
        k: A k-hat value (``inf`` counts as unreliable, ``-inf`` as good).

    Returns:
        ``"good"`` for ``k < 0.5`` (the weights have finite variance),
        ``"acceptable"`` for ``0.5 <= k < 0.7`` (PSIS still converges, slowly),
        ``"unreliable"`` for ``k >= 0.7`` (estimates may be far off).

    References:
        Yao, Vehtari, Simpson, Gelman (2018). Yes, but did it work?: Evaluating
        variational inference. ICML. arXiv 1802.02538.

    Example:
        >>> khat_verdict(0.3), khat_verdict(0.6), khat_verdict(0.9)
        ('good', 'acceptable', 'unreliable')
    """
    if isinstance(k, bool):
        raise TypeError("khat_verdict: expected a real number k, got bool")
    arr = as_numpy(k, "khat_verdict: k")
    if arr.ndim != 0:
        raise TypeError(f"khat_verdict: expected a scalar k, got shape {arr.shape}")
    k = float(arr)
    if np.isnan(k):
        raise ValueError("khat_verdict: expected a k-hat value, got NaN")
    if k < KHAT_GOOD:
        return "good"
    if k < KHAT_RELIABLE:
        return "acceptable"
    return "unreliable"


def _kish_ess(lw: np.ndarray) -> np.ndarray:
    # Shift by the largest log weight: the weights then lie in [0, 1] with one equal to 1,
    # so both sums lie in [1, n] and nothing can overflow or underflow to zero.
    w = np.exp(lw - lw.max(axis=0))
    return w.sum(axis=0) ** 2 / (w * w).sum(axis=0)


def importance_ess(log_weights: Numbers) -> float | np.ndarray:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of importance weights.

    Computed from the log weights after subtracting the largest one, so weights of any
    scale work. Equal weights give ``n``; one weight dominating gives ``1``.

    Arguments:
        log_weights: Log importance weights, shape ``(n, *batch)`` with ``n >= 10``.

    Returns:
        The ESS in ``[1, n]``: a float for 1-D input, else an array of shape ``batch``.

    Raises:
        TypeError: if the log weights are not real numbers.
        ValueError: for too few draws, NaN or ``+inf`` entries, or all weights ``-inf``
            (in any batch column).

    References:
        Kish (1965). Survey Sampling. Wiley.

    Example:
        >>> import torch
        >>> importance_ess(torch.zeros(100))
        100.0
    """
    lw = check_log_weights(log_weights, MIN_IS_DRAWS, "importance_ess")
    return _scalar_or_array(_kish_ess(lw))


def importance_ess_fraction(log_weights: Numbers) -> float | np.ndarray:
    """Kish ESS divided by the number of draws, in ``(0, 1]``.

    Arguments:
        log_weights: Log importance weights, shape ``(n, *batch)`` with ``n >= 10``.

    Returns:
        ``importance_ess(log_weights) / n``: a float for 1-D input, else an array.

    Raises:
        TypeError: if the log weights are not real numbers.
        ValueError: for too few draws, NaN or ``+inf`` entries, or all weights ``-inf``
            (in any batch column).

    Example:
        >>> import numpy as np
        >>> importance_ess_fraction(np.r_[0.0, np.full(19, -np.inf)])
        0.05
    """
    lw = check_log_weights(log_weights, MIN_IS_DRAWS, "importance_ess_fraction")
    return _scalar_or_array(_kish_ess(lw) / lw.shape[0])


def psis_expectation(values: Numbers, log_weights: Numbers) -> np.ndarray:
    """Self-normalized PSIS estimate of ``E_p[values]`` from draws of the proposal.

    Arguments:
        values: Function values at the draws, shape ``(n, *batch, *event)``.
        log_weights: Log importance weights, shape ``(n, *batch)``, ``n >= 25``.

    Returns:
        ``sum_i w_i values_i`` with PSIS-smoothed weights normalized to one, a float64
        array of shape ``(*batch, *event)``.

    Raises:
        TypeError: if the log weights are not real numbers.
        ValueError: for too few draws, NaN or ``+inf`` entries, or all weights ``-inf``
            (in any batch column), or
            values of the wrong shape or not finite.

    References:
        Vehtari, Simpson, Gelman, Yao, Gabry (2024). Pareto smoothed importance
        sampling. JMLR 25(72).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = 2.0 * torch.randn(4000)
        >>> log_w = -0.5 * x**2 + 0.5 * (x / 2) ** 2
        >>> m2 = psis_expectation(x**2, log_w)  # E[x^2] = 1 under N(0, 1)
        >>> bool(abs(m2 - 1.0) < 0.15)
        True
    """
    lw = check_log_weights(log_weights, MIN_PSIS_DRAWS, "psis_expectation")
    smoothed, _ = psis_khat(lw)
    vals = as_numpy(values, "psis_expectation: values").astype(np.float64)
    if vals.shape[: smoothed.ndim] != smoothed.shape:
        raise ValueError(
            f"psis_expectation: expected values of shape (n, *batch, *event) = "
            f"{smoothed.shape} + event, got {vals.shape}"
        )
    if not np.isfinite(vals).all():
        n_bad = int((~np.isfinite(vals)).sum())
        raise ValueError(f"psis_expectation: expected finite values, got {n_bad} NaN or inf")
    w = np.exp(smoothed).reshape(smoothed.shape + (1,) * (vals.ndim - smoothed.ndim))
    return (w * vals).sum(axis=0)
