"""Tables of posterior summaries, with errors against reference draws."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from pyro_relax.diagnostics._compat import ArvizData, Numbers, import_arviz
from pyro_relax.diagnostics.convert import to_inference_data
from pyro_relax.diagnostics.psis import (
    MIN_PSIS_DRAWS,
    check_log_weights,
    importance_ess,
    importance_ess_fraction,
    khat_verdict,
    psis_khat,
)

__all__ = ["SUMMARY_COLUMNS", "summarize", "weighted_report"]

SUMMARY_COLUMNS = ("mean", "sd", "ess_bulk", "ess_tail", "r_hat")
"""Columns :func:`summarize` always returns (before any reference columns)."""


def _event_shapes(data: ArvizData) -> dict[str, tuple[int, ...]]:
    posterior = data["posterior"]
    return {str(name): tuple(posterior[name].shape[2:]) for name in posterior.data_vars}


def _az_summary(data: ArvizData, kind: str) -> pd.DataFrame:
    return import_arviz().summary(data, kind=kind, round_to="none")


def summarize(
    idata_or_samples: ArvizData | Mapping[str, Numbers],
    reference: Mapping[str, Numbers] | None = None,
    *,
    chains: int = 1,
) -> pd.DataFrame:
    """Mean, sd, bulk and tail ESS and R-hat of every scalar component, via ``az.summary``.

    The table is unweighted: for importance-weighted draws, resample first or use
    :func:`~pyro_relax.diagnostics.psis.psis_expectation`. R-hat needs two or more
    chains; with one chain ArviZ 0.2x reports ``NaN``.

    Arguments:
        idata_or_samples: ArviZ data with a ``posterior`` group, or a dict of draws
            ``{name: (n, *event)}`` (converted with ``to_inference_data``).
        reference: Optional dict of reference draws ``{name: (m, *event)}`` (e.g. exact
            samples of a benchmark target) for some or all posterior variables, with the
            same event shapes. Adds columns ``ref_mean``, ``ref_sd``,
            ``mean_err_sd = (mean - ref_mean) / ref_sd`` and
            ``sd_err_sd = (sd - ref_sd) / ref_sd``; rows without a reference get ``NaN``.
        chains: Chains to split a dict of draws into (ignored for ArviZ data).

    Returns:
        A ``pandas.DataFrame`` indexed by component (``"x"``, ``"x[0]"``, ...) with
        columns ``mean, sd, ess_bulk, ess_tail, r_hat`` (+ the reference columns).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> table = summarize({"x": torch.randn(400, 2)}, reference={"x": torch.randn(400, 2)})
        >>> list(table.index), bool((table["mean_err_sd"].abs() < 0.5).all())
        (['x[0]', 'x[1]'], True)
    """
    if hasattr(idata_or_samples, "posterior") or _has_posterior(idata_or_samples):
        data = idata_or_samples  # checked first: a 1.x DataTree is also a Mapping
    elif isinstance(idata_or_samples, Mapping):
        data = _converted(idata_or_samples, chains=chains)
    else:
        raise TypeError(
            "summarize: expected ArviZ data with a posterior group or a dict of draws, "
            f"got {type(idata_or_samples).__name__}"
        )
    shapes = _event_shapes(data)
    if not shapes:
        raise ValueError("summarize: expected at least one posterior variable, got none")
    n_draws = int(np.prod(data["posterior"][next(iter(shapes))].shape[:2]))
    if n_draws < 4:
        raise ValueError(f"summarize: expected at least 4 draws, got {n_draws}")
    table = _az_summary(data, "all").loc[:, list(SUMMARY_COLUMNS)].astype(np.float64)
    if reference is None:
        return table
    if not isinstance(reference, Mapping) or not reference:
        raise TypeError(
            f"summarize: expected reference a non-empty dict of draws, got {type(reference)}"
        )
    ref_data = _converted(reference)
    ref_shapes = _event_shapes(ref_data)
    for name, shape in ref_shapes.items():
        if name not in shapes:
            raise ValueError(
                f"summarize: reference variable {name!r} is not in the posterior {list(shapes)}"
            )
        if shape != shapes[name]:
            raise ValueError(
                f"summarize: reference {name!r}: expected event shape {shapes[name]}, got {shape}"
            )
    ref = _az_summary(ref_data, "stats").loc[:, ["mean", "sd"]].astype(np.float64)
    ref = ref.rename(columns={"mean": "ref_mean", "sd": "ref_sd"})
    table = table.join(ref, how="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        table["mean_err_sd"] = (table["mean"] - table["ref_mean"]) / table["ref_sd"]
        table["sd_err_sd"] = (table["sd"] - table["ref_sd"]) / table["ref_sd"]
    return table


def _converted(draws: Mapping[str, Numbers], chains: int = 1) -> ArvizData:
    """``to_inference_data`` with its errors renamed after :func:`summarize`."""
    for name, value in draws.items():
        try:
            arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"summarize: expected an array of draws for {name!r}: {exc}") from exc
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"summarize: expected real draws for {name!r}, got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            n_bad = int((~np.isfinite(arr)).sum())
            raise ValueError(
                f"summarize: expected finite draws for {name!r}, got {n_bad} NaN or inf"
            )
    try:
        return to_inference_data(draws, chains=chains)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"summarize: {exc}") from exc


def _has_posterior(data: object) -> bool:
    try:
        return "posterior" in data.children  # ArviZ 1.x DataTree
    except AttributeError:
        return False


def weighted_report(log_weights: Numbers) -> dict[str, Any]:
    """One-look report on a set of log importance weights.

    Arguments:
        log_weights: 1-D log importance weights (``n >= 25``), finite or ``-inf``.

    Returns:
        ``{"n", "khat", "verdict", "ess", "ess_fraction"}``: the number of draws, the
        PSIS k-hat and its verdict (:func:`khat_verdict`), and the Kish ESS of the raw
        weights and its fraction of ``n``.

    Raises:
        TypeError: if the log weights are not real numbers.
        ValueError: for a shape other than ``(n,)`` with ``n >= 25``, NaN or ``+inf``
            entries, or all weights ``-inf``.

    Example:
        >>> import torch
        >>> report = weighted_report(torch.zeros(100))
        >>> report["verdict"], report["ess"]
        ('good', 100.0)
    """
    lw = check_log_weights(log_weights, MIN_PSIS_DRAWS, "weighted_report")
    if lw.ndim != 1:
        raise ValueError(f"weighted_report: expected 1-D log_weights, got shape {lw.shape}")
    _, khat = psis_khat(lw)
    return {
        "n": lw.shape[0],
        "khat": khat,
        "verdict": khat_verdict(khat),
        "ess": importance_ess(lw),
        "ess_fraction": importance_ess_fraction(lw),
    }
