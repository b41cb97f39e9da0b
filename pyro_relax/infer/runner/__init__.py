"""High-level runs behind the ``pyro-relax`` command: fit a named guide, run a named kernel.

Nothing here parses arguments or writes files (that is :mod:`pyro_relax.cli`);
each function returns tensors and numbers. The method tables :data:`GUIDES`
and :data:`KERNELS` map each name to its one-line description and the function
that runs it; :func:`fit_guide` and :func:`run_mcmc` dispatch through them, and
the CLI offers exactly their names.

* :mod:`~pyro_relax.infer.runner.common`: :class:`FitOptions`, :class:`FitResult`,
  :func:`guide_draws`, Pathfinder and the AIS wrapper shared by all runs;
* :mod:`~pyro_relax.infer.runner.svi`: the fits of the named guides;
* :mod:`~pyro_relax.infer.runner.auto`: ``guide="auto"`` (:func:`fit_auto`);
* :mod:`~pyro_relax.infer.runner.mcmc`: :data:`KERNELS` and :func:`run_mcmc`;
* :mod:`~pyro_relax.infer.runner.api`: :data:`GUIDES`, :func:`fit_guide`, :func:`make_guide`.
"""

from pyro_relax.infer.guides.base import DTYPES, check_dtype
from pyro_relax.infer.guides.layout import check_continuous_model
from pyro_relax.infer.runner.api import GUIDES, GuideMethod, fit_guide, make_guide
from pyro_relax.infer.runner.auto import DrawsGuide, fit_auto
from pyro_relax.infer.runner.common import (
    FitOptions,
    FitResult,
    McmcResult,
    PathfinderGuide,
    guide_draws,
    run_pathfinder,
    with_annealing,
)
from pyro_relax.infer.runner.mcmc import KERNELS, KernelMethod, pathfinder_preconditioner, run_mcmc

__all__ = [
    "DTYPES",
    "GUIDES",
    "KERNELS",
    "DrawsGuide",
    "FitOptions",
    "FitResult",
    "GuideMethod",
    "KernelMethod",
    "McmcResult",
    "PathfinderGuide",
    "check_continuous_model",
    "check_dtype",
    "fit_auto",
    "fit_guide",
    "guide_draws",
    "make_guide",
    "pathfinder_preconditioner",
    "run_mcmc",
    "run_pathfinder",
    "with_annealing",
]
