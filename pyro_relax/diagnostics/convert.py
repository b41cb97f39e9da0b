"""Convert guide draws, weighted draws and MCMC runs to ArviZ data.

Works on ArviZ 0.2x (returns ``InferenceData``) and 1.x (returns ``DataTree``):
only ``from_dict`` is used, through :mod:`pyro_relax.diagnostics._compat`.

Where things go:

- draws -> ``posterior``, shaped ``(chain, draw, *event)``;
- log importance weights -> ``sample_stats["log_weight"]``, shaped ``(chain, draw)``;
- the ELBO trace -> a group ``optimization`` with one variable ``elbo`` along a
  dimension ``step``. ``sample_stats`` can't hold it (its length is the number of
  optimizer steps, not of draws), and ArviZ 0.23's ``from_dict`` has no extra
  groups, so the group is added afterwards (``InferenceData.add_groups`` on 0.2x,
  a child node on 1.x). A group rather than an attribute keeps the trace an array
  that survives ``to_netcdf``/``to_zarr`` and can be plotted from the data alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyro.infer import MCMC

from pyro_relax.core.checks import check_size
from pyro_relax.diagnostics._compat import (
    ArvizData,
    Numbers,
    add_group,
    as_numpy,
    from_dict,
    import_arviz,
)

__all__ = ["check_samples", "from_mcmc", "to_inference_data"]


def check_samples(samples: object) -> dict[str, np.ndarray]:
    """Check ``{name: draws}`` and return the draws as numpy arrays ``(n, *event)``.

    Arguments:
        samples: a non-empty mapping of str names to draws (tensors on any device,
            arrays), all with the same number ``n`` of draws along axis 0.

    Raises:
        TypeError: not a non-empty mapping with str keys, or draws that are not numbers.
        ValueError: scalar draws, NaN or inf entries, or different numbers of draws.

    Example:
        >>> import torch
        >>> check_samples({"x": torch.zeros(5, 2)})["x"].shape
        (5, 2)
    """
    if not isinstance(samples, Mapping) or not samples:
        raise TypeError(
            f"samples must be a non-empty dict of name -> (n, *event) draws, "
            f"got {type(samples).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for name, value in samples.items():
        if not isinstance(name, str):
            raise TypeError(f"sample names must be str, got {type(name).__name__}")
        arr = as_numpy(value, f"samples[{name!r}]")
        if arr.ndim == 0:
            raise ValueError(f"samples[{name!r}] must have shape (n, *event), got a scalar")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"samples[{name!r}] has NaN or inf entries")
        out[name] = arr
    sizes = {name: arr.shape[0] for name, arr in out.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all samples need the same number of draws (axis 0), got {sizes}")
    return out


def _split_chains(arr: np.ndarray, chains: int) -> np.ndarray:
    return arr.reshape(chains, arr.shape[0] // chains, *arr.shape[1:])


def to_inference_data(
    samples: Mapping[str, Numbers],
    *,
    log_weights: Numbers | None = None,
    elbo_trace: Numbers | None = None,
    chains: int = 1,
) -> ArvizData:
    """Pack draws (and optionally importance weights and an ELBO trace) for ArviZ.

    Arguments:
        samples: ``{name: draws}`` with draws of shape ``(n, *event)`` (tensors on any
            device, or arrays), e.g. from ``Predictive`` or a flow's ``sample``.
        log_weights: Optional log importance weights of shape ``(n,)``, stored as
            ``sample_stats["log_weight"]``; finite or ``-inf``.
        elbo_trace: Optional 1-D sequence of ELBO values, one per optimizer step,
            stored as group ``optimization``, variable ``elbo``, dimension ``step``.
        chains: Number of chains the ``n`` draws are split into, chain-major (draws
            ``0 .. n/chains - 1`` are chain 0). Must divide ``n``.

    Returns:
        An ArviZ ``InferenceData`` (ArviZ 0.2x) or ``DataTree`` (ArviZ 1.x) with
        ``posterior`` draws shaped ``(chain, draw, *event)``.

    Example:
        >>> import torch
        >>> idata = to_inference_data({"x": torch.randn(100, 2)}, chains=2)
        >>> idata["posterior"]["x"].shape
        (2, 50, 2)
    """
    draws = check_samples(samples)
    n = next(iter(draws.values())).shape[0]
    check_size(chains, "chains", "to_inference_data")
    if n % chains:
        raise ValueError(f"chains={chains} must divide the number of draws, got n={n}")
    groups: dict[str, dict[str, np.ndarray]] = {
        "posterior": {k: _split_chains(v, chains) for k, v in draws.items()}
    }
    if log_weights is not None:
        lw = as_numpy(log_weights, "log_weights").astype(np.float64)
        if lw.shape != (n,):
            raise ValueError(f"log_weights must have shape ({n},), got {lw.shape}")
        if np.isnan(lw).any() or np.isposinf(lw).any():
            raise ValueError("log_weights must be finite or -inf, got NaN or +inf entries")
        groups["sample_stats"] = {"log_weight": _split_chains(lw, chains)}
    elbo = None
    if elbo_trace is not None:
        elbo = as_numpy(elbo_trace, "elbo_trace").astype(np.float64)
        if elbo.ndim != 1 or elbo.size == 0:
            raise ValueError(f"elbo_trace must be a non-empty 1-D sequence, got shape {elbo.shape}")
        if not np.isfinite(elbo).all():
            raise ValueError("elbo_trace has NaN or inf entries")
    data = from_dict(groups, attrs={"inference_library": "pyro_relax"})
    if elbo is not None:
        import xarray as xr

        trace = xr.Dataset({"elbo": ("step", elbo)}, coords={"step": np.arange(elbo.size)})
        data = add_group(data, "optimization", trace)
    return data


def from_mcmc(mcmc: MCMC, *, log_likelihood: bool = False) -> ArvizData:
    """Convert a finished ``pyro.infer.MCMC`` run to ArviZ data, chains kept apart.

    Uses ``arviz.from_pyro`` where ArviZ has it (0.2x: it also stores sampler
    statistics such as divergences), else ``mcmc.get_samples(group_by_chain=True)``
    through ``from_dict`` (ArviZ 1.x).

    Arguments:
        mcmc: A ``pyro.infer.MCMC`` object after ``run``.
        log_likelihood: Whether ``from_pyro`` should re-run the model to store the
            pointwise log likelihood (needs observed sites; ignored on ArviZ 1.x).

    Returns:
        An ``InferenceData`` or ``DataTree`` whose ``posterior`` is
        ``(chain, draw, *event)``.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC, NUTS
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> mcmc = MCMC(NUTS(model), num_samples=20, warmup_steps=10, disable_progbar=True)
        >>> mcmc.run()
        >>> from_mcmc(mcmc)["posterior"]["x"].shape
        (1, 20)
    """
    if not callable(getattr(mcmc, "get_samples", None)):
        raise TypeError(f"expected a pyro.infer.MCMC, got {type(mcmc).__name__}")
    az = import_arviz()
    if hasattr(az, "from_pyro"):
        return az.from_pyro(mcmc, log_likelihood=log_likelihood)
    grouped = mcmc.get_samples(group_by_chain=True)
    if not grouped:
        raise ValueError("mcmc has no samples; call mcmc.run(...) first")
    posterior = {k: as_numpy(v, f"samples[{k!r}]") for k, v in grouped.items()}
    return from_dict({"posterior": posterior}, attrs={"inference_library": "pyro"})
