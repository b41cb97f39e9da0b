"""The posterior a user reads: importance-corrected draws, with the raw guide draws kept apart.

A guide's draws are a sample of ``q``, not of the posterior; their log
importance weights ``log p - log q`` say how to correct them. Reading the
unweighted draws (as a plain ``summary`` would) gives the guide's answer, not
the corrected one. :func:`psis_resample` turns weighted draws into an equally
weighted sample of the corrected posterior: Pareto-smoothed weights
(:func:`~pyro_relax.diagnostics.psis.psis_khat`), then systematic
resampling (each draw is kept about ``n w_i`` times, with less noise than
multinomial resampling). :func:`corrected_inference_data` writes that sample
as the ``posterior`` group and the raw draws with their log weights as a group
``guide_draws``; the number of distinct draws kept is an attribute, so a
reader sees at once when a few draws carry all the weight.
"""

from __future__ import annotations

__all__ = ["corrected_inference_data", "psis_resample"]

from collections.abc import Mapping
from typing import Any

import numpy as np

from pyro_relax.core.checks import check_size
from pyro_relax.diagnostics._compat import ArvizData, Numbers, add_group, as_numpy
from pyro_relax.diagnostics.convert import check_samples
from pyro_relax.diagnostics.psis import MIN_PSIS_DRAWS, psis_khat


def psis_resample(
    samples: Mapping[str, Numbers],
    log_weights: Numbers,
    num_draws: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """An equally weighted sample of the importance-corrected posterior.

    Arguments:
        samples: ``{name: draws}``, each of shape ``(n, *event)``.
        log_weights: their log importance weights ``(n,)``, finite or ``-inf``
            (``n >= 25`` for the Pareto fit).
        num_draws: the size of the new sample (default ``n``).
        seed: the seed of the systematic resampling's one uniform.

    Returns:
        ``(resampled, info)``: the new draws (numpy, ``(num_draws, *event)``) and
        ``{"khat", "distinct_draws", "num_draws", "source_draws"}``.

    Raises:
        TypeError: for samples that are not a dict of arrays.
        ValueError: for shapes that do not match, fewer than 25 draws, NaN or
            ``+inf`` log weights, or all weights ``-inf``.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-3, 3, 400)
        >>> new, info = psis_resample({"x": x}, -0.5 * x**2)  # uniform draws, normal target
        >>> abs(float(new["x"].std()) - 1.0) < 0.15, info["distinct_draws"] < 400
        (True, True)
    """
    draws = check_samples(samples)
    n = next(iter(draws.values())).shape[0]
    lw = as_numpy(log_weights, "psis_resample: log_weights").astype(np.float64)
    if lw.shape != (n,):
        raise ValueError(f"psis_resample: expected log_weights of shape ({n},), got {lw.shape}")
    if n < MIN_PSIS_DRAWS:
        raise ValueError(f"psis_resample: expected at least {MIN_PSIS_DRAWS} draws, got {n}")
    size = n if num_draws is None else num_draws
    size = check_size(size, "num_draws", "psis_resample")
    smoothed, khat = psis_khat(lw)
    w = np.exp(smoothed - np.max(smoothed))
    w = w / w.sum()
    rng = np.random.default_rng(seed)
    positions = (rng.uniform() + np.arange(size)) / size
    index = np.minimum(np.searchsorted(np.cumsum(w), positions), n - 1)
    rng.shuffle(index)  # keep the draw order free of the sorting by cumulative weight
    out = {k: v[index] for k, v in draws.items()}
    info = {
        "khat": float(khat),
        "distinct_draws": int(np.unique(index).size),
        "num_draws": int(size),
        "source_draws": int(n),
    }
    return out, info


def corrected_inference_data(
    samples: Mapping[str, Numbers],
    log_weights: Numbers,
    *,
    elbo_trace: Numbers | None = None,
    seed: int = 0,
) -> tuple[ArvizData, dict[str, Any]]:
    """ArviZ data whose ``posterior`` is the PSIS-corrected sample; raw draws in ``guide_draws``.

    Arguments:
        samples: the guide's draws ``{name: (n, *event)}``.
        log_weights: their log importance weights ``(n,)``.
        elbo_trace: an optional ELBO trace (group ``optimization``, as in
            :func:`~pyro_relax.diagnostics.convert.to_inference_data`).
        seed: the resampling seed.

    Returns:
        ``(data, info)``: the ``InferenceData``/``DataTree`` (one chain) and the
        resampling info of :func:`psis_resample` (also stored as attributes of the data).

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-3, 3, 400)
        >>> data, info = corrected_inference_data({"x": x}, -0.5 * x**2)
        >>> data["posterior"]["x"].shape, data["guide_draws"]["x"].shape
        ((1, 400), (1, 400))
    """
    import xarray as xr

    from pyro_relax.diagnostics.convert import to_inference_data

    resampled, info = psis_resample(samples, log_weights, seed=seed)
    data = to_inference_data(resampled, elbo_trace=elbo_trace)
    raw = check_samples(samples)
    lw = as_numpy(log_weights, "log_weights").astype(np.float64)
    variables: dict[str, Any] = {}
    for name, arr in raw.items():
        dims = ["chain", "draw"] + [f"{name}_dim_{i}" for i in range(arr.ndim - 1)]
        variables[name] = (dims, arr[None])
    variables["log_weight"] = (["chain", "draw"], lw[None])
    group = xr.Dataset(variables, attrs={k: v for k, v in info.items()})
    data = add_group(data, "guide_draws", group)
    attrs = getattr(data, "attrs", None)
    posterior = data["posterior"]
    posterior.attrs.update({"corrected_by": "PSIS resampling", **info})
    if isinstance(attrs, dict):
        attrs.update({"posterior_" + k: v for k, v in info.items()})
    return data, info
