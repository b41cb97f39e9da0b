"""Pathfinder against the dimension: seconds, log-density evaluations, peak memory, accuracy.

The target is a correlated Gaussian with an ``O(d)`` log density: an AR(1) chain
(correlation ``rho = 0.9`` between neighbours) scaled coordinatewise by standard
deviations log-spaced from 0.3 to 3 (condition number about ``4 * 10^4``), with a mean
drawn from ``N(0, 3^2)``. Its marginal means and standard deviations are known, so
each run reports the largest error of the draws' means in marginal sds and the
median ratio of the best Gaussian's variances to the true ones.

Each dimension runs in its own subprocess, so that the peak resident memory
(``ru_maxrss``) is that run's: the table gives it above the process's resident
size just before the run. Seconds are wall time after a warm-up run at ``d = 2``
(the first PSIS call imports ArviZ: about 2 to 4 s, once per process).

``--whitening`` times the two whitening layers of
:func:`~pyro_relax.infer.guides.whitening.whitening_layer` (forward, log-det,
backward and one Adam step on 32 rows) against ``d``: the numbers behind
``DENSE_WHITENING_MAX_DIM``.

Usage::

    python benchmarks/pathfinder_scaling.py [--quick] [--json PATH] [--whitening]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import Column, environment, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's package, before an installed one
    sys.path.insert(0, str(ROOT))
DIMS = (10, 30, 100, 1000, 2000, 5000)
QUICK_DIMS = (10, 30, 100)
WHITENING_DIMS = (50, 100, 200, 500, 1000, 2000)


def ar1_target(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``(mean, sd, log_p)`` of the AR(1) Gaussian target (float64)."""
    g = torch.Generator().manual_seed(seed)
    rho = 0.9
    sd = torch.logspace(-0.5, 0.5, d, dtype=torch.float64)
    mean = 3.0 * torch.randn(d, generator=g, dtype=torch.float64)
    innov = math.sqrt(1.0 - rho * rho)

    def log_p(z: torch.Tensor) -> torch.Tensor:
        x = (z - mean) / sd
        first = -0.5 * x[..., 0] ** 2
        rest = -0.5 * ((x[..., 1:] - rho * x[..., :-1]) / innov) ** 2
        return first + rest.sum(-1)

    return mean, sd, log_p


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_one(d: int, seed: int, num_paths: int, num_draws: int) -> dict[str, Any]:
    """One Pathfinder run at dimension ``d`` (call in a fresh process for its peak memory)."""
    from pyro_relax.infer.pathfinder import pathfinder

    torch.set_num_threads(1)
    _, _, warm = ar1_target(2, seed)
    pathfinder(warm, torch.zeros(2), num_paths=2, num_draws=50,
               generator=torch.Generator().manual_seed(0))
    mean, sd, log_p = ar1_target(d, seed)
    calls = [0]

    def counted(z: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return log_p(z)

    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    fit = pathfinder(counted, torch.zeros(d, dtype=torch.float64), num_paths=num_paths,
                     num_draws=num_draws, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kinds = sorted({k for p in fit.paths for k in p.kinds if k != "none"})
    return {
        "d": d, "seconds": seconds, "num_evals": fit.num_evals, "log_p_calls": calls[0],
        "iters": sum(p.num_iters for p in fit.paths),
        "peak_mb_above_start": max(peak - rss0, 0) / 1e6, "peak_rss_mb": peak / 1e6,
        "mean_err_sd": float(((fit.draws.mean(0) - mean) / sd).abs().max()),
        "var_ratio_median": float((fit.variance / sd.square()).median()),
        "khat": fit.khat, "elbo": fit.elbo, "rank": fit.gaussian.rank, "kinds": ",".join(kinds),
    }


def whitening_timing(dims: tuple[int, ...], reps: int) -> list[dict[str, Any]]:
    """Seconds per training step of the dense and the low-rank whitening layer."""
    from pyro_relax.infer.guides.whitening import CholeskyAffineTransform, LowRankAffineTransform

    torch.set_num_threads(1)
    rows = []
    for d in dims:
        g = torch.Generator().manual_seed(d)
        k = 12
        Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
        layers = {
            "dense": CholeskyAffineTransform(torch.zeros(d), torch.eye(d)),
            "low_rank": LowRankAffineTransform(torch.zeros(d), torch.ones(d), Q, torch.eye(k)),
        }
        row: dict[str, Any] = {"d": d}
        for name, layer in layers.items():
            opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
            u = torch.randn(32, d, generator=g)

            def step(layer: Any = layer, opt: Any = opt, u: torch.Tensor = u) -> None:
                x = layer(u)
                loss = (x.square().sum(-1) - layer.log_abs_det_jacobian(u, x)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            row[f"{name}_ms"] = 1e3 * (time.perf_counter() - t0) / reps
            row[f"{name}_params"] = sum(p.numel() for p in layer.parameters())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the tables; return (and optionally write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="d in (10, 30, 100) only")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--dims", type=int, nargs="*", default=None)
    parser.add_argument("--num-paths", type=int, default=4)
    parser.add_argument("--num-draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--whitening", action="store_true", help="also time the whitening layers")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:  # the child process: one dimension, JSON on stdout
        print(json.dumps(run_one(args.one, args.seed, args.num_paths, args.num_draws)))
        return {}
    dims = tuple(args.dims) if args.dims else (QUICK_DIMS if args.quick else DIMS)
    if any(d < 2 for d in dims):
        parser.error(f"expected dimensions >= 2, got {dims}")
    rows = []
    for d in dims:
        cmd = [sys.executable, __file__, "--one", str(d), "--seed", str(args.seed),
               "--num-paths", str(args.num_paths), "--num-draws", str(args.num_draws)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            rows.append({"d": d, "error": out.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print_table(
        f"Pathfinder on an AR(1) Gaussian ({args.num_paths} paths x {args.num_draws} draws, "
        "1 thread)",
        rows,
        [Column("d", "d"), Column("seconds", "s", ".2f"), Column("num_evals", "evals"),
         Column("log_p_calls", "calls"), Column("iters", "iters"),
         Column("peak_mb_above_start", "peak MB", ".0f"),
         Column("mean_err_sd", "mean err/sd", ".3f"),
         Column("var_ratio_median", "var ratio", ".2f"), Column("khat", "k-hat", ".2f"),
         Column("rank", "rank"), Column("kinds", "kinds")],
    )
    result: dict[str, Any] = {"environment": environment(), "pathfinder": rows}
    if args.whitening:
        wdims = WHITENING_DIMS[:4] if args.quick else WHITENING_DIMS
        wrows = whitening_timing(wdims, reps=5 if args.quick else 20)
        print_table("Whitening layer, one training step on 32 rows (1 thread)", wrows,
                    [Column("d", "d"), Column("dense_ms", "dense ms", ".2f"),
                     Column("low_rank_ms", "low-rank ms", ".2f"),
                     Column("dense_params", "dense params"),
                     Column("low_rank_params", "low-rank params")])
        result["whitening"] = wrows
    if args.json is not None:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
