"""Benchmark: DiffFlow vs a VP score model vs a plain spline flow.

On 2-D data with sharp boundaries (checkerboard, rings) and on scikit-learn's
8x8 digits (integer pixels 0..16, dequantized), each model gets the same
wall-clock training budget and about the same parameter count. Reported:
test NLL (nats; bits/dim for digits), sample quality as sliced-Wasserstein
(SW2) and MMD distances to held-out data, and sampling time against the
number of steps.

Run::

    python benchmarks/diffusion.py            # default, under 10 minutes on 2 cores
    python benchmarks/diffusion.py --quick    # about a minute
    python benchmarks/diffusion.py --json out.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

import pyro_relax  # noqa: E402
from pyro_relax.diffusion import (  # noqa: E402
    VPSDE,
    DiffFlow,
    ScoreModel,
    bits_per_dim,
    euler_maruyama,
    ode_log_prob,
)
from pyro_relax.nn.score import ScoreMLP  # noqa: E402

# ---------------------------------------------------------------- data


def _fallback_checkerboard(n: int, seed: int | None = None) -> Tensor:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2.0
    return torch.stack([x1, x2 + torch.floor(x1) % 2], -1)


def _fallback_rings(n: int, seed: int | None = None) -> Tensor:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    radius = (torch.randint(0, 4, (n,), generator=g) + 1) * 0.5
    angle = torch.rand(n, generator=g) * 2 * math.pi
    pts = torch.stack([radius * angle.cos(), radius * angle.sin()], -1)
    return pts + 0.04 * torch.randn(n, 2, generator=g)


try:
    from pyro_relax.datasets import checkerboard, rings
except ImportError:  # the data sets module may not exist yet
    checkerboard, rings = _fallback_checkerboard, _fallback_rings


def _digits(seed: int) -> tuple[Tensor, Tensor]:
    try:
        from pyro_relax.datasets import digits

        return digits(seed)
    except ImportError:
        from sklearn.datasets import load_digits

        data = torch.as_tensor(load_digits().data, dtype=torch.float32)
        data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))]
        cut = int(0.8 * len(data))
        return data[:cut], data[cut:]


class Data:
    """A data set in model space, a way to draw training batches, and its test split.

    For digits the model space is ``z = 2 (x + u) / 17 - 1`` (uniform dequantization), so
    ``log P(x) >= log p(z) + 64 log 2 - 64 log 17``: :meth:`log_prob_offset` adds the
    last two terms; bits/dim are then ``-(log p(z) + offset) / (64 log 2)``.
    """

    def __init__(self, name: str, n_test: int, seed: int) -> None:
        self.name = name
        if name == "digits":
            train, test = _digits(seed)
            self.train_int, self.test_int = train, test
            self.dim, self.discrete = 64, True
            self.test = self._dequantize(test, seed + 1)
            self.reference = self._dequantize(train[: len(test)], seed + 2)
        else:
            fn = {"checkerboard": checkerboard, "rings": rings}[name]
            self.fn = fn
            self.dim, self.discrete = 2, False
            self.test = fn(n_test, seed=seed + 1)
            self.reference = fn(n_test, seed=seed + 2)  # held-out set for sample quality

    @staticmethod
    def _dequantize(x: Tensor, seed: int | None = None) -> Tensor:
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return 2 * (x + torch.rand(x.shape, generator=g)) / 17 - 1

    def batch(self, n: int) -> Tensor:
        if self.discrete:
            idx = torch.randint(0, len(self.train_int), (n,))
            return self._dequantize(self.train_int[idx])
        return self.fn(n)

    @property
    def log_prob_offset(self) -> float:
        return self.dim * (math.log(2.0) - math.log(17.0)) if self.discrete else 0.0

    def score(self, log_prob: Tensor) -> dict[str, float]:
        """Mean and median test NLL in nats (2-D) or bits/dim (digits)."""
        lp = log_prob + self.log_prob_offset
        nll = bits_per_dim(lp, self.dim) if self.discrete else -lp
        return {"nll": float(nll.mean()), "nll_median": float(nll.median())}


# ---------------------------------------------------------------- metrics


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance with fixed random directions (equal sample sizes)."""
    n = min(len(x), len(y))
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[-1], projections, generator=g)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = (x[:n].double() @ dirs.double()).sort(0)
    py, _ = (y[:n].double() @ dirs.double()).sort(0)
    return float((px - py).square().mean().sqrt())


