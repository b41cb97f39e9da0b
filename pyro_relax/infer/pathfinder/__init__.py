"""Pathfinder: parallel quasi-Newton variational inference (Zhang et al. 2022).

:func:`pathfinder` runs on any vectorized log density; :func:`pathfinder_for_model`
on a zero-argument Pyro model's unconstrained posterior. Both return a
:class:`PathfinderResult` whose ``loc`` and ``scale_tril`` are the best single
Gaussian (the whitening affine map ``loc + scale_tril @ u``) and whose ``draws``
are PSIS-resampled from the paths' pooled approximations.

Layout: :mod:`~pyro_relax.infer.pathfinder.lbfgs` (line search, inverse-Hessian
factors), :mod:`~pyro_relax.infer.pathfinder.gaussian` (approximations, ELBO),
:mod:`~pyro_relax.infer.pathfinder.path` (one path),
:mod:`~pyro_relax.infer.pathfinder.api` (multi-path, PSIS, the result),
:mod:`~pyro_relax.infer.pathfinder.model` (Pyro models).
"""

from pyro_relax.infer.pathfinder.api import PathfinderResult, pathfinder
from pyro_relax.infer.pathfinder.gaussian import Gaussian
from pyro_relax.infer.pathfinder.model import pathfinder_for_model
from pyro_relax.infer.pathfinder.path import PathInfo

__all__ = ["Gaussian", "PathInfo", "PathfinderResult", "pathfinder", "pathfinder_for_model"]
