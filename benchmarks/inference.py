"""Benchmark: posterior inference with pyro-relax guides and kernels against Pyro's.

Targets: Neal's funnel (d = 10, exact reference from ``NealFunnel.sample``), the
40-mode 2-D Gaussian mixture (exact samples of ``GaussianMixture40``) and the
13 posteriordb posteriors of ``examples/posteriordb`` (10000 Stan reference
draws). Methods: Pyro ``NUTS`` (``nuts``, diagonal mass, through ``run_mcmc``;
``nuts-dense``, dense mass in float64 with a wall-time cap, see
``_inference_nuts.py``), Pyro's ``AutoIAFNormal`` (``iaf``),
``AutoMultivariateNormal`` (``mvn``) and ``AutoDiagonalNormal`` (``normal``),
our guides (``auto``, ``pathfinder``, ``flow``, ``flow-ais``, ``snf``,
``diffusion``) and kernels (``mala``, ``flow-imh``, ``ais-imh``, ``neutra``; the
last three train an ``AutoFlowGuide`` first, included in the time).

Per target and method: wall and CPU seconds (training included), an ESS (MCMC
and ``auto`` ending in NeuTra: the smallest bulk ESS over all scalar
components, ArviZ; guides: the Kish ESS of the PSIS-smoothed importance
weights of ``--draws`` draws), ESS per second, the PSIS k-hat (guides), and the
largest errors over components of the mean (``|mean - ref_mean| / ref_sd``)
and of the sd (``|sd / ref_sd - 1|``); guide moments are PSIS-reweighted.
``--goal`` runs issue 9's comparison (the funnel and the 13 posteriors x
``GOAL_METHODS``) and prints its goal lines (``_inference_goal.py``). Run
``python benchmarks/inference.py [--quick] [--goal] [--only funnel,kidiq]
[--methods auto,nuts-dense] [--json out.json [--overwrite]]`` or
``--merge a.json b.json --json all.json``.
"""

from __future__ import annotations

__all__ = ["GOAL_METHODS", "METHODS", "TARGETS", "Budget", "funnel10", "main", "run_case"]

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from _common import Column, parallel_map, print_table, write_json  # noqa: E402
from _inference_goal import goal13_report, reference_nuts  # noqa: E402

METHODS = (
    "auto", "pathfinder", "mvn", "normal", "iaf", "flow", "flow-ais", "snf", "diffusion",
    "nuts", "nuts-dense", "mala", "flow-imh", "ais-imh", "neutra",
)
PYRO_METHODS = ("nuts", "nuts-dense", "iaf", "mvn", "normal")
GUIDE_METHODS = ("pathfinder", "mvn", "normal", "iaf", "flow", "flow-ais", "snf", "diffusion")
# the goal run of issue 9: cheap methods first, so a cut run keeps them
GOAL_METHODS = ("pathfinder", "mvn", "iaf", "flow-ais", "auto", "nuts-dense")
POSTERIORS = (
    "arK", "earnings", "eight_schools_centered", "eight_schools_noncentered", "garch11",
    "gp_pois_regr", "hmm_drive", "kidiq", "kilpisjarvi", "low_dim_gauss_mix", "mesquite",
    "nes1976", "sblri",
)
# the larger hierarchical posteriors of issue 20 (Stan references, 4 x 1000 draws)
HIERARCHICAL = ("pilots", "seeds", "glmm1", "mh", "butterfly", "hierarchical_gp")
TARGETS = ("funnel", "gmm40", *POSTERIORS, *HIERARCHICAL)
N_REFERENCE = 10000


@dataclasses.dataclass(frozen=True)
class Budget:
    """Step counts of one run (the same for every target)."""

    guide_steps: int = 2000
    particles: int = 8
    lr: float = 0.01
    draws: int = 2000
    mcmc_samples: int = 500
    mcmc_warmup: int = 500
    auto_steps: int = 3000  # the most; auto stops when the ELBO stalls
    auto_budget: float = 300.0  # seconds after which auto starts no further stage
    auto_check: int = 1000  # draws per k-hat check of auto (and NeuTra's draws)
    nuts_cap: float = 900.0  # wall seconds of one nuts-dense chain


