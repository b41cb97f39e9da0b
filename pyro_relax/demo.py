"""The two experiments behind ``pyro-relax demo`` (they return rows; the CLI prints them)."""

from __future__ import annotations

__all__ = ["density_demo", "inference_demo"]

import time
from typing import Any

import torch
from torch import Tensor


def density_demo(steps: int = 600, seed: int = 0, progress: bool = False) -> list[dict[str, Any]]:
    """Fit a plain spline flow and a SurVAE abs flow (same parameter count) to sign-symmetric data.

    Returns one row per model: name, parameter count, test log-likelihood (nats), seconds.
    """
    import pyro.distributions.transforms as T

    from pyro_relax import datasets
    from pyro_relax.distributions import Flow
    from pyro_relax.infer.density import count_parameters, evaluate_nll, fit_density
    from pyro_relax.surjections import AbsSurjection
    from pyro_relax.transforms.stacks import coupling_stack

    train = datasets.sign_symmetric(4000, seed=seed)
    test = datasets.sign_symmetric(2000, seed=seed + 1)
    variants = {
        "plain spline flow": lambda: coupling_stack(2, 4, 32),
        "SurVAE abs flow": lambda: (
            coupling_stack(2, 4, 32) + [T.SoftplusTransform(), AbsSurjection()]
        ),
    }
    rows = []
    for name, make in variants.items():
        torch.manual_seed(seed)
        flow = Flow((2,), make())
        start = time.perf_counter()
        fit_density(flow, train, steps=steps, batch_size=256, lr=3e-3, seed=seed, progress=progress)
        rows.append(
            {
                "model": name,
                "params": count_parameters(flow),
                "test_loglik": -evaluate_nll(flow, test),
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def inference_demo(
    seed: int = 0, progress: bool = False, guide_steps: int = 1000
) -> list[dict[str, Any]]:
    """Centered eight schools (a funnel): Pyro NUTS against our guides and kernels.

    The methods: Pyro NUTS, our flow guide, that flow with annealed importance
    sampling, and the flow-IMH kernel.

    Returns one row per method: wall time, posterior mean and sd of ``mu`` and
    ``log tau``, bulk ESS per second of the hardest parameter, and k-hat where
    the method has importance weights.
    """
    import numpy as np

    from pyro_relax.diagnostics import psis_expectation, summarize, weighted_report
    from pyro_relax.infer.guides import AutoSNFGuide
    from pyro_relax.infer.runner import fit_guide, guide_draws, run_mcmc
    from pyro_relax.models import eight_schools_centered as model

    rows = []

    def moments(values: Tensor, log_w: Tensor | None) -> tuple[float, float]:
        if log_w is None:
            return float(values.mean()), float(values.std())
        mean = float(psis_expectation(values, log_w))
        return mean, float(np.sqrt(max(float(psis_expectation(values**2, log_w)) - mean**2, 0)))

    def row(
        name: str, samples: dict, seconds: float, log_w: Tensor | None = None, **extra: object
    ) -> None:
        # samples are grouped by chain: (chains, draws, ...); IS draws come with log_w
        flat = {k: v.reshape((-1,) + v.shape[2:]).numpy() for k, v in samples.items()}
        if log_w is None:  # MCMC: bulk ESS of the hardest parameter
            ess = float(np.nanmin(summarize(flat)["ess_bulk"]))
        else:  # weighted draws: the importance-sampling ESS, not the number of draws
            report = weighted_report(log_w)
            ess = report["ess"]
            extra = {"khat": report["khat"], "verdict": report["verdict"], **extra}
        rows.append(
            {
                "method": name,
                "seconds": seconds,
                "mu": moments(flat["mu"], log_w),
                "log_tau": moments(np.log(flat["tau"]), log_w),
                "ess_per_s": ess / seconds,
                **extra,
            }
        )

    nuts = run_mcmc(model, "nuts", num_samples=500, warmup_steps=500, seed=seed, progress=progress)
    row("Pyro NUTS", nuts.samples, nuts.seconds, divergences=_divergences(nuts.mcmc))
    fit = fit_guide(model, "flow", steps=guide_steps, seed=seed, progress=progress)
    start = time.perf_counter()
    samples, log_w = guide_draws(fit, model, 1000)
    seconds = fit.seconds + time.perf_counter() - start
    row("flow guide (IS)", {k: v.unsqueeze(0) for k, v in samples.items()}, seconds, log_w)
    start = time.perf_counter()
    ais = AutoSNFGuide.from_flow_guide(fit.guide, levels=10)
    samples, log_w = ais.importance_weights(1000)
    seconds = fit.seconds + time.perf_counter() - start
    row("flow + AIS (IS)", {k: v.unsqueeze(0) for k, v in samples.items()}, seconds, log_w)
    imh = run_mcmc(
        model,
        "flow-imh",
        num_samples=1000,
        warmup_steps=200,
        seed=seed,
        progress=progress,
        guide=fit,
    )
    row("flow-IMH kernel", imh.samples, imh.seconds)
    return rows


def _divergences(mcmc: object) -> int:
    try:
        return int(sum(len(v) for v in mcmc.diagnostics()["divergences"].values()))
    except (KeyError, TypeError, AttributeError):
        return -1
