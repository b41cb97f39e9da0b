"""Benchmark: stochastic normalizing flows (Wu, Koehler and Noe 2020) in pyro-relax.

Part 1, the SNF paper's double well (section 5): a RealNVP flow (3 RealNVP
blocks of 2 affine couplings) against the same flow with a Metropolis (MC)
block of 10 random-walk steps targeting the double well (RNVP+MC), same
training budget (optimizer steps, batch, loss: maximum likelihood on exact
target samples plus 0.1 x reverse KL). By default the MC block follows the last
RealNVP block; ``--dw-mc-placement between`` puts one after every RealNVP
block (there the target density is evaluated on intermediate representations;
it did worse in our runs). Reported: the error of the reweighted free-energy
profile along x1, ``sqrt(bias^2 + std^2)`` per bin over the runs, averaged
over the 0.2-wide bins of [-3, 3] whose exact free energy is within 8 kT of the
minimum (both wells, not the barrier top; a bin without samples counts as
holding half a sample), and the importance-sampling ESS. The paper's
official numbers are over 10 runs (RNVP 1.15 vs RNVP+MC 0.63); the default
here is 3 runs (``--runs``), ``--quick`` uses 1 (no std term then).

Part 2, GMM-40 (FAB settings), many-well-32 (FAB settings) and Neal's funnel
(10-D): ESS (%) and |log Z error| of

* a plain flow: 4 affine couplings (identity at start) and a fixed scale,
  trained by reverse KL,
* an SNF of the same size: that same trained flow (so the same training
  budget: steps, batch, seed) with annealed HMC blocks in its latent space,
  targeting ``pi_lambda(z) = N(z)^(1 - lambda) (p(f(z)) |det f'(z)|)^lambda``
  with ``lambda = k / K``; the blocks' step sizes are tuned by a short pilot
  (acceptance-rate adaptation, counted as ``tune_evals``), not by gradients,
* plain annealed importance sampling (AIS) in data space from a wide Gaussian,
  geometric schedule, with the same HMC settings, number of levels, pilot and
  target evaluations per sample as the SNF.

Run ``python benchmarks/snf.py`` (default, under 10 minutes on 2 CPU cores),
``--quick`` (about a minute), ``--json PATH`` to save the results.
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
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Column, print_table, write_json  # noqa: E402

from pyro_relax.infer.snf_training import SNFTrainer  # noqa: E402
from pyro_relax.stochastic.density import (  # noqa: E402
    standard_normal_log_prob,
)
from pyro_relax.stochastic.hmc import HMCBlock  # noqa: E402
from pyro_relax.stochastic.mh import RandomWalkMH  # noqa: E402
from pyro_relax.stochastic.pullback import (  # noqa: E402
    PulledBackDensity,
    annealed_hmc_levels,
    tune_step_sizes,
)
from pyro_relax.stochastic.snf import (  # noqa: E402
    StochasticNormalizingFlow,
    ess_from_log_weights,
    log_Z_from_log_weights,
)
from pyro_relax.targets import DoubleWell, GaussianMixture40, ManyWell, NealFunnel  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        "dw_runs": 5,
        "dw_steps": 1000,
        "dw_batch": 256,
        "dw_samples": 20_000,
        "dw_mc_steps": 10,
        "steps": 1500,
        "batch": 256,
        "samples": 20_000,
        "levels": 16,
        "leapfrog": 3,
        "pilot_rounds": 15,
        "pilot_batch": 512,
        "seeds": 3,
    },
    "quick": {
        "dw_runs": 1,
        "dw_steps": 300,
        "dw_batch": 256,
        "dw_samples": 10_000,
        "dw_mc_steps": 10,
        "steps": 400,
        "batch": 256,
        "samples": 5000,
        "levels": 10,
        "leapfrog": 3,
        "pilot_rounds": 8,
        "pilot_batch": 256,
        "seeds": 1,
    },
}


# -- flows -----------------------------------------------------------------------------


def realnvp(dim: int, n_couplings: int, hidden: int, zero_init: bool) -> list[nn.Module]:
    """Affine couplings (RealNVP) alternating with a reversal of the coordinates."""
    layers: list[nn.Module] = []
    for _ in range(n_couplings):
        coupling = T.affine_coupling(dim, hidden_dims=[hidden, hidden])
        if zero_init:  # start at the identity map
            with torch.no_grad():
                for p in coupling.nn.layers[-1].parameters():
                    p.zero_()
        layers += [coupling, T.Permute(torch.arange(dim - 1, -1, -1))]
    return layers


class WideGaussian(nn.Module):
    """``log N(x; 0, scale^2 I)``, the start of plain AIS."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def log_prob(self, x: Tensor) -> Tensor:
        d = x.shape[-1]
        return standard_normal_log_prob(x / self.scale) - d * math.log(self.scale)


