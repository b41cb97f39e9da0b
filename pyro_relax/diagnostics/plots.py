"""Diagnostic figures: ELBO trace, pair scatter matrix, k-hat bars.

Every function builds a ``matplotlib.figure.Figure`` on an Agg canvas without
touching pyplot (no global state, no ``plt.show``), returns it, and writes it to
``path`` when one is given. Matplotlib is imported inside the functions so that
importing :mod:`pyro_relax.diagnostics` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

from pyro_relax.diagnostics._compat import Numbers, as_numpy
from pyro_relax.diagnostics.psis import khat_verdict

__all__ = ["plot_elbo", "plot_khat", "plot_pairs"]

_VERDICT_COLORS = {"good": "tab:green", "acceptable": "tab:orange", "unreliable": "tab:red"}


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig


def plot_elbo(trace: Numbers, *, path: str | os.PathLike[str] | None = None) -> Figure:
    """Plot an ELBO trace with its running mean.

    Arguments:
        trace: 1-D sequence of ELBO values (tensor, array or list), one per step.
        path: Optional file to write (format from the suffix, e.g. ``.png``).

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> import numpy as np
        >>> fig = plot_elbo(-np.exp(-np.arange(200) / 50.0))
        >>> fig.axes[0].get_ylabel()
        'ELBO'
    """
    elbo = as_numpy(trace, "trace").astype(np.float64)
    if elbo.ndim != 1 or elbo.size == 0:
        raise ValueError(f"trace must be a non-empty 1-D sequence, got shape {elbo.shape}")
    if not np.isfinite(elbo).all():
        raise ValueError("trace has NaN or inf entries")
    fig = _new_figure(6.0, 3.5)
    ax = fig.add_subplot()
    steps = np.arange(elbo.size)
    ax.plot(steps, elbo, lw=0.8, alpha=0.5, color="tab:blue", label="ELBO")
    window = max(1, elbo.size // 50)
    if window > 1:
        running = np.convolve(elbo, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], running, color="tab:blue", label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO")
    ax.legend(loc="lower right")
    return _finish(fig, path)


def _components(samples: Mapping[str, Numbers], label: str) -> dict[str, np.ndarray]:
    if not isinstance(samples, Mapping) or not samples:
        raise TypeError(f"{label} must be a non-empty dict of draws, got {type(samples).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in samples.items():
        arr = as_numpy(value, f"{label}[{name!r}]").astype(np.float64)
        if arr.ndim == 0:
            raise ValueError(f"{label}[{name!r}] must have shape (n, *event), got a scalar")
        if not np.isfinite(arr).all():
            raise ValueError(f"{label}[{name!r}] has NaN or inf entries")
        flat = arr.reshape(arr.shape[0], -1)
        for j, idx in enumerate(np.ndindex(arr.shape[1:])):
            key = name if not idx else f"{name}[{', '.join(map(str, idx))}]"
            out[key] = flat[:, j]
    return out


def _thin(x: np.ndarray, max_points: int) -> np.ndarray:
    if x.size <= max_points:
        return x
    return x[np.linspace(0, x.size - 1, max_points).astype(int)]


def _scatter(ax: Axes, x: np.ndarray, y: np.ndarray, color: str, max_points: int) -> None:
    ax.scatter(
        _thin(x, max_points), _thin(y, max_points), s=2, alpha=0.3, color=color, rasterized=True
    )


def plot_pairs(
    samples: Mapping[str, Numbers],
    reference: Mapping[str, Numbers] | None = None,
    *,
    max_components: int = 6,
    max_points: int = 2000,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Scatter matrix of the first scalar components, with reference draws overlaid.

    Arguments:
        samples: ``{name: (n, *event)}`` draws; every event element is one component,
            named like ArviZ (``"x[0]"``), taken in order up to ``max_components``.
        reference: Optional ``{name: (m, *event)}`` draws, drawn in orange where they
            share a component name with ``samples``.
        max_components: Most components to show (2 to 12).
        max_points: Most points per scatter (evenly thinned, no randomness).
        path: Optional file to write.

    Returns:
        The ``matplotlib.figure.Figure``: histograms on the diagonal, scatter plots
        below it.

    Example:
        >>> import torch
        >>> fig = plot_pairs({"x": torch.randn(300, 3)}, {"x": torch.randn(300, 3)})
        >>> len(fig.axes)
        6
    """
    if not isinstance(max_components, int) or not 1 <= max_components <= 12:
        raise ValueError(f"max_components must be an int in [1, 12], got {max_components!r}")
    if not isinstance(max_points, int) or max_points < 10:
        raise ValueError(f"max_points must be an int >= 10, got {max_points!r}")
    comps = _components(samples, "samples")
    names = list(comps)[:max_components]
    ref = _components(reference, "reference") if reference is not None else {}
    if reference is not None and not set(names) & set(ref):
        raise ValueError(f"reference shares no component with samples: {names} vs {list(ref)}")
    k = len(names)
    fig = _new_figure(2.0 * k + 1.0, 2.0 * k + 0.5)
    for i, yi in enumerate(names):
        for j, xj in enumerate(names[: i + 1]):
            ax = fig.add_subplot(k, k, i * k + j + 1)
            if i == j:
                bins = np.histogram_bin_edges(np.concatenate([comps[xj], ref.get(xj, [])]), 30)
                ax.hist(comps[xj], bins=bins, density=True, color="tab:blue", alpha=0.6)
                if xj in ref:
                    ax.hist(ref[xj], bins=bins, density=True, histtype="step", color="tab:orange")
            else:
                if xj in ref and yi in ref:
                    _scatter(ax, ref[xj], ref[yi], "tab:orange", max_points)
                _scatter(ax, comps[xj], comps[yi], "tab:blue", max_points)
            if i == k - 1:
                ax.set_xlabel(xj)
            if j == 0 and i > 0:
                ax.set_ylabel(yi)
    if ref:
        fig.legend(handles=_legend_handles(), loc="upper right")
    return _finish(fig, path)


