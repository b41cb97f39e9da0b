"""The fits of the named guides: SVI (with Pathfinder's start), the SNF warm start, AIS, FAB.

Each ``fit_*`` function takes the model and :class:`~pyro_relax.infer.runner.common.FitOptions`
and returns a :class:`~pyro_relax.infer.runner.common.FitResult`; the method
table :data:`~pyro_relax.infer.runner.GUIDES` says which name runs which.
"""

from __future__ import annotations

__all__ = [
    "GuideFactory",
    "fit_fab",
    "fit_flow_ais",
    "fit_pathfinder",
    "fit_snf",
    "fit_svi",
    "make_diffusion_guide",
    "make_flow_guide",
    "make_snf_guide",
    "whitening_start",
]

import math
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_feasible

from pyro_relax.infer.fitting import LoopStats, fit_particles
from pyro_relax.infer.guides import AutoDiffusionGuide, AutoFlowGuide, AutoSNFGuide
from pyro_relax.infer.guides.base import RelaxedGuideMixin
from pyro_relax.infer.runner.common import (
    FitOptions,
    FitResult,
    PathfinderGuide,
    own_param_store,
    pathfinder_log_p,
    run_pathfinder,
    with_annealing,
)

GuideFactory = Callable[..., AutoContinuous]
"""``(model, **options) -> guide``: how a named SVI guide is built."""

# Defaults measured on centered eight schools (1000 steps): a stack started at
# the feasible point with unit scale fits better and 3x faster than a spline
# stack started at the prior median with scale 0.1. Among affine stacks
# (2000 steps x 8 particles, seeds 0-2), IAF layers put the hierarchical
# scale before the values it scales: max mean error 0.07-0.13 reference sd
# on centered eight schools against 0.20-0.24 for affine couplings.
# With init_gaussian (Pathfinder's) the stack ends in a whitening layer instead.
_START: dict[str, Any] = {"init_loc_fn": init_to_feasible, "init_scale": 1.0}


def _with_dtype(make: GuideFactory, kwargs: dict[str, Any], dtype: torch.dtype) -> dict:
    """``kwargs`` with the fit's ``dtype`` for our guides (Pyro's are converted after set-up)."""
    ours = make in (make_flow_guide, make_snf_guide, make_diffusion_guide) or (
        isinstance(make, type) and issubclass(make, RelaxedGuideMixin))
    return {"dtype": dtype, **kwargs} if ours else kwargs


def make_flow_guide(model: Callable[..., Any], **options: Any) -> AutoFlowGuide:  # noqa: ANN401
    """The ``flow`` guide: an IAF :class:`~pyro_relax.infer.guides.AutoFlowGuide`, feasible start.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> make_flow_guide(lambda: pyro.sample("x", dist.Normal(0.0, 1.0)), hidden=8)._kind
        'iaf'
    """
    return AutoFlowGuide(model, **{**_START, **options})  # the class's FLOW_DEFAULTS


def make_snf_guide(model: Callable[..., Any], **options: Any) -> AutoSNFGuide:  # noqa: ANN401
    """The ``snf`` guide: an :class:`~pyro_relax.infer.guides.AutoSNFGuide`, feasible start."""
    return AutoSNFGuide(model, **{**_START, **options})


def make_diffusion_guide(
    model: Callable[..., Any], **options: Any  # noqa: ANN401
) -> AutoDiffusionGuide:
    """The ``diffusion`` guide: an :class:`~pyro_relax.infer.guides.AutoDiffusionGuide`."""
    return AutoDiffusionGuide(model, **{**_START, **options})


def whitening_start(
    model: Callable[[], Any], opts: FitOptions, kwargs: dict[str, Any]  # noqa: ANN401
) -> tuple[list[dict[str, Any]], Any]:  # noqa: ANN401 - a PathfinderResult or None
    """Run Pathfinder for a whitened guide; return its stage and result (or ``[], None``).

    With ``opts.init == "pathfinder"`` and no ``init_gaussian`` in ``kwargs``
    yet, Pathfinder's Gaussian is put there (the guide's stack then ends in a
    whitening layer started at it).
    """
    if opts.init != "pathfinder" or "init_gaussian" in kwargs:
        return [], None
    pyro.set_rng_seed(opts.seed)
    pf = run_pathfinder(model, opts.seed, opts.dtype)
    kwargs["init_gaussian"] = pf.gaussian  # dense whitening up to 200 dims, low rank above
    stage = {"stage": "pathfinder", "seconds": pf.wall_time, "elbo": pf.elbo, "khat": pf.khat,
             "num_evals": pf.num_evals}
    return [stage], pf


def _in_dtype(guide: AutoContinuous, dtype: torch.dtype) -> AutoContinuous:
    """Set up a guide and give it ``dtype`` (ours take it as an option; Pyro's are converted)."""
    if getattr(guide, "prototype_trace", None) is None:
        guide()
    if not isinstance(guide, RelaxedGuideMixin):
        guide.to(dtype)
    return guide