def mmd(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Unbiased MMD^2 with a mixture of Gaussian kernels (bandwidths h/2, h, 2h)."""
    x, y = x.double(), y.double()

    def k(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b).square()
        return sum(torch.exp(-d2 / (2 * (bandwidth * s) ** 2)) for s in (0.5, 1.0, 2.0))

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


# ---------------------------------------------------------------- models


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def spline_flow(
    dim: int, layers: int, hidden: list[int], bins: int, bound: float
) -> tuple[dist.TransformedDistribution, nn.ModuleList]:
    """A Pyro spline-coupling stack with permutations on a standard normal base."""
    transforms = []
    g = torch.Generator().manual_seed(0)
    for i in range(layers):
        transforms.append(T.spline_coupling(dim, hidden_dims=hidden, count_bins=bins, bound=bound))
        if i < layers - 1:
            perm = torch.tensor([1, 0]) if dim == 2 else torch.randperm(dim, generator=g)
            transforms.append(T.Permute(perm))
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
    return dist.TransformedDistribution(base, transforms), nn.ModuleList(
        [t for t in transforms if isinstance(t, nn.Module)]
    )


def train(
    loss_fn: Callable[[Tensor], Tensor],
    module: nn.Module,
    data: Data,
    budget: float,
    lr: float,
    batch: int,
) -> dict[str, float]:
    """Adam for ``budget`` seconds of this process's CPU time, lr decayed linearly to lr/10.

    CPU time rather than wall time, so that every model gets the same compute even when
    other processes share the machine.
    """
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    start, wall, iters, recent = time.process_time(), time.perf_counter(), 0, []
    with pyro_relax.validation(False):
        while (used := time.process_time() - start) < budget:
            for group in opt.param_groups:
                group["lr"] = lr * (1 - 0.9 * used / budget)
            loss = loss_fn(data.batch(batch))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
            iters += 1
            recent = (recent + [float(loss.detach())])[-50:]
    return {
        "train_s": time.process_time() - start,
        "train_wall_s": time.perf_counter() - wall,
        "iters": iters,
        "final_loss": sum(recent) / len(recent),
    }


def timed(fn: Callable[[], Tensor]) -> tuple[Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad(), pyro_relax.validation(False):
        out = fn()
    return out, time.perf_counter() - start


# ---------------------------------------------------------------- one data set


def run_dataset(name: str, cfg: dict, seed: int) -> tuple[list[dict], list[dict]]:
    torch.manual_seed(seed)
    data = Data(name, cfg["n_test"], seed)
    d, big = data.dim, data.dim > 2
    hidden = cfg["hidden_hd"] if big else cfg["hidden_2d"]
    ode_kw = {"rtol": 1e-4, "atol": 1e-4, "divergence": "hutchinson" if big else "exact"}
    n_eval = len(data.test)
    bandwidth = float(torch.cdist(data.reference[:500], data.reference[:500]).median())

    def quality(x: Tensor) -> dict[str, float]:
        return {
            "sw": sliced_wasserstein(x, data.test),
            "mmd": mmd(x[:n_eval], data.test, bandwidth),
        }

    rows, sweep = [], []
    floor = quality(data.reference)
    rows.append({"dataset": name, "model": "held-out data (floor)", **floor})
    budget = cfg["budget_hd"] if big else cfg["budget_2d"]

    # DiffFlow: trainable drift + score, path KL, 30-step backward Euler-Maruyama
    net = ScoreMLP(d, hidden=hidden, out_features=2 * d)  # score and drift share a trunk
    # a gentler VP SDE than the score model's: the learned drift carries the rest of the
    # way to the prior, and 30 Euler steps are more accurate on a slower process
    sde = VPSDE(0.1, cfg["diffflow_beta_max"])
    flow = DiffFlow(sde, net, "shared", num_steps=cfg["diffflow_steps"])
    tr = train(flow.loss, flow, data, budget, cfg["lr"], cfg["diffflow_batch"])
    with torch.no_grad(), pyro_relax.validation(False):
        iw = flow.log_prob_iw(data.test, cfg["iw_particles"])
    x, secs = timed(lambda: flow.sample((n_eval,), denoise=True))
    start = time.perf_counter()
    with torch.no_grad():  # no graph: a kept graph grows with every solver evaluation
        ode_lp = ode_log_prob(flow, data.test, **ode_kw)
    ode_s = time.perf_counter() - start
    rows.append(
        {
            "dataset": name,
            "model": "DiffFlow",
            "params": n_params(flow),
            **tr,
            **data.score(ode_lp),
            "nll_bound": data.score(iw)["nll"],
            "steps": flow.num_steps,
            "sample_s": secs,
            "nll_s": ode_s,
            **quality(x),
        }
    )
    sweep.append(
        {
            "dataset": name,
            "model": "DiffFlow",
            "steps": flow.num_steps,
            "sample_s": secs,
            **quality(x),
        }
    )

    # VP score model, about the parameter count of DiffFlow's two networks
    score = ScoreModel(VPSDE(), ScoreMLP(d, hidden=hidden))
    tr = train(score.loss, score, data, budget, cfg["lr"], cfg["batch"])
    start = time.perf_counter()
    with torch.no_grad():
        lp = ode_log_prob(score, data.test, **ode_kw)
    ode_s = time.perf_counter() - start
    best = None
    for steps in cfg["score_steps"]:
        x, secs = timed(lambda s=steps: euler_maruyama(score, (n_eval,), steps=s))
        q = quality(x)
        sweep.append(
            {"dataset": name, "model": "VP score (EM)", "steps": steps, "sample_s": secs, **q}
        )
        if steps == max(cfg["score_steps"]):
            best = {"steps": steps, "sample_s": secs, **q}
    rows.append(
        {
            "dataset": name,
            "model": "VP score",
            "params": n_params(score),
            **tr,
            **data.score(lp),
            "nll_s": ode_s,
            **(best or {}),
        }
    )

    # plain spline flow (Pyro), same budget
    sflow, modules = spline_flow(
        d,
        cfg["spline_layers_hd"] if big else cfg["spline_layers_2d"],
        cfg["spline_hidden_hd"] if big else cfg["spline_hidden_2d"],
        cfg["spline_bins"],
        1.5 if big else 4.0,
    )
    tr = train(lambda b: -sflow.log_prob(b).mean(), modules, data, budget, cfg["lr"], cfg["batch"])
    with torch.no_grad():
        lp = sflow.log_prob(data.test)
    x, secs = timed(lambda: sflow.sample((n_eval,)))
    rows.append(
        {
            "dataset": name,
            "model": "spline flow",
            "params": n_params(modules),
            **tr,
            **data.score(lp),
            "steps": 1,
            "sample_s": secs,
            **quality(x),
        }
    )
    sweep.append(
        {"dataset": name, "model": "spline flow", "steps": 1, "sample_s": secs, **quality(x)}
    )
    return rows, sweep


# budgets are CPU seconds per model; networks sized so the three models have about the
# same parameter count (DiffFlow's score and drift share one trunk with 2 d outputs)
CONFIGS = {
    "default": {
        "budget_2d": 35.0,
        "budget_hd": 35.0,
        "n_test": 2000,
        "batch": 256,
        "diffflow_batch": 64,
        "diffflow_beta_max": 5.0,
        "lr": 2e-3,
        "hidden_2d": (128, 128, 128),
        "hidden_hd": (256, 256),
        "diffflow_steps": 30,
        "iw_particles": 16,
        "score_steps": [10, 30, 100, 300, 1000],
        "spline_layers_2d": 4,
        "spline_hidden_2d": [96, 96],
        "spline_layers_hd": 3,
        "spline_hidden_hd": [48, 48],
        "spline_bins": 8,
    },
    "quick": {
        "budget_2d": 3.0,
        "budget_hd": 3.0,
        "n_test": 500,
        "batch": 128,
        "diffflow_batch": 64,
        "diffflow_beta_max": 5.0,
        "lr": 2e-3,
        "hidden_2d": (64, 64),
        "hidden_hd": (128,),
        "diffflow_steps": 30,
        "iw_particles": 4,
        "score_steps": [30, 1000],
        "spline_layers_2d": 3,
        "spline_hidden_2d": [48, 48],
        "spline_layers_hd": 2,
        "spline_hidden_hd": [32],
        "spline_bins": 8,
    },
}

COLUMNS = [
    _common.Column("dataset", "data"),
    _common.Column("model", "model"),
    _common.Column("params", "params"),
    _common.Column("iters", "iters"),
    _common.Column("train_s", "train cpu s", ".0f"),
    _common.Column("nll", "test NLL", ".3f"),
    _common.Column("nll_median", "median", ".3f"),
    _common.Column("nll_bound", "NLL bound", ".3f"),
    _common.Column("steps", "steps"),
    _common.Column("sample_s", "sample s", ".2f"),
    _common.Column("sw", "SW2", ".4f"),
    _common.Column("mmd", "MMD^2", ".5f"),
]
SWEEP_COLUMNS = [
    _common.Column("dataset", "data"),
    _common.Column("model", "model"),
    _common.Column("steps", "steps"),
    _common.Column("sample_s", "sample s", ".3f"),
    _common.Column("sw", "SW2", ".4f"),
    _common.Column("mmd", "MMD^2", ".5f"),
]


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["model"]: r for r in rows if r["dataset"] == name}
        df, sc, sp = by["DiffFlow"], by["VP score"], by["spline flow"]
        out.append(
            f"{name}: DiffFlow@{df['steps']} SW2 {df['sw']:.4f} vs "
            f"score@{sc['steps']} {sc['sw']:.4f} "
            f"(ratio {df['sw'] / sc['sw']:.2f}); vs spline flow SW2 {sp['sw']:.4f}, "
            f"NLL {df['nll']:.3f} vs {sp['nll']:.3f}"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument("--json", type=str, default=None, help="write results to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust to a shared machine)"
    )
    parser.add_argument("--datasets", nargs="+", default=["checkerboard", "rings", "digits"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = CONFIGS["quick" if args.quick else "default"]
    start, cpu = time.perf_counter(), time.process_time()
    rows, sweep = [], []
    for name in args.datasets:
        r, s = run_dataset(name, cfg, args.seed)
        rows += r
        sweep += s
        _common.print_table(f"{name} (NLL: nats; digits: bits/dim)", r, COLUMNS)
    _common.print_table("Sampling time and quality against steps", sweep, SWEEP_COLUMNS)
    lines = verdicts(rows)
    print("\n".join(lines))
    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\ntotal {total:.0f} s wall, {total_cpu:.0f} s CPU")
    if args.json:
        _common.write_json(
            args.json,
            {
                "config": cfg,
                "rows": rows,
                "sweep": sweep,
                "verdicts": lines,
                "total_s": total,
                "total_cpu_s": total_cpu,
            },
        )


if __name__ == "__main__":
    main()