def pilot_tune(model: StochasticNormalizingFlow, rounds: int, n: int) -> int:
    """Tune the blocks' step sizes toward acceptance 0.7; return the target evaluations spent."""
    tune_step_sizes(model, rounds=rounds, batch_size=n, target_accept=0.7)
    return rounds * n * evals_per_sample(model)


def evals_per_sample(model: StochasticNormalizingFlow) -> int:
    """Target evaluations per sample: HMC blocks evaluate once per leapfrog step + once at entry."""
    count = 1  # the final log target(x) of the weight
    for block in model.blocks:
        count += (
            block.n_steps * (block.n_leapfrog + 1) if isinstance(block, HMCBlock) else block.n_steps
        )
    return count


@torch.no_grad()
def evaluate(model: StochasticNormalizingFlow, n: int, log_z: float) -> dict[str, float]:
    """ESS (%), log Z estimate, its standard error and absolute error from ``n`` samples."""
    start = time.perf_counter()
    chunks = [model.sample_with_log_weights(min(n, 5000))[1] for _ in range(max(1, n // 5000))]
    log_w = torch.cat(chunks)
    est, se = log_Z_from_log_weights(log_w)
    return {
        "ess_pct": 100.0 * float(ess_from_log_weights(log_w, relative=True)),
        "log_z": float(est),
        "log_z_se": float(se),
        "abs_log_z_err": abs(float(est) - log_z),
        "sample_s": time.perf_counter() - start,
    }


# -- part 1: the double well ---------------------------------------------------------------


def dw_model(
    target: DoubleWell, mc: bool, mc_steps: int, placement: str = "end"
) -> StochasticNormalizingFlow:
    """3 RealNVP blocks of 2 couplings (hidden 64); with ``mc``, Metropolis blocks targeting
    the double well after the last RealNVP block (``"end"``) or after every one (``"between"``).
    """
    layers: list[nn.Module] = []
    for i in range(3):
        layers += realnvp(2, 2, 64, zero_init=False)
        if mc and (placement == "between" or i == 2):
            layers.append(RandomWalkMH(target, step_size=0.3, n_steps=mc_steps))
    return StochasticNormalizingFlow((2,), layers, target)


def profile(x1: Tensor, log_w: Tensor, edges: Tensor) -> Tensor:
    """Reweighted free energy ``-log p(x1)`` per bin (empty bins count as half a sample)."""
    p = torch.softmax(log_w.double(), 0)
    idx = torch.bucketize(x1.double().contiguous(), edges) - 1
    inside = (idx >= 0) & (idx < len(edges) - 1)
    hist = torch.zeros(len(edges) - 1, dtype=torch.float64).index_add_(0, idx[inside], p[inside])
    width = float(edges[1] - edges[0])
    return -torch.log(hist.clamp_min(0.5 / len(x1)) / width)


def reference_profile(target: DoubleWell, edges: Tensor, fine: int = 200) -> Tensor:
    """Exact bin-averaged free energy of the x1 marginal."""
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        grid = torch.linspace(float(a), float(b), fine + 1, dtype=torch.float64)
        p = torch.exp(-target.free_energy_x1(grid))
        out.append(torch.trapezoid(p, grid) / (b - a))
    return -torch.log(torch.stack(out))


def run_double_well(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    target = DoubleWell()
    edges = torch.linspace(-3.0, 3.0, 31, dtype=torch.float64)
    ref = reference_profile(target, edges)
    mask = ref - ref.min() <= 8.0
    rows = []
    for mc in (False, True):
        profiles, ess, seconds = [], [], 0.0
        for run in range(cfg["dw_runs"]):
            torch.manual_seed(run)
            model = dw_model(target, mc, cfg["dw_mc_steps"], cfg.get("dw_mc_placement", "end"))
            data = target.sample((20_000,))
            start = time.perf_counter()
            SNFTrainer(
                model,
                cfg["dw_steps"],
                batch_size=cfg["dw_batch"],
                lr=1e-3,
                forward_weight=1.0,
                reverse_weight=0.1,
                data=data,
                seed=run,
                clip_grad=100.0,
                progress=False,
            ).run()
            seconds += time.perf_counter() - start
            with torch.no_grad():
                x, log_w = model.sample_with_log_weights(cfg["dw_samples"])
            profiles.append(profile(x[:, 0], log_w, edges))
            ess.append(float(ess_from_log_weights(log_w, relative=True)))
        stack = torch.stack(profiles)
        bias = stack.mean(0) - ref
        std = stack.std(0) if len(profiles) > 1 else torch.zeros_like(bias)
        err = torch.sqrt(bias**2 + std**2)[mask]
        rows.append(
            {
                "model": "RNVP+MC" if mc else "RNVP",
                "runs": cfg["dw_runs"],
                "fe_error": float(err.mean()),
                "ess_pct": 100.0 * sum(ess) / len(ess),
                "train_s": seconds / cfg["dw_runs"],
            }
        )
    return rows


# -- part 2: GMM-40, many-well-32, funnel ---------------------------------------------------


def make_target(name: str) -> tuple[nn.Module, float]:
    """The target and the scale of the wide Gaussian the flow and AIS start from."""
    if name == "gmm40":
        return GaussianMixture40.fab(), 30.0
    if name == "many_well32":
        return ManyWell.fab(32), 2.0
    if name == "funnel10":
        return NealFunnel(10), 3.0
    raise ValueError(f"unknown target {name!r}")


def hmc_levels(
    density: Any, base: Any, levels: int, leapfrog: int, step: float, kind: str
) -> list[HMCBlock]:
    """``levels`` HMC blocks, ``lambda`` linear (``k / K``) or geometric from 0.01 to 1."""
    return annealed_hmc_levels(density, levels, leapfrog, step, kind, base=base)


def run_target(name: str, cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    target, scale = make_target(name)
    dim = target.dim
    torch.manual_seed(seed)
    flow_layers = realnvp(dim, 4, 64, zero_init=True)
    flow_layers.append(T.AffineTransform(torch.zeros(dim), torch.full((dim,), scale)))
    plain = StochasticNormalizingFlow((dim,), flow_layers, target)
    start = time.perf_counter()
    SNFTrainer(
        plain,
        cfg["steps"],
        batch_size=cfg["batch"],
        lr=1e-3,
        seed=seed,
        clip_grad=100.0,
        progress=False,
    ).run()
    train_s = time.perf_counter() - start
    rows = [{"method": "flow", "evals": 1, **evaluate(plain, cfg["samples"], target.log_Z)}]

    pulled = PulledBackDensity(list(plain.layers), target)
    blocks = hmc_levels(
        pulled, standard_normal_log_prob, cfg["levels"], cfg["leapfrog"], 0.3, "linear"
    )
    snf = StochasticNormalizingFlow((dim,), [*blocks, *plain.layers], target)
    tune = pilot_tune(snf, cfg["pilot_rounds"], cfg["pilot_batch"])
    rows.append(
        {
            "method": "SNF",
            "evals": evals_per_sample(snf),
            "tune_evals": tune,
            **evaluate(snf, cfg["samples"], target.log_Z),
        }
    )

    wide = WideGaussian(scale)
    ais_blocks = hmc_levels(target, wide, cfg["levels"], cfg["leapfrog"], 0.3 * scale, "geometric")
    scale_map = T.AffineTransform(torch.zeros(dim), torch.full((dim,), scale))
    ais = StochasticNormalizingFlow((dim,), [scale_map, *ais_blocks], target)
    tune = pilot_tune(ais, cfg["pilot_rounds"], cfg["pilot_batch"])
    rows.append(
        {
            "method": "AIS",
            "evals": evals_per_sample(ais),
            "tune_evals": tune,
            **evaluate(ais, cfg["samples"], target.log_Z),
        }
    )
    for row in rows:
        row.update(target=name, seed=seed, train_s=train_s if row["method"] != "AIS" else 0.0)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (target, method)."""
    out = []
    keys = sorted(
        {(r["target"], r["method"]) for r in rows},
        key=lambda k: (k[0], ["flow", "SNF", "AIS"].index(k[1])),
    )
    for tname, method in keys:
        group = [r for r in rows if r["target"] == tname and r["method"] == method]
        mean = {
            k: sum(r[k] for r in group) / len(group)
            for k in ("ess_pct", "abs_log_z_err", "log_z_se", "train_s", "sample_s")
        }
        out.append(
            {
                "target": tname,
                "method": method,
                "seeds": len(group),
                "evals": group[0]["evals"],
                **mean,
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute instead of ~10")
    parser.add_argument("--runs", type=int, default=None, help="double-well runs per model")
    parser.add_argument("--json", type=str, default=None, help="write the results to this path")
    parser.add_argument("--targets", nargs="*", default=["gmm40", "many_well32", "funnel10"])
    parser.add_argument("--skip-double-well", action="store_true")
    parser.add_argument(
        "--dw-mc-placement",
        choices=["end", "between"],
        default="end",
        help="MC blocks after the last RealNVP block (default) or after every RealNVP block",
    )
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    if args.runs is not None:
        if args.runs < 1:
            parser.error(f"--runs must be >= 1, got {args.runs}")
        cfg["dw_runs"] = args.runs
    cfg["dw_mc_placement"] = args.dw_mc_placement
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    start = time.perf_counter()
    dw_rows: list[dict[str, Any]] = []
    if not args.skip_double_well:
        dw_rows = run_double_well(cfg)
        print_table(
            f"Double well (SNF paper): free-energy profile error over {cfg['dw_runs']} run(s) "
            "(paper, 10 runs: RNVP 1.15, RNVP+MC 0.63)",
            dw_rows,
            [
                Column("model", "model"),
                Column("runs", "runs"),
                Column("fe_error", "FE error", ".3f"),
                Column("ess_pct", "ESS %", ".1f"),
                Column("train_s", "train s/run", ".1f"),
            ],
        )
    rows: list[dict[str, Any]] = []
    for name in args.targets:
        for seed in range(cfg["seeds"]):
            rows += run_target(name, cfg, seed)
    table = summarize(rows) if rows else []
    if table:
        print_table(
            f"Targets: mean over {cfg['seeds']} seed(s); equal training budget "
            f"({cfg['steps']} steps x {cfg['batch']}); AIS and SNF use equal target evaluations",
            table,
            [
                Column("target", "target"),
                Column("method", "method"),
                Column("evals", "evals/sample"),
                Column("ess_pct", "ESS %", ".1f"),
                Column("abs_log_z_err", "|logZ err|", ".3f"),
                Column("log_z_se", "se", ".3f"),
                Column("train_s", "train s", ".1f"),
                Column("sample_s", "sample s", ".1f"),
            ],
        )
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")
    if args.json:
        write_json(
            args.json,
            {
                "config": cfg,
                "double_well": dw_rows,
                "targets": table,
                "target_runs": rows,
                "seconds": total,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