def _svi(
    guide: AutoContinuous, model: Callable[[], Any], steps: int, opts: FitOptions, name: str
) -> LoopStats:
    stats = fit_particles(guide, model, steps, opts.lr, opts.num_particles,
                          until_converged=opts.until_converged, progress=opts.progress,
                          desc=f"fit {name}", average_from=steps // 2 if opts.average else None)
    for note in stats.notes:
        warnings.warn(f"fit_guide: {note}", RuntimeWarning, stacklevel=4)
    return stats


def _stage(name: str, stats: LoopStats) -> dict[str, Any]:
    return {"stage": f"svi ({name})", "seconds": stats.seconds, "steps": stats.steps,
            "final_elbo": stats.elbo[-1], "particles": stats.particles,
            "dropped_particles": stats.dropped_particles, "skipped_steps": stats.skipped_steps,
            "vectorization": stats.vectorization, "converged": stats.converged,
            "notes": stats.notes}


def fit_svi(
    model: Callable[[], Any], opts: FitOptions, *, name: str, make: GuideFactory,
    whitened: bool = False,
) -> FitResult:
    """Build the guide ``make(model, **guide_kwargs)`` and fit it.

    With ``whitened`` (and ``init="pathfinder"``) the guide starts at Pathfinder's Gaussian.
    """
    kwargs = dict(opts.guide_kwargs)
    stages, pf = whitening_start(model, opts, kwargs) if whitened else ([], None)
    pyro.set_rng_seed(opts.seed)
    with own_param_store():
        guide = _in_dtype(make(model, **_with_dtype(make, kwargs, opts.dtype)), opts.dtype)
        stats = _svi(guide, model, opts.steps, opts, name)
    stages.append(_stage(name, stats))
    spent = sum(st["seconds"] for st in stages)
    return FitResult(guide, stats.elbo, spent, name, stages, opts.dtype, pf)


def fit_pathfinder(model: Callable[[], Any], opts: FitOptions) -> FitResult:
    """Pathfinder alone: its best Gaussian, importance weighted (:class:`PathfinderGuide`)."""
    stages, pf = whitening_start(model, opts.but(init="pathfinder"), {})
    guide = PathfinderGuide(pf, pathfinder_log_p(model, opts.dtype))
    return FitResult(guide, [pf.elbo], pf.wall_time, "pathfinder", stages, opts.dtype, pf)


def fit_flow_ais(model: Callable[[], Any], opts: FitOptions) -> FitResult:
    """The ``flow`` fit followed by ``opts.ais_levels`` annealed HMC levels in its base space."""
    fit = fit_svi(model, opts, name="flow-ais", make=make_flow_guide, whitened=True)
    fit.name = "flow"
    return with_annealing(fit, opts.ais_levels, "fit_guide: flow-ais")


def fit_snf(model: Callable[[], Any], opts: FitOptions) -> FitResult:
    """The ``snf`` fit: warm-started (:meth:`~pyro_relax.infer.guides.AutoSNFGuide.warm_start`).

    Without explicit ``layers`` (and with at least 2 steps) the flow part is
    fitted alone for half the steps, then the SNF for the rest; both times count.
    """
    kwargs = dict(opts.guide_kwargs)
    if "layers" in kwargs or opts.steps < 2:
        return fit_svi(model, opts, name="snf", make=make_snf_guide, whitened=True)
    stages, pf = whitening_start(model, opts, kwargs)
    flow_steps = opts.steps // 2
    warm: list[LoopStats] = []

    def train_flow(flow: AutoFlowGuide) -> None:
        warm.append(_svi(flow, model, flow_steps, opts, "flow"))
        pyro.set_rng_seed(opts.seed)

    pyro.set_rng_seed(opts.seed)
    with own_param_store():
        guide = AutoSNFGuide.warm_start(model, train_flow,
                                        **{**_START, "dtype": opts.dtype, **kwargs})
        stages.append({**_stage("flow", warm[0]), "stage": "warm start: svi (flow)"})
        stats = _svi(guide, model, opts.steps - flow_steps, opts, "snf")
    stages.append(_stage("snf", stats))
    spent = sum(st["seconds"] for st in stages)
    return FitResult(guide, warm[0].elbo + stats.elbo, spent, "snf", stages, opts.dtype, pf)


def fit_fab(model: Callable[[], Any], opts: FitOptions) -> FitResult:
    """FAB (``fit_fab_guide``) as a fit: its own learning rate; the ELBO from 256 weighted draws."""
    from pyro_relax.infer.fab_guide import fit_fab_guide

    g, st = fit_fab_guide(model, opts.steps, seed=opts.seed, progress=opts.progress,
                          dtype=opts.dtype, **opts.guide_kwargs)
    with torch.no_grad():
        _, log_w = g.importance_weights(256)
    finite = log_w[torch.isfinite(log_w)]
    elbo = [float(finite.mean())] if finite.numel() else [-math.inf]
    stage = {"stage": "fab", "seconds": st["seconds"], "target_evals": st["target_evals"],
             "rejected": st["rejected"], "skipped_steps": st["skipped_steps"]}
    return FitResult(g, elbo, st["seconds"], "fab", [stage], opts.dtype)
