"""The named MCMC kernels behind ``pyro-relax mcmc``: their table and :func:`run_mcmc`.

Each entry of :data:`KERNELS` builds its kernel from the model (and, for the
guide-based kernels, a fitted flow guide); :func:`run_mcmc` fits that guide
when none is given, runs ``pyro.infer.MCMC`` and returns the draws by chain.
"""

from __future__ import annotations

__all__ = ["KERNELS", "KernelMethod", "pathfinder_preconditioner", "run_mcmc"]

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor

from pyro_relax.core.checks import check_int
from pyro_relax.infer.guides.layout import check_continuous_model
from pyro_relax.infer.model import Potential
from pyro_relax.infer.runner.common import (
    FitOptions,
    FitResult,
    McmcResult,
    run_pathfinder,
    to_dtype,
    with_annealing,
)
from pyro_relax.infer.runner.svi import fit_svi, make_flow_guide

SampleMap = Callable[[dict[str, Tensor]], dict[str, Tensor]]
"""Maps flat draws ``{site: (n, ...)}`` of a kernel's own sites back to the model's sites."""
KernelBuilder = Callable[
    [Callable[[], Any], "FitResult | None", int], tuple[MCMCKernel, "SampleMap | None"]
]
"""``(model, fit, seed) -> (kernel, back)``: builds a kernel; ``back`` maps its draws or is None."""


@dataclass(frozen=True)
class KernelMethod:
    """One entry of :data:`KERNELS`.

    Arguments:
        description: the one-line help of the method (the CLI shows it).
        build: ``(model, fit, seed) -> (kernel, back)``.
        proposal: ``None``, ``"flow"`` (the kernel needs a fitted flow guide) or
            ``"flow-ais"`` (the flow guide followed by annealed importance sampling).
    """

    description: str
    build: KernelBuilder
    proposal: str | None = None


@contextmanager
def _chain_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Torch's default dtype set to ``dtype`` for one chain's run (``None``: left alone)."""
    if dtype is None:
        yield
        return
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def pathfinder_preconditioner(
    model: Callable[[], Any], seed: int
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Pathfinder's mean and marginal variances per site, in the unconstrained space.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> loc, var = pathfinder_preconditioner(lambda: pyro.sample("x", dist.Normal(1.0, 2.0)), 0)
        >>> round(float(loc["x"]), 2), round(float(var["x"]), 1)
        (1.0, 4.0)
    """
    potential = Potential(model)
    pf = run_pathfinder(potential, seed, torch.float64)
    dtypes = {s.name: s.dtype for s in potential.sites}  # the chain runs in the model's dtypes
    var = pf.variance
    loc = {k: u.detach().to(dtypes[k]) for k, u in potential.unpack(pf.loc).items()}
    scale = {k: u.detach().to(dtypes[k]) for k, u in potential.unpack(var).items()}
    return loc, scale


def _nuts(model: Callable[[], Any], fit: FitResult | None, seed: int) -> tuple[MCMCKernel, None]:
    return NUTS(model), None


def _mala(model: Callable[[], Any], fit: FitResult | None, seed: int) -> tuple[MCMCKernel, None]:
    from pyro_relax.infer.kernels import MALA

    loc, var = pathfinder_preconditioner(model, seed)
    kernel = MALA(model, init_inverse_mass=var)
    kernel.initial_params = loc
    return kernel, None


def _imh(model: Callable[[], Any], fit: FitResult | None, seed: int) -> tuple[MCMCKernel, None]:
    from pyro_relax.infer.kernels import FlowIMH

    assert fit is not None
    return FlowIMH(fit.guide, model), None


def _neutra(
    model: Callable[[], Any], fit: FitResult | None, seed: int
) -> tuple[MCMCKernel, SampleMap]:
    from pyro_relax.infer.kernels import NeuTraNUTS

    assert fit is not None
    nt = NeuTraNUTS(fit.guide, model)
    return nt.kernel, nt.transform_samples


