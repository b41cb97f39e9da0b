"""What ``pyro-relax fit`` and ``mcmc`` write into their (temporary) output folder.

Used only by :mod:`pyro_relax.cli`; the folder itself is managed by
:mod:`pyro_relax._outdir`. ``diagnostics.json`` is strict JSON: a number that is
not finite (an ELBO of minus infinity, say) is written as ``null``.
"""

from __future__ import annotations

__all__ = ["netcdf_bytes", "plain_json", "write_results"]

import io
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pandas import DataFrame
    from torch import Tensor


def write_results(
    tmp: Path,
    samples: dict[str, Any],
    diagnostics: dict[str, Any],
    *,
    chains: int = 1,
    log_w: Tensor | None = None,
    elbo: list[float] | None = None,
    mcmc: object = None,
    seed: int = 0,
    name: str | None = None,
) -> DataFrame:
    """Write posterior.nc, summary.csv, diagnostics.json, the plots and report.html into ``tmp``.

    Returns the summary table (a ``pandas.DataFrame``). ``name`` is the run's
    name in the report's title (the output folder's, not the temporary one's).

    With log weights (a guide's draws), the ``posterior`` group and the summary
    hold the PSIS-corrected posterior (resampled, equally weighted) and the raw
    draws with their weights go into the group ``guide_draws``.
    """
    import numpy as np

    from pyro_relax.diagnostics import (
        plot_elbo,
        plot_khat,
        plot_pairs,
        summarize,
        to_inference_data,
    )
    from pyro_relax.diagnostics.report import write_report
    from pyro_relax.diagnostics.resample import corrected_inference_data

    flat = {
        k: v.detach().cpu().reshape((-1,) + tuple(v.shape[2 if mcmc else 1 :])).numpy()
        for k, v in samples.items()
    }
    lw = None if log_w is None else log_w.detach().cpu().double().numpy()
    if lw is not None and lw.shape[0] >= 25:
        idata, info = corrected_inference_data(flat, lw, elbo_trace=elbo, seed=seed)
        diagnostics["posterior"] = {"corrected_by": "PSIS resampling", **info}
        shown = {k: np.asarray(idata["posterior"][k]).reshape((-1,) + v.shape[1:])
                 for k, v in flat.items()}
    else:
        idata = to_inference_data(flat, log_weights=lw, elbo_trace=elbo, chains=chains)
        shown = flat
    (tmp / "posterior.nc").write_bytes(netcdf_bytes(idata))
    # ArviZ logs a warning for R-hat of one chain (its own logger, not getLogger's): not news
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.WARNING))
    try:
        table = summarize(idata)
    finally:
        logging.disable(disabled)
    distinct = diagnostics.get("posterior", {}).get("distinct_draws")
    if isinstance(distinct, int):  # copies of one draw are not independent draws
        for column in ("ess_bulk", "ess_tail"):
            if column in table:
                table[column] = table[column].clip(upper=distinct)
    table.to_csv(tmp / "summary.csv")
    diagnostics["min_ess_bulk"] = float(np.nanmin(table["ess_bulk"]))
    if chains > 1:
        diagnostics["max_r_hat"] = float(np.nanmax(table["r_hat"]))
    text = json.dumps(plain_json(diagnostics), indent=2, allow_nan=False)
    (tmp / "diagnostics.json").write_text(text + "\n")
    plot_pairs(shown, path=tmp / "pairs.png")
    if elbo:
        plot_elbo(elbo, path=tmp / "elbo.png")
    if "khat" in diagnostics:
        plot_khat({diagnostics.get("guide", "guide"): diagnostics["khat"]}, path=tmp / "khat.png")
    write_report(tmp, diagnostics, name=name)  # report.html: verdict, summary, diagnostics, plots
    return table


def plain_json(value: object) -> object:
    """``value`` with what JSON cannot hold made plain: non-finite numbers become ``None``.

    JSON has no NaN or infinity (``json.dumps`` would write ``NaN``/``-Infinity``,
    which ``JSON.parse`` rejects); numpy scalars become floats, other objects strings.

    Example:
        >>> plain_json({"elbo": float("-inf"), "k": [1, 0.5], "dtype": object})
        {'elbo': None, 'k': [1, 0.5], 'dtype': "<class 'object'>"}
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    try:
        number = float(value)  # floats, numpy scalars, one-element tensors
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def netcdf_bytes(idata: object) -> bytes:
    """The netCDF file of an ``InferenceData`` (or ``DataTree``), built in memory.

    Written by Python afterwards, a full disk is a plain ``OSError``; HDF5
    writing to the disk itself would fail with tracebacks at exit (and a crash).
    """
    buf = io.BytesIO()
    groups = getattr(idata, "groups", None)
    if not callable(groups):  # a DataTree
        idata.to_netcdf(buf, engine="h5netcdf")  # type: ignore[attr-defined]
        return buf.getvalue()
    import xarray as xr

    xr.Dataset(attrs=dict(getattr(idata, "attrs", {}) or {})).to_netcdf(
        buf, mode="w", engine="h5netcdf")
    for group in groups():
        data = getattr(idata, group)
        encoding = {k: {"zlib": True} for k, v in data.variables.items() if v.dtype.kind in "biufc"}
        data.to_netcdf(buf, mode="a", group=group, engine="h5netcdf", encoding=encoding)
    return buf.getvalue()