def _legend_handles() -> list[Patch]:
    from matplotlib.patches import Patch

    return [Patch(color="tab:blue", label="samples"), Patch(color="tab:orange", label="reference")]


def plot_khat(khats: Mapping[str, float], *, path: str | os.PathLike[str] | None = None) -> Figure:
    """Bar chart of Pareto k-hat values with the 0.5 and 0.7 thresholds.

    Bars are colored by :func:`~pyro_relax.diagnostics.psis.khat_verdict`; an
    infinite k-hat is drawn clipped at the top of the axis and labelled ``inf``.

    Arguments:
        khats: ``{label: khat}``, e.g. one entry per model or per guide.
        path: Optional file to write.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> fig = plot_khat({"guide A": 0.2, "guide B": 0.9})
        >>> len(fig.axes[0].patches)
        2
    """
    if not isinstance(khats, Mapping) or not khats:
        raise TypeError(f"khats must be a non-empty dict of label -> k-hat, got {type(khats)}")
    labels = [str(key) for key in khats]
    values = np.array([as_numpy(v, f"khats[{key!r}]") for key, v in khats.items()], dtype=float)
    if values.ndim != 1:
        raise ValueError("every k-hat must be a scalar")
    verdicts = [khat_verdict(float(v)) for v in values]  # also rejects NaN
    finite = values[np.isfinite(values)]
    top = max(1.0, float(finite.max()) + 0.1) if finite.size else 1.0
    bottom = min(0.0, float(finite.min()) - 0.1) if finite.size else 0.0
    heights = np.clip(values, bottom, top)
    fig = _new_figure(max(4.0, 0.8 * len(labels) + 2.0), 3.5)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    ax.bar(x, heights, color=[_VERDICT_COLORS[v] for v in verdicts])
    for xi, v, h in zip(x, values, heights, strict=True):
        if not np.isfinite(v):
            ax.annotate("inf" if v > 0 else "-inf", (xi, h), ha="center", va="bottom")
    ax.axhline(0.5, color="tab:orange", ls="--", lw=1, label="0.5")
    ax.axhline(0.7, color="tab:red", ls="--", lw=1, label="0.7")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(bottom, top + 0.1)
    ax.set_ylabel("Pareto k-hat")
    ax.legend(loc="upper left")
    return _finish(fig, path)