KERNELS: dict[str, KernelMethod] = {
    "nuts": KernelMethod("Pyro's NUTS", _nuts),
    "mala": KernelMethod("MALA started at Pathfinder's mode, preconditioned by its covariance",
                         _mala),
    "flow-imh": KernelMethod("independence MH with the flow guide as proposal", _imh, "flow"),
    "ais-imh": KernelMethod("independence MH with the flow + AIS proposal", _imh, "flow-ais"),
    "neutra": KernelMethod("NUTS in the flow guide's base space (NeuTra)", _neutra, "flow"),
}
"""The kernels of :func:`run_mcmc` by name (the CLI offers exactly these)."""


def run_mcmc(
    model: Callable[[], Any],
    kernel: str = "nuts",
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 1,
    seed: int = 0,
    progress: bool = True,
    guide_steps: int = 2000,
    guide: FitResult | None = None,
) -> McmcResult:
    """Run a kernel through ``pyro.infer.MCMC``; guide-based kernels fit an ``AutoFlowGuide`` first.

    ``"flow-imh"`` proposes from the flow guide; ``"ais-imh"`` from the flow
    followed by annealed importance sampling in its base space
    (:meth:`~pyro_relax.infer.guides.AutoSNFGuide.from_flow_guide`), whose exact
    path weights keep the chain exact and whose lighter-tailed weights let it
    mix where the flow alone sticks (centered eight schools: ESS 203 against 2
    from 500 draws).

    Returns draws grouped by chain; the time includes the guide's training
    (pass an already fitted ``guide`` to reuse it: its training time is added).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> run_mcmc(model, "mala", 20, 20, progress=False).samples["x"].shape
        torch.Size([1, 20])
    """
    for name, v, lowest in (
        ("num_samples", num_samples, 1),
        ("warmup_steps", warmup_steps, 0),
        ("num_chains", num_chains, 1),
    ):
        check_int(v, name, "run_mcmc", lowest)
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {list(KERNELS)}")
    method = KERNELS[kernel]
    sites = check_continuous_model(model)
    subsampled = Potential(model).subsampled
    if subsampled:
        raise ValueError(
            f"run_mcmc: the model subsamples the plate(s) {sorted(subsampled)}; a kernel needs "
            "the exact log density: give the plate no subsample_size, or fit a guide on "
            "mini-batches (fit_guide / pyro-relax fit with auto, flow, normal, mvn or iaf)"
        )
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    fit = None
    if method.proposal is not None:
        if guide is None:
            opts = FitOptions(steps=check_int(guide_steps, "guide_steps", "run_mcmc", 1),
                              seed=seed, progress=progress)
            fit = fit_svi(model, opts, name="flow", make=make_flow_guide, whitened=True)
        else:
            fit = guide
            start -= fit.seconds
        if method.proposal == "flow-ais" and fit.name != "flow-ais":
            fit = with_annealing(fit, 10, f"run_mcmc: {kernel}")
        extra["guide_final_elbo"] = fit.elbo[-1]
        extra["guide_seconds"] = fit.seconds
    # a guide-based kernel's chain runs in the guide's dtype (float64: NeuTra's NUTS in
    # float32 adapted tiny steps and hit its tree depth); torch's default dtype is set for
    # the run only and restored on return or error; the draws come in the caller's dtype
    out_dtype = torch.get_default_dtype()
    pyro.set_rng_seed(seed)
    with _chain_dtype(fit.dtype if fit is not None else None):
        k, back = method.build(model, fit, seed)
        mcmc = MCMC(k, num_samples=num_samples, warmup_steps=warmup_steps,
                    num_chains=num_chains, disable_progbar=not progress)
        mcmc.run()
    samples = mcmc.get_samples(group_by_chain=True)
    if back is not None:
        flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in samples.items()}
        samples = {k: v.reshape((num_chains, num_samples) + v.shape[1:])
                   for k, v in back(flat).items()}
    samples = {k: v for k, v in to_dtype(samples, out_dtype).items() if k in sites}
    return McmcResult(samples, time.perf_counter() - start, kernel, extra, mcmc)
