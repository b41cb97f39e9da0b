"""The method table of the named guides and :func:`fit_guide`, which dispatches through it."""

from __future__ import annotations

__all__ = ["GUIDES", "SUBSAMPLING_GUIDES", "GuideMethod", "fit_guide", "make_guide"]

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from pyro.infer.autoguide import (
    AutoContinuous,
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoMultivariateNormal,
)

from pyro_relax.core.checks import check_int, check_positive
from pyro_relax.infer.guides.base import check_dtype
from pyro_relax.infer.guides.layout import check_continuous_model
from pyro_relax.infer.guides.structured import AutoHierarchicalGuide
from pyro_relax.infer.model import Potential
from pyro_relax.infer.runner.auto import fit_auto
from pyro_relax.infer.runner.common import FitOptions, FitResult
from pyro_relax.infer.runner.svi import (
    GuideFactory,
    fit_fab,
    fit_flow_ais,
    fit_pathfinder,
    fit_snf,
    fit_svi,
    make_diffusion_guide,
    make_flow_guide,
    make_snf_guide,
)

Fit = Callable[[Callable[[], Any], FitOptions], FitResult]
"""``(model, options) -> FitResult``: how a named guide is fitted."""


@dataclass(frozen=True)
class GuideMethod:
    """One entry of :data:`GUIDES`.

    Arguments:
        description: the one-line help of the method (the CLI shows it).
        fit: ``(model, options) -> FitResult``.
        make: the guide's constructor ``(model, **guide_kwargs) -> guide`` for
            the methods that are one SVI guide (``None`` for the others).
        default_steps: the command's ``--steps`` when none is given.
    """

    description: str
    fit: Fit
    make: GuideFactory | None = None
    default_steps: int = 2000


def _auto(model: Callable[[], Any], opts: FitOptions) -> FitResult:
    return fit_auto(model, seed=opts.seed, progress=opts.progress, dtype=opts.dtype, lr=opts.lr,
                    num_particles=opts.num_particles, max_steps=opts.steps, budget=opts.budget)


def _svi(name: str, make: GuideFactory, *, whitened: bool = False) -> GuideMethod:
    fit = partial(fit_svi, name=name, make=make, whitened=whitened)
    return GuideMethod(_DESCRIPTIONS[name], fit, make)


def _iaf(model: Callable[..., Any], **options: Any) -> AutoIAFNormal:  # noqa: ANN401
    return AutoIAFNormal(model, **{"num_transforms": 2, **options})


_DESCRIPTIONS = {
    "auto": "Pathfinder, a whitened flow until the ELBO stalls, then AIS / NeuTra if k-hat asks",
    "pathfinder": "multi-path Pathfinder (its best Gaussian, importance weighted)",
    "flow": "an IAF flow guide started at Pathfinder's Gaussian (whitening layer)",
    "flow-ais": "the flow guide followed by annealed importance sampling in its base space",
    "snf": "a stochastic normalizing flow (flow + Langevin blocks in its base space)",
    "diffusion": "a controlled diffusion (PIS) guide with a whitening output layer",
    "structured": "globals by a small flow, each plate member's locals Gaussian given them",
    "fab": "a flow trained by FAB (alpha=2 divergence, AIS + replay buffer): several modes",
    "normal": "Pyro's AutoDiagonalNormal (mean field)",
    "mvn": "Pyro's AutoMultivariateNormal (full-rank Gaussian)",
    "iaf": "Pyro's AutoIAFNormal",
}

GUIDES: dict[str, GuideMethod] = {
    "auto": GuideMethod(_DESCRIPTIONS["auto"], _auto, default_steps=5000),
    "pathfinder": GuideMethod(_DESCRIPTIONS["pathfinder"], fit_pathfinder),
    "flow": _svi("flow", make_flow_guide, whitened=True),
    "flow-ais": GuideMethod(_DESCRIPTIONS["flow-ais"], fit_flow_ais),
    "snf": GuideMethod(_DESCRIPTIONS["snf"], fit_snf, make_snf_guide),
    "diffusion": _svi("diffusion", make_diffusion_guide, whitened=True),
    "structured": _svi("structured", AutoHierarchicalGuide),
    "fab": GuideMethod(_DESCRIPTIONS["fab"], fit_fab),
    "normal": _svi("normal", AutoDiagonalNormal),
    "mvn": _svi("mvn", AutoMultivariateNormal),
    "iaf": _svi("iaf", _iaf),
}
"""The guides of :func:`fit_guide` by name (the CLI offers exactly these)."""

SUBSAMPLING_GUIDES = ("auto", "flow", "normal", "mvn", "iaf")
"""The guides that train on a model whose plate is subsampled (SVI on mini-batches);
``auto`` then runs the ``flow`` guide from the feasible point until its ELBO stalls."""


def make_guide(
    model: Callable[..., Any], name: str, **options: Any  # noqa: ANN401
) -> AutoContinuous:
    """Build the SVI guide named ``name`` (a :data:`GUIDES` entry with a constructor).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> type(make_guide(lambda: pyro.sample("x", dist.Normal(0.0, 1.0)), "mvn")).__name__
        'AutoMultivariateNormal'
    """
    method = GUIDES.get(name)
    if method is None or method.make is None:
        names = [k for k, m in GUIDES.items() if m.make is not None]
        raise ValueError(f"make_guide: expected a guide in {names}, got {name!r}")
    return method.make(model, **options)