DEFAULT = Budget()
QUICK = Budget(guide_steps=20, particles=2, draws=200, mcmc_samples=30, mcmc_warmup=20,
               auto_steps=20, auto_budget=2.0, auto_check=60, nuts_cap=20.0)


def _gmm_model() -> Callable[[], None]:
    from pyro_relax.targets import GaussianMixture40

    target = GaussianMixture40()

    def gmm40() -> None:
        zero = torch.zeros(2, dtype=torch.get_default_dtype())
        x = pyro.sample("x", dist.Normal(zero, 100.0).to_event(1).mask(False))
        pyro.factor("t", target.log_prob(x))

    return gmm40


def funnel10() -> None:
    """Neal's funnel (d = 10, scale 3) as ``pyro_relax.models.funnel``, vectorized over particles.

    ``pyro_relax.models.funnel`` expands the scale to ``(9,)``, which fails for a
    batch of ``v`` (the guides then fall back to a slow loop over draws); here the
    scale gets a trailing axis instead. Same density.
    """
    zero = torch.zeros((), dtype=torch.get_default_dtype())
    v = pyro.sample("v", dist.Normal(zero, 3.0))
    scale = torch.exp(v / 2).unsqueeze(-1).expand(v.shape + (9,))
    pyro.sample("x", dist.Normal(torch.zeros_like(scale), scale).to_event(1))


def _flat(values: dict[str, np.ndarray], lead: int) -> dict[str, np.ndarray]:
    """Split every site into scalar components ``name[i]`` (the first ``lead`` axes are draws)."""
    out = {}
    for k, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        flat = v.reshape(v.shape[:lead] + (-1,))
        if v.ndim == lead:
            out[k] = v
        else:
            for i in range(flat.shape[-1]):
                out[f"{k}[{i}]"] = flat[..., i]
    return out


def load_target(
    name: str,
) -> tuple[Callable[[], None], Callable[[dict], dict], dict[str, np.ndarray]]:
    """The model, a map from site draws to named scalars, and the reference draws."""
    torch.manual_seed(12345)
    if name == "funnel":
        from pyro_relax.targets import NealFunnel

        ref = NealFunnel(dim=10).sample((N_REFERENCE,)).double().numpy()
        reference = _flat({"v": ref[:, 0], "x": ref[:, 1:]}, 1)
        return funnel10, lambda s: s, reference
    if name == "gmm40":
        from pyro_relax.targets import GaussianMixture40

        reference = _flat({"x": GaussianMixture40().sample((N_REFERENCE,)).double().numpy()}, 1)
        return _gmm_model(), lambda s: s, reference
    from examples.posteriordb import load_model
    from pyro_relax.testing.posteriordb import load_reference_draws

    module = load_model(name)
    return module.model, module.to_reference_names, load_reference_draws(module.NAME)


def _errors(
    mean: dict[str, float], sd: dict[str, float], reference: dict[str, np.ndarray]
) -> tuple[float, float]:
    mean_err, sd_err = 0.0, 0.0
    for k, ref in reference.items():
        rs = float(ref.std(ddof=1))
        mean_err = max(mean_err, abs(mean[k] - float(ref.mean())) / rs)
        sd_err = max(sd_err, abs(sd[k] / rs - 1.0))
    return mean_err, sd_err


def _acceptance(values: dict[str, np.ndarray]) -> float:
    """Fraction of iterations where the state changed (all components jointly)."""
    stacked = np.stack([v.reshape(-1) for v in values.values()], axis=-1)
    return float(np.any(np.diff(stacked, axis=0) != 0, axis=-1).mean())


def _weighted(values: dict[str, np.ndarray], log_w: torch.Tensor) -> dict[str, Any]:
    """PSIS k-hat, ESS (Kish ESS of the PSIS-smoothed weights) and corrected moments."""
    from pyro_relax.diagnostics import importance_ess, psis_expectation, psis_khat

    lw = log_w.detach().double()
    if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        raise FloatingPointError("non-finite log importance weights (NaN or +inf)")
    smoothed, khat = psis_khat(lw)
    mean = {k: float(psis_expectation(v, lw)) for k, v in values.items()}
    sd = {k: math.sqrt(max(float(psis_expectation(v * v, lw)) - mean[k] ** 2, 0.0))
          for k, v in values.items()}
    return {"khat": float(khat), "ess": float(importance_ess(smoothed)),
            "ess_kish_raw": float(importance_ess(lw)), "mean": mean, "sd": sd}


