"""Benchmark: FAB (Midgley et al. 2023) against reverse KL, the SNF and plain AIS.

Targets: GMM-40 (FAB's settings: 40 means uniform in [-40, 40]^2, scale
softplus(1)) and many-well-32 (FAB's constants). Per target and seed:

* ``fab``: FAB with the prioritized buffer (RealNVP; AIS towards p^2/q in the
  flow's latent space: GMM 1 intermediate distribution, many-well 8, HMC with
  5 leapfrog steps; fab-jax's optimizer: a 10-iteration warm-up from lr/10, then
  cosine decay, and its median gradient guard, the trainer's default with a
  buffer), evaluated by importance sampling
  with the flow alone and (``fab+ais``) by AIS towards p with the flow's annealed
  sampler;
* ``fab-nobuf``: the same without the buffer (and so without the guard);
* ``rkl``: the same flow trained by reverse KL, with as many target evaluations
  as ``fab`` spent (``steps = fab evals / batch``);
* ``snf``: the reverse-KL flow with annealed HMC blocks in its latent space;
* ``ais``: plain AIS from a wide Gaussian, with as many target evaluations per
  sample as ``fab+ais`` (geometric schedule, pilot-tuned steps).

Reported: ESS (%), |log Z error|, its standard error, modes covered (GMM: the
40 components; many-well: the 32 one-well sides, see
:func:`pyro_relax.diagnostics.modes.well_sides`), forward KL on exact samples
(flows), target evaluations (training + evaluation) and CPU seconds; and the
curve of ``fab``'s |log Z error| against its training evaluations.

``python benchmarks/fab.py --targets gmm40 --json benchmarks/results/fab_gmm40.json``;
``--quick`` for the smoke test.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro.distributions.transforms as T
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Column, print_table, write_json  # noqa: E402
from snf import WideGaussian, evals_per_sample, hmc_levels, realnvp  # noqa: E402

from pyro_relax.core.switch import validation  # noqa: E402
from pyro_relax.diagnostics.modes import (  # noqa: E402
    forward_kl,
    mode_coverage,
    nearest_mode,
    weighted_summary,
    well_sides,
)
from pyro_relax.distributions.flow import Flow  # noqa: E402
from pyro_relax.infer.snf_training import SNFTrainer  # noqa: E402
from pyro_relax.stochastic.pullback import tune_step_sizes  # noqa: E402
from pyro_relax.stochastic.snf import StochasticNormalizingFlow  # noqa: E402
from pyro_relax.targets import GaussianMixture40, ManyWell  # noqa: E402
from pyro_relax.train import CountingDensity, FABTrainer  # noqa: E402

ACCEPT = 0.65  # the pilot's goal acceptance rate (FAB adapts its HMC towards 0.65)
TARGETS: dict[str, dict[str, Any]] = {
    "gmm40": {"couplings": 10, "hidden": 64, "scale": 30.0, "levels": 2, "eval_levels": 4},
    # many-well: fab-jax's 8 intermediate distributions and buffer of 40 to 400 batches,
    # and its N(0, I) start (scale 1: with 2 the start's ESS is ~1e-14 and FAB collapsed
    # onto the deep side of every well within 200 iterations)
    "many_well32": {"couplings": 10, "hidden": 64, "scale": 1.0, "levels": 9, "eval_levels": 8,
                    "buffer_batches": (40, 400), "lr": 3e-4},
}
CONFIGS = {
    "default": {"iters": {"gmm40": 1000, "many_well32": 800}, "batch": 128, "samples": 10_000,
                "curve_points": 5, "seeds": 3, "lr": 1e-3, "pilot": 10, "pilot_batch": 512,
                "warmup": 10},
    "quick": {"iters": {"gmm40": 4, "many_well32": 2}, "batch": 16, "samples": 400,
              "curve_points": 2, "seeds": 1, "lr": 1e-3, "pilot": 2, "pilot_batch": 64,
              "couplings": 2, "warmup": 1},
}


def make_target(name: str) -> nn.Module:
    return GaussianMixture40.fab() if name == "gmm40" else ManyWell.fab(32)


def make_flow(dim: int, spec: dict[str, Any]) -> Flow:
    layers = realnvp(dim, spec["couplings"], spec["hidden"], zero_init=True)
    scale = torch.full((dim,), spec["scale"])
    return Flow((dim,), [*layers, T.AffineTransform(torch.zeros(dim), scale, event_dim=1)])


def coverage(name: str, target: nn.Module, x: torch.Tensor, log_w: torch.Tensor) -> float:
    ok = torch.isfinite(log_w) | (log_w == -math.inf)
    x, log_w = x[ok], log_w[ok]
    if name == "gmm40":
        return mode_coverage(nearest_mode(x, target.locs, radius=4.0), log_w, 40)
    return mode_coverage(well_sides(x), log_w, 32)


@torch.no_grad()
def evaluate_is(name: str, target: nn.Module, draw: Any, n: int) -> dict[str, Any]:
    """Draw ``n`` weighted samples with ``draw(n) -> (x, log_w)``; summary and mode coverage."""
    start = time.process_time()
    with validation(False):
        xs, lws = zip(*(draw(min(n, 2500)) for _ in range(max(1, n // 2500))), strict=True)
    x, log_w = torch.cat(xs), torch.cat(lws)
    out = weighted_summary(log_w, target.log_Z)
    out["ess_pct"] = 100.0 * out.pop("ess")
    out["modes"] = coverage(name, target, x, log_w)
    out["eval_cpu_s"] = time.process_time() - start
    return out


def flow_draw(flow: Flow, target: nn.Module) -> Any:
    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_q = flow().rsample_and_log_q(torch.Size([n]))
        return x, target.log_prob(x) - log_q

    return draw


def flow_kl(flow: Flow, target: nn.Module, exact: torch.Tensor) -> float:
    try:
        return forward_kl(flow.log_prob, exact, target.log_prob, target.log_Z)["forward_kl"]
    except ValueError:
        return math.inf


def run_seed(name: str, cfg: dict[str, Any], seed: int) -> tuple[list[dict[str, Any]], list]:
    spec = {**TARGETS[name], **({"couplings": cfg["couplings"]} if "couplings" in cfg else {})}
    target = make_target(name)
    dim = target.dim
    torch.manual_seed(1000 + seed)
    exact = target.sample((cfg["samples"],))
    iters = cfg["iters"][name]
    lr = spec.get("lr", cfg["lr"])  # the target's own learning rate, for every method
    rows: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    fab_evals = 0
    for buffer in (True, False):
        torch.manual_seed(seed)
        flow = make_flow(dim, spec)
        low, high = (cfg["batch"] * k for k in spec.get("buffer_batches", (10, 100)))
        trainer = FABTrainer(flow, target, iters, batch_size=cfg["batch"], levels=spec["levels"],
                             n_leapfrog=5, buffer=buffer, lr=lr, seed=seed, progress=False,
                             buffer_size=high, min_buffer_size=low,
                             warmup=min(cfg["warmup"], iters - 1))  # guard: with the buffer
        start = time.process_time()
        points = cfg["curve_points"] if buffer else 1
        for k in range(1, points + 1):
            trainer.run(until=max(1, iters * k // points))
            if buffer:
                cpu = time.process_time() - start
                res = evaluate_is(name, target, flow_draw(flow, target), cfg["samples"] // 4)
                curve.append({"target": name, "seed": seed, "iters": trainer.step,
                              "train_evals": trainer.target_evals, "cpu_s": cpu, **res})
                start += res["eval_cpu_s"]
        train_cpu = time.process_time() - start
        train_evals = trainer.target_evals
        fab_evals = max(fab_evals, train_evals)
        label = "fab" if buffer else "fab-nobuf"
        res = evaluate_is(name, target, flow_draw(flow, target), cfg["samples"])
        rows.append({"method": label, "train_evals": train_evals, "evals_per_sample": 1,
                     "train_cpu_s": train_cpu, "forward_kl": flow_kl(flow, target, exact), **res})
        if buffer:
            snf = trainer.annealed_sampler(levels=spec["eval_levels"])
            before = trainer.target_evals
            pilot = {"rounds": cfg["pilot"], "batch_size": cfg["pilot_batch"]}
            tune_step_sizes(snf, **pilot, target_accept=ACCEPT)
            tune = trainer.target_evals - before
            res = evaluate_is(name, target, snf.sample_with_log_weights, cfg["samples"])
            rows.append({"method": "fab+ais", "train_evals": train_evals + tune,
                         "evals_per_sample": evals_per_sample(snf), "train_cpu_s": train_cpu,
                         "forward_kl": None, **res})
            ais_evals_per_sample = evals_per_sample(snf)

    # reverse KL with FAB's training evaluations, then the SNF on top of it
    torch.manual_seed(seed)
    flow = make_flow(dim, spec)
    counted = CountingDensity(target)
    plain = StochasticNormalizingFlow((dim,), list(flow.layers), counted)
    steps = max(1, fab_evals // (2 * cfg["batch"]))
    start = time.process_time()
    SNFTrainer(plain, steps, batch_size=2 * cfg["batch"], lr=lr, seed=seed,
               clip_grad=100.0, progress=False).run()
    train_cpu = time.process_time() - start
    res = evaluate_is(name, target, flow_draw(flow, target), cfg["samples"])
    rows.append({"method": "rkl", "train_evals": counted.count, "evals_per_sample": 1,
                 "train_cpu_s": train_cpu, "forward_kl": flow_kl(flow, target, exact), **res})
    from pyro_relax.stochastic.annealing import standard_normal_log_prob
    from pyro_relax.stochastic.pullback import PulledBackDensity

    pulled = PulledBackDensity(list(flow.layers), counted)
    blocks = hmc_levels(pulled, standard_normal_log_prob, spec["eval_levels"], 5, 0.3, "linear")
    snf = StochasticNormalizingFlow((dim,), [*blocks, *flow.layers], counted)
    tune_step_sizes(snf, rounds=cfg["pilot"], batch_size=cfg["pilot_batch"], target_accept=ACCEPT)
    res = evaluate_is(name, target, snf.sample_with_log_weights, cfg["samples"])
    rows.append({"method": "snf", "train_evals": counted.count - cfg["samples"],
                 "evals_per_sample": evals_per_sample(snf), "train_cpu_s": train_cpu,
                 "forward_kl": None, **res})

    # plain AIS with the evaluations per sample of fab+ais
    scale = spec["scale"]
    hmc_steps = max(1, (ais_evals_per_sample - 1) // 6)
    ais_blocks = hmc_levels(target, WideGaussian(scale), hmc_steps, 5, 0.3 * scale, "geometric")
    scale_map = T.AffineTransform(torch.zeros(dim), torch.full((dim,), scale), event_dim=1)
    ais = StochasticNormalizingFlow((dim,), [scale_map, *ais_blocks], target)
    start = time.process_time()
    tune_step_sizes(ais, rounds=cfg["pilot"], batch_size=cfg["pilot_batch"], target_accept=ACCEPT)
    res = evaluate_is(name, target, ais.sample_with_log_weights, cfg["samples"])
    pilot_evals = cfg["pilot"] * cfg["pilot_batch"] * evals_per_sample(ais)
    rows.append({"method": "ais", "train_evals": pilot_evals,
                 "evals_per_sample": evals_per_sample(ais),
                 "train_cpu_s": time.process_time() - start, "forward_kl": None, **res})
    for row in rows:
        row.update(target=name, seed=seed)
    return rows, curve


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    order = ["fab", "fab+ais", "fab-nobuf", "rkl", "snf", "ais"]
    for tname in dict.fromkeys(r["target"] for r in rows):
        for method in order:
            group = [r for r in rows if r["target"] == tname and r["method"] == method]
            if not group:
                continue
            keys = ("ess_pct", "abs_log_z_err", "log_z_se", "modes", "train_evals",
                    "train_cpu_s", "eval_cpu_s")
            mean = {k: sum(r[k] for r in group) / len(group) for k in keys}
            kls = [r["forward_kl"] for r in group if r["forward_kl"] is not None]
            out.append({"target": tname, "method": method, "seeds": len(group),
                        "evals_per_sample": group[0]["evals_per_sample"],
                        "min_modes": min(r["modes"] for r in group),
                        "max_abs_log_z_err": max(r["abs_log_z_err"] for r in group),
                        "forward_kl": sum(kls) / len(kls) if kls else None, **mean})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke-test run")
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None, help="FAB iterations (all targets)")
    parser.add_argument("--batch", type=int, default=None, help="AIS chains per iteration")
    args = parser.parse_args(argv)
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error(f"--seeds must be >= 1, got {args.seeds}")
        cfg["seeds"] = args.seeds
    if args.iters is not None:
        if args.iters < 1:
            parser.error(f"--iters must be >= 1, got {args.iters}")
        cfg["iters"] = {k: args.iters for k in TARGETS}
    if args.batch is not None:
        if args.batch < 1:
            parser.error(f"--batch must be >= 1, got {args.batch}")
        cfg["batch"] = args.batch
    rows: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    start = time.process_time()
    for name in args.targets:
        for seed in range(cfg["seeds"]):
            r, c = run_seed(name, cfg, seed)
            rows += r
            curve += c
            if args.json:  # written as it goes
                write_json(args.json, {"config": cfg, "runs": rows, "curve": curve,
                                       "table": summarize(rows), "partial": True})
    table = summarize(rows)
    print_table(
        f"FAB benchmark: mean over {cfg['seeds']} seed(s)", table,
        [Column("target", "target"), Column("method", "method"),
         Column("ess_pct", "ESS %", ".1f"), Column("abs_log_z_err", "|logZ err|", ".3f"),
         Column("max_abs_log_z_err", "max err", ".3f"), Column("log_z_se", "se", ".3f"),
         Column("min_modes", "modes (min)", ".3f"), Column("forward_kl", "fwd KL", ".3f"),
         Column("train_evals", "train evals", ".3g"), Column("evals_per_sample", "evals/sample"),
         Column("train_cpu_s", "train CPU s", ".0f")],
    )
    print_table(
        "FAB (buffer): flow |log Z error| against training target evaluations", curve,
        [Column("target", "target"), Column("seed", "seed"), Column("iters", "iters"),
         Column("train_evals", "train evals", ".3g"), Column("abs_log_z_err", "|logZ err|", ".3f"),
         Column("ess_pct", "ESS %", ".1f"), Column("modes", "modes", ".3f"),
         Column("cpu_s", "CPU s", ".0f")],
    )
    total = time.process_time() - start
    print(f"total CPU {total:.0f} s")
    if args.json:
        write_json(args.json, {"config": cfg, "runs": rows, "curve": curve, "table": table,
                               "cpu_seconds": total, "partial": False})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