def fit_guide(
    model: Callable[[], Any],
    guide: str = "flow",
    steps: int = 2000,
    lr: float = 1e-2,
    seed: int = 0,
    num_particles: int = 8,
    progress: bool = True,
    guide_kwargs: dict[str, Any] | None = None,
    ais_levels: int = 10,
    dtype: str | torch.dtype = "float64",
    init: str = "pathfinder",
    until_converged: bool = False,
    budget: float = 600.0,
) -> FitResult:
    """Fit a guide to a zero-argument model with the robust particle ELBO.

    The guide's parameters, the latents and the log-density sums are in
    ``dtype`` (float64 by default); torch's default dtype and the user's
    parameter store are left alone. A model whose float32 tensors refuse
    float64 latents (``X @ beta``) is evaluated with each latent in its own
    site's dtype (:mod:`pyro_relax.infer.model`). A model with a ``pyro.param``
    is refused (the fit would hold it at its start value).

    Each step draws ``num_particles`` particles,
    evaluated in one batched pass (a particle plate, else ``torch.func.vmap``,
    else 2 particles in a loop); non-finite particles are dropped and counted,
    non-finite steps skipped with the learning rate halved
    (:func:`~pyro_relax.infer.fitting.fit_particles`).

    With ``init="pathfinder"`` the flow-based guides (``flow``, ``flow-ais``,
    ``snf``, ``diffusion``) start at Pathfinder's best Gaussian: their stack
    ends in a whitening affine layer ``loc + L u`` and the layers below it
    start as the identity. ``"pathfinder"`` is Pathfinder alone. ``"flow-ais"``
    fits the ``"flow"`` guide, then wraps it in
    :meth:`~pyro_relax.infer.guides.AutoSNFGuide.from_flow_guide`
    (``ais_levels`` annealed HMC levels in the flow's base space); ``"snf"``
    (without explicit ``layers``) is warm-started
    (:meth:`~pyro_relax.infer.guides.AutoSNFGuide.warm_start`): its flow part is
    first fitted alone for half the steps, then the SNF (its blocks in the
    flow's base space) is trained for the rest. The times of all parts are counted.

    Arguments:
        model: a zero-argument Pyro model with continuous latent sites.
        guide: a name in :data:`GUIDES` (``"auto"`` is
            :func:`~pyro_relax.infer.runner.auto.fit_auto`).
        steps: SVI steps (the most, with ``until_converged``).
        lr: Adam's learning rate.
        seed: the random seed.
        num_particles: ELBO particles per step.
        progress: show progress bars.
        guide_kwargs: options of the guide's constructor.
        ais_levels: the annealing levels of ``flow-ais``.
        dtype: ``"float64"`` (default) or ``"float32"``.
        init: ``"pathfinder"`` (default) or ``"feasible"`` (the model's feasible
            point with unit scale) for the flow-based guides.
        until_converged: stop once the windowed ELBO stops improving.
        budget: seconds for ``"auto"``'s escalation (see
            :func:`~pyro_relax.infer.runner.auto.fit_auto`).

    Raises:
        ValueError: for bad options, a discrete or missing latent site, or when
            Pathfinder finds no finite point.
        FloatingPointError: when the ELBO stays non-finite (what to try is in the message).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> fit_guide(model, "normal", steps=5, progress=False).elbo[-1] < 10
        True
    """
    owner = "fit_guide"
    opts = FitOptions(
        steps=check_int(steps, "steps", owner, 1),
        lr=check_positive(lr, "lr", owner),
        seed=seed,
        num_particles=check_int(num_particles, "num_particles", owner, 1),
        progress=progress,
        guide_kwargs=dict(guide_kwargs or {}),
        ais_levels=ais_levels,
        dtype=check_dtype(dtype, owner),
        init=init,
        until_converged=until_converged,
        budget=budget,
    )
    if guide not in GUIDES:
        raise ValueError(f"{owner}: unknown guide {guide!r}; expected one of {sorted(GUIDES)}")
    if init not in ("pathfinder", "feasible"):
        raise ValueError(f"{owner}: expected init 'pathfinder' or 'feasible', got {init!r}")
    check_continuous_model(model)
    potential = Potential(model)
    potential.check_inferable(owner)
    if not potential.subsampled:
        return GUIDES[guide].fit(model, opts)
    plates = ", ".join(f"{k!r} ({b} of {n})" for k, (n, b) in potential.subsampled.items())
    if guide not in SUBSAMPLING_GUIDES:
        raise ValueError(
            f"{owner}: the model subsamples the plate {plates}, so its log density is a "
            f"mini-batch estimate, which guide {guide!r} cannot use; use one of "
            f"{list(SUBSAMPLING_GUIDES)}"
        )
    # mini-batches: SVI only (no Pathfinder, annealing or NeuTra, which need exact densities),
    # all the steps, the parameters averaged over the second half (noisy gradients); auto
    # takes lr 0.05 at least: from the feasible start a posterior sd 70 times below the
    # prior's was reached in 3000 steps (sd ratio 1.01; 2.7 at lr 0.01)
    lr = max(opts.lr, 0.05) if guide == "auto" else opts.lr
    opts = opts.but(init="feasible", until_converged=False, average=True, lr=lr)
    fit = GUIDES["flow" if guide == "auto" else guide].fit(model, opts)
    fit.extra.update(subsampled=dict(potential.subsampled),
                     method=f"{fit.name} (mini-batches)")
    return fit