def _chain(values: dict[str, np.ndarray]) -> dict[str, Any]:
    """Smallest bulk ESS (ArviZ) over scalar components of ``(chains, draws)`` arrays, moments."""
    import arviz as az

    # A chain that never moves has one effective draw (ArviZ reports n or NaN for it).
    per = [float(az.ess(v, method="bulk")) if np.ptp(v) > 0 else 1.0 for v in values.values()]
    return {"ess": min(e if math.isfinite(e) else 1.0 for e in per),
            "accept_rate": _acceptance(values),
            "mean": {k: float(v.mean()) for k, v in values.items()},
            "sd": {k: float(v.std(ddof=1)) for k, v in values.items()}}


def _fit(model: Callable[[], None], method: str, budget: Budget, seed: int) -> Any:
    from pyro_relax.infer.runner import fit_guide

    if method == "auto":
        from pyro_relax.infer.auto import fit_auto

        return fit_auto(model, seed=seed, progress=False, lr=budget.lr,
                        num_particles=budget.particles, max_steps=budget.auto_steps,
                        budget=budget.auto_budget, num_check=budget.auto_check)
    return fit_guide(model, method, steps=budget.guide_steps, lr=budget.lr, seed=seed,
                     num_particles=budget.particles, progress=False)


def _run_guide(model: Callable[[], None], to_names: Callable[[dict], dict], method: str,
               budget: Budget, seed: int) -> dict[str, Any]:
    from pyro_relax.infer.runner import guide_draws

    start = time.perf_counter()
    fit = _fit(model, method, budget, seed)
    samples, log_w = guide_draws(fit, model, budget.draws)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"seconds": seconds, "final_elbo": fit.elbo[-1] if fit.elbo else None,
                           "stages": [{k: v for k, v in st.items() if k != "notes"}
                                      for st in fit.stages]}
    if method == "auto":
        out["auto_method"] = fit.extra["method"]
        out["verdict"] = fit.extra["verdict"]
    if method == "auto" and fit.extra["method"] == "neutra":
        # equally weighted NeuTra NUTS draws: the chain's bulk ESS; k-hat is the flow's
        # (the best importance sampler tried before NeuTra), the weights being all 0
        values = _flat(to_names({k: v.unsqueeze(0) for k, v in fit.guide.samples.items()}), 2)
        stats = _chain(values)
        stats["khat"] = float(fit.extra["khat"])
    else:
        stats = _weighted(_flat(to_names(samples), 1), log_w)
    out.update(stats)
    return out


def _run_kernel(model: Callable[[], None], to_names: Callable[[dict], dict], method: str,
                budget: Budget, seed: int) -> dict[str, Any]:
    from pyro_relax.infer.runner import fit_guide, run_mcmc

    if method == "nuts-dense":
        from _inference_nuts import run_nuts

        res = run_nuts(model, budget.mcmc_samples, budget.mcmc_warmup, seed, cap=budget.nuts_cap)
        out = {"seconds": res.seconds, "draws": res.draws, "capped": res.capped,
               "step_size": res.step_size}
        out.update(_chain(_flat(to_names(dict(res.samples)), 2)))
        return out
    pre = None
    if method in ("flow-imh", "ais-imh", "neutra"):  # the "flow" row's flow guide
        pre = fit_guide(model, "flow", steps=budget.guide_steps, lr=budget.lr, seed=seed,
                        num_particles=budget.particles, progress=False)
    res = run_mcmc(model, method, guide=pre, num_samples=budget.mcmc_samples,
                   warmup_steps=budget.mcmc_warmup, num_chains=1, seed=seed,
                   progress=False, guide_steps=budget.guide_steps)
    out = {"seconds": res.seconds}
    out.update(_chain(_flat(to_names(dict(res.samples)), 2)))
    return out


