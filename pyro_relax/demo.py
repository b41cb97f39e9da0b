"""The two experiments behind ``pyro-relax demo``: they return rows, the tables format them."""

from __future__ import annotations

__all__ = ["density_demo", "density_table", "inference_demo", "inference_table"]

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
    seed: int = 0, progress: bool = False, budget: float = 60.0
) -> list[dict[str, Any]]:
    """Centered eight schools (a funnel): the default method, ``auto``, beside Pyro NUTS.

    ``auto`` is ``fit_guide(model, "auto")`` (what ``pyro-relax fit`` runs by
    default): Pathfinder, a flow, PSIS k-hat, and annealing or NeuTra NUTS when
    k-hat says the flow is not enough. Its row carries its verdict whole:
    ``khat``, ``verdict``, ``stage`` (the stage whose draws are the answer) and
    ``advice`` when unreliable.

    Arguments:
        seed: the seed of both methods.
        progress: show progress bars.
        budget: seconds after which ``auto`` starts no further escalation.

    Returns:
        One row per method: wall time, posterior mean and sd of ``mu`` and
        ``log tau``, and bulk ESS (or importance-sampling ESS) per second.
    """
    import numpy as np

    from pyro_relax._progress import interactive
    from pyro_relax.diagnostics import psis_expectation, summarize, weighted_report
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
            ess = weighted_report(log_w)["ess"]
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

    fit = fit_guide(model, "auto", seed=seed, progress=progress, budget=budget)
    start = time.perf_counter()
    samples, log_w = guide_draws(fit, model, 1000)
    seconds = fit.seconds + time.perf_counter() - start
    verdict = {k: fit.extra[k] for k in ("khat", "verdict", "advice") if k in fit.extra}
    verdict["stage"] = fit.extra.get("method")
    weights = None if fit.extra.get("method") == "neutra" else log_w  # NeuTra: equal weights
    if "khat" not in verdict and weights is not None:  # as pyro-relax fit reports it
        report = weighted_report(weights)
        verdict.update(khat=report["khat"], verdict=report["verdict"])
    row("auto (the default)", {k: v.unsqueeze(0) for k, v in samples.items()}, seconds,
        weights, **verdict)
    nuts = run_mcmc(model, "nuts", num_samples=500, warmup_steps=500, seed=seed,
                    progress=progress and interactive())  # Pyro's own bar: none in a log
    row("Pyro NUTS", nuts.samples, nuts.seconds, divergences=_divergences(nuts.mcmc))
    return rows


def _divergences(mcmc: object) -> int:
    try:
        return int(sum(len(v) for v in mcmc.diagnostics()["divergences"].values()))
    except (KeyError, TypeError, AttributeError):
        return -1


def density_table(rows: list[dict[str, Any]]) -> str:
    """The density part's table, one line per model.

    Example:
        >>> print(density_table([{"model": "flow", "params": 10, "test_loglik": -2.0,
        ...                       "seconds": 1.0}]))  # doctest: +NORMALIZE_WHITESPACE
        model    params   test log-lik (nats)   time (s)
        flow         10                -2.000        1.0
    """
    lines = [f"{'model':<20} {'params':>7} {'test log-lik (nats)':>20} {'time (s)':>9}"]
    lines += [f"{r['model']:<20} {r['params']:>7d} {r['test_loglik']:>20.3f} {r['seconds']:>9.1f}"
              for r in rows]
    return "\n".join(lines)


def inference_table(rows: list[dict[str, Any]]) -> str:
    """The posterior part's table (under 100 columns), then auto's verdict whole.

    A row with a ``verdict`` (``auto``'s) shows its k-hat and verdict; when
    unreliable, its advice follows the table, as does the stage whose draws
    are the answer when that is not the flow.

    Example:
        >>> row = {"method": "auto (the default)", "seconds": 2.0, "mu": (4.4, 3.3),
        ...        "log_tau": (0.9, 1.0), "ess_per_s": 300.0, "khat": 0.41,
        ...        "verdict": "good", "stage": "flow"}
        >>> inference_table([row]).splitlines()[1].endswith("  k-hat 0.41 (good)")
        True
    """
    lines = [f"{'method':<18} {'time (s)':>8} {'mu mean (sd)':>15} {'log tau mean (sd)':>18} "
             f"{'ESS/s':>7}  verdict"]
    notes = []
    for r in rows:
        if "verdict" in r:
            khat = r.get("khat")
            verdict = f"k-hat {khat:.2f} ({r['verdict']})" if khat is not None else r["verdict"]
            stage = r.get("stage")
            if stage not in (None, "flow"):
                notes.append(f"{r['method']}: the answer comes from its {stage} stage")
            if r["verdict"] == "unreliable":
                notes.append(f"{r['method']}: unreliable; {r.get('advice') or 'see its advice'}")
        else:
            divergences = r.get("divergences", -1)
            verdict = f"MCMC, {divergences} divergences" if divergences >= 0 else "MCMC"
        mu, log_tau = (f"{r[k][0]:.2f} ({r[k][1]:.2f})" for k in ("mu", "log_tau"))
        lines.append(f"{r['method']:<18} {r['seconds']:>8.1f} {mu:>15} {log_tau:>18} "
                     f"{r['ess_per_s']:>7.1f}  {verdict}")
    return "\n".join(lines + ([""] + notes if notes else []))