def run_case(target: str, method: str, budget: Budget, seed: int = 0) -> dict[str, Any]:
    """Run one method on one target; return the row of the table (errors as ``"error"``).

    Guides (``auto`` included) are timed from the start of the fit to the last
    of ``budget.draws`` weighted draws; their moments are PSIS-corrected.
    """
    row: dict[str, Any] = {"target": target, "method": method, "seed": seed}
    model, to_names, reference = load_target(target)
    cpu = time.process_time()
    try:
        if method in GUIDE_METHODS or method == "auto":
            out = _run_guide(model, to_names, method, budget, seed)
        else:
            out = _run_kernel(model, to_names, method, budget, seed)
        mean, sd = out.pop("mean"), out.pop("sd")
        row.update(out)
        row["mean_err"], row["sd_err"] = _errors(mean, sd, reference)
        row["ess_per_s"] = row["ess"] / row["seconds"]
        # CPU seconds of this process (one torch thread): the wall time it would take on an
        # idle core, robust to other jobs loading the machine
        row["cpu_seconds"] = time.process_time() - cpu
        row["ess_per_cpu_s"] = row["ess"] / row["cpu_seconds"]
    except (FloatingPointError, ValueError, RuntimeError, TimeoutError) as err:
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    print(f"  {target:26s} {method:10s} " + (row.get("error") or
          f"{row['seconds']:.1f}s ESS {row['ess']:.0f} k-hat {row.get('khat', math.nan):.2f} "
          f"mean_err {row['mean_err']:.2f} sd_err {row['sd_err']:.2f}"), flush=True)
    return row


COLUMNS = [
    Column("target", "target"), Column("method", "method"), Column("seed", "seed"),
    Column("seconds", "s", ".1f"),
    Column("cpu_seconds", "cpu s", ".1f"),
    Column("ess", "ESS", ".0f"), Column("ess_per_s", "ESS/s", ".2f"),
    Column("ess_per_cpu_s", "ESS/cpu s", ".2f"),
    Column("khat", "k-hat", ".2f"), Column("accept_rate", "moved", ".2f"),
    Column("auto_method", "auto's answer"), Column("capped", "capped"),
    Column("mean_err", "max|dmean|/sd", ".3f"), Column("sd_err", "max|sd/ref-1|", ".3f"),
    Column("error", "error"),
]


def _median_rows(rows: list[dict[str, Any]], target: str) -> dict[str, dict[str, float]]:
    """Per method on ``target``: the median over seeds of ESS/s, k-hat and the errors.

    A seed that raised counts as a failure: a method with any failed seed is left out.
    """
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in rows if r["target"] == target):
        mine = [r for r in rows if r["target"] == target and r["method"] == method]
        if any("error" in r for r in mine):
            continue
        out[method] = {
            key: float(np.median([r.get(key, math.inf) for r in mine]))
            for key in ("ess_per_s", "khat", "mean_err", "sd_err")
        }
        out[method]["seeds"] = len(mine)
    return out


def goal_report(rows: list[dict[str, Any]]) -> list[str]:
    """Lines on the issue's goal: >= 3x NUTS ESS/s and k-hat < 0.7 where IAF has >= 0.7.

    With several seeds every number is the median over seeds. Speed counts only
    for a method whose means are right (median max error within 0.3 reference sd).
    """
    lines, ref = [], reference_nuts(rows)
    for target in ("funnel", "eight_schools_centered"):
        by = _median_rows(rows, target)
        ours = {m: r for m, r in by.items() if m not in PYRO_METHODS and r["mean_err"] < 0.3}
        if ref in by and ours:
            nuts = max(by[ref]["ess_per_s"], 1e-12)
            best = max(ours, key=lambda m: ours[m]["ess_per_s"])
            ratio = ours[best]["ess_per_s"] / nuts
            lines.append(f"{target}: best ours (mean err < 0.3 sd) {best} at {ratio:.2f}x "
                         f"NUTS ESS/s ({'met' if ratio >= 3 else 'not met'})")
        if "iaf" in by:
            good = {m: r for m, r in ours.items() if r["khat"] < 0.7}
            both = [m for m, r in good.items()
                    if ref in by and r["ess_per_s"] >= 3 * by[ref]["ess_per_s"]]
            shown = ", ".join(f"{m} {r['khat']:.2f}" for m, r in good.items()) or "none"
            met = both and by["iaf"]["khat"] >= 0.7
            lines.append(f"{target}: IAF k-hat {by['iaf']['khat']:.2f}; ours below 0.7: {shown}; "
                         f"goal (IAF >= 0.7, ours < 0.7 and >= 3x NUTS): "
                         f"{'met by ' + ', '.join(both) if met else 'not met'}")
    return lines


def _names(text: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if text is None:
        return allowed
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise SystemExit(f"--{what}: expected names from {allowed}, got {unknown or text!r}")
    return names


def _report(rows: list[dict[str, Any]], budget: dict[str, Any] | None,
            path: Path | None, show: bool = True) -> dict[str, Any]:
    """The goal lines of ``rows``; printed with the table when ``show``, written to ``path``."""
    goal = goal_report(rows)
    goal13 = goal13_report(rows, POSTERIORS)
    if show:
        print_table("inference benchmark", rows, COLUMNS)
        for line in goal + goal13:
            print(line)
    payload = {"budget": budget, "rows": rows, "goal": goal, "goal13": goal13}
    if path is not None:
        write_json(path, payload)
    return payload


def merge(paths: list[Path], out: Path | None) -> list[dict[str, Any]]:
    """Concatenate the rows of several result files (one budget) and report them together."""
    import json

    rows, budgets = [], []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"--merge: expected result files, {str(path)!r} does not exist")
        data = json.loads(path.read_text())
        rows += data["rows"]
        budgets.append(data.get("budget"))
    if any(b != budgets[0] for b in budgets):
        raise SystemExit(f"--merge: expected one budget in all files, got {budgets}")
    _report(rows, budgets[0], out)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, run every (target, method), print the table, optionally write JSON.

    With ``--workers 1`` and ``--json`` the file is rewritten after every case,
    so a run that is stopped keeps what it finished. ``--merge a.json b.json
    --json all.json`` joins earlier results instead of running anything.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    p.add_argument("--goal", action="store_true",
                   help=f"the goal run: funnel and the 13 posteriors x {GOAL_METHODS}")
    p.add_argument("--only", type=str, default=None, help=f"targets, comma-separated: {TARGETS}")
    p.add_argument("--methods", type=str, default=None, help=f"comma-separated: {METHODS}")
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="result files to join (nothing is run)")
    p.add_argument("--workers", type=int, default=2, help="processes (one torch thread each)")
    p.add_argument("--seeds", type=str, default="0", help="comma-separated seeds (medians)")
    for f in dataclasses.fields(Budget):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None)
    args = p.parse_args(argv)
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise SystemExit(f"--json: {str(args.json)!r} exists; pass --overwrite to replace it")
    if args.json is not None and not args.json.parent.is_dir():
        raise SystemExit(f"--json: the folder {str(args.json.parent)!r} does not exist")
    if args.merge is not None:
        return merge(args.merge, args.json)
    if args.workers < 1:
        raise SystemExit(f"--workers: expected >= 1, got {args.workers}")
    targets = _names(args.only, ("funnel", *POSTERIORS) if args.goal else TARGETS, "only")
    methods = _names(args.methods, GOAL_METHODS if args.goal else METHODS, "methods")
    budget = QUICK if args.quick else DEFAULT
    budget = dataclasses.replace(budget, **{f.name: getattr(args, f.name)
                                            for f in dataclasses.fields(Budget)
                                            if getattr(args, f.name) is not None})
    print(f"budget: {dataclasses.asdict(budget)}; {len(targets)} targets x {len(methods)} methods",
          flush=True)
    torch.set_num_threads(1)
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: expected comma-separated ints, got {args.seeds!r}") from None
    if not seeds:
        raise SystemExit("--seeds: expected at least one seed")
    jobs = [(t, m, budget, sd) for sd in seeds for t in targets for m in methods]
    info = dataclasses.asdict(budget)
    if args.workers == 1:
        rows = []
        for job in jobs:
            rows.append(run_case(*job))
            if args.json is not None:  # incremental: a stopped run keeps its finished cases
                _report(rows, info, args.json, show=False)
    else:
        rows = parallel_map(run_case, jobs, workers=args.workers, threads=1)
    _report(rows, info, args.json)
    return rows


if __name__ == "__main__":
    main()
