"""Density estimation benchmark: plain coupling flows versus SurVAE flows, and versus zuko.

Sections (``--sections``, all by default):

* ``toy``: test NLL on five 2-D data sets of a plain spline and a plain affine
  coupling flow and of SurVAE variants built on the spline flow (abs, sort,
  max, augment), all with the same training budget and with hidden widths
  chosen so that every model's parameter count is within a few percent of the
  plain spline flow's.
* ``sets``: a plain flow versus a sort flow on exchangeable (set-valued) data.
* ``digits``: bits per dimension on scikit-learn's 8x8 digits (integer pixels
  0..16) under uniform versus variational dequantization.
* ``zuko``: the plain spline flow built with zuko, trained with the same
  budget (NLL difference), and the training-step time of ours, of the same
  Pyro transforms in a raw ``TransformedDistribution``, and of zuko, measured
  interleaved on one thread (as thread CPU time on the CPU, so other processes
  on the machine do not disturb it); the ratio ours/zuko is the headline
  number. When it is above 1, a cProfile breakdown says where our step spends
  its time, and two "what-if" stacks of Pyro couplings show what closes the gap.

``--peers`` runs instead the peers' 2-D protocol (``_density_peers.py``): 2000
steps, batch 512, 8 coupling layers of 2 x 64 hidden units, bound 5, 20k test
points; our default stack, zuko's NSF (8 bins), normflows' NSF where installed
and the SurVAE stacks (abs, sort, augment) on the data sets whose symmetry they
use, alternated step by step in one process on one thread. It reports CPU
seconds per 100 steps, parameters, test NLL and the gap to the true NLL, per data
set and summarized as the median step-time ratio to zuko and the mean gap.

Usage::

    python benchmarks/density.py --peers      # the peers' protocol: about 15 CPU minutes
    python benchmarks/density.py              # full run: about 4 minutes on 2 idle cores
    python benchmarks/density.py --quick      # about a minute
    python benchmarks/density.py --json out.json --sections toy,zuko
"""

from __future__ import annotations

__all__ = [
    "DEFAULT",
    "QUICK",
    "TOY_MODELS",
    "Config",
    "build_parser",
    "config_from_args",
    "fit_zuko",
    "main",
    "match_hidden",
    "run_digits",
    "run_sets",
    "run_toy",
    "run_zuko",
    "toy_builders",
]

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.nn import DenseNN
from torch import Tensor, nn

from pyro_relax import datasets, validation
from pyro_relax.distributions.flow import Flow
from pyro_relax.infer.density import count_parameters, evaluate_nll, fit_density
from pyro_relax.surjections.abs import AbsSurjection
from pyro_relax.surjections.augment import AugmentSurjection
from pyro_relax.surjections.dequantization import UniformDequantization, VariationalDequantization
from pyro_relax.surjections.max import MaxSurjection
from pyro_relax.surjections.sort import SortSurjection
from pyro_relax.transforms.actnorm import ActNorm
from pyro_relax.transforms.stacks import coupling_stack

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _common when imported elsewhere

from _common import (  # noqa: E402
    Column,
    interleaved_timing,
    median,
    parallel_map,
    print_table,
    profile_breakdown,
    shutdown_pools,
    write_json,
)
from _density_peers import PEER_DATASETS, PeersConfig, run_peers  # noqa: E402

TOY_MODELS: tuple[str, ...] = ("spline", "affine", "abs", "sort", "max", "augment")
SECTIONS: tuple[str, ...] = ("toy", "sets", "digits", "zuko")
DIGIT_LEVELS = 17  # pixels of load_digits take the values 0..16

Layers = list[Any]
Builder = Callable[[int], tuple[tuple[int, ...], Layers]]


@dataclass(frozen=True)
class Config:
    """Sizes and budgets of one benchmark run (``DEFAULT`` and ``QUICK`` are presets)."""

    sections: tuple[str, ...] = SECTIONS
    datasets: tuple[str, ...] = tuple(sorted(datasets.DATASETS))
    models: tuple[str, ...] = TOY_MODELS
    n_train: int = 10_000
    n_test: int = 4_000
    steps: int = 400
    batch_size: int = 256
    lr: float = 3e-3
    num_layers: int = 4
    hidden: int = 32
    surj_hidden: int = 16
    extra: int = 2
    num_particles: int = 100
    set_size: int = 4
    set_steps: int = 400
    digits_steps: int = 1_000
    digits_layers: int = 6
    digits_hidden: int = 64
    digits_noise_hidden: int = 64
    digits_batch: int = 128
    digits_lr: float = 2e-3
    timing_rounds: int = 20
    timing_inner: int = 5
    timing_warmup: int = 10
    profile_calls: int = 20
    seed: int = 0
    device: str = "cpu"
    workers: int = 2
    threads: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError(f"Config: expected a non-negative int {f.name}, got {v!r}")
        positive = ("n_train", "n_test", "steps", "batch_size", "num_layers", "hidden",
                    "surj_hidden", "extra", "num_particles", "set_steps", "digits_steps",
                    "digits_layers", "digits_hidden", "digits_noise_hidden", "digits_batch",
                    "timing_rounds", "timing_inner", "profile_calls", "workers", "threads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"Config: expected {name} >= 1, got {getattr(self, name)}")
        if self.set_size < 2:
            raise ValueError(f"Config: expected set_size >= 2, got {self.set_size}")
        for name in ("lr", "digits_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Config: expected a positive {name}, got {getattr(self, name)}")
        for value, allowed, what in ((self.sections, SECTIONS, "sections"),
                                     (self.datasets, tuple(datasets.DATASETS), "datasets"),
                                     (self.models, TOY_MODELS, "models")):
            bad = [v for v in value if v not in allowed]
            if bad or not value:
                raise ValueError(f"Config: expected {what} from {list(allowed)}, got {list(value)}")
        if "spline" not in self.models:
            raise ValueError("Config: the models must include 'spline' (the reference flow)")
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"Config: expected a torch device, got {self.device!r}") from err


DEFAULT = Config()
QUICK = Config(
    n_train=2_000, n_test=1_000, steps=100, num_particles=16, set_steps=100, digits_steps=100,
    digits_layers=4, timing_rounds=6, timing_inner=3, timing_warmup=3, profile_calls=5,
)


# ----------------------------------------------------------------------------- models


def toy_builders(cfg: Config) -> dict[str, Builder]:
    """The 2-D models, each a function of the coupling hidden width returning (base shape, layers).

    Layers run from the base to the data. ``abs`` puts a softplus under the
    abs surjection so the flow models ``|x|`` on the positive orthant; ``sort``
    puts Pyro's ``OrderedTransform`` under the sort surjection; ``max`` learns
    the position of the maximum. These three map small gaps or magnitudes to
    large negative latents (logarithms), so a data-initialized ``ActNorm``
    between the coupling stack and the surjection puts the flow's output on
    their scale (4 parameters). ``augment`` runs the flow in ``2 + extra``
    dimensions.

    Example:
        >>> base_shape, layers = toy_builders(QUICK)["augment"](8)
        >>> base_shape
        (4,)
    """
    L, s = cfg.num_layers, (cfg.surj_hidden,)

    def spline(h: int) -> Layers:
        return coupling_stack(2, L, h)

    def under(h: int) -> Layers:
        return [*spline(h), ActNorm(2)]

    return {
        "spline": lambda h: ((2,), spline(h)),
        "affine": lambda h: ((2,), coupling_stack(2, L, h, kind="affine")),
        "abs": lambda h: ((2,), [*under(h), T.SoftplusTransform(), AbsSurjection()]),
        "sort": lambda h: ((2,), [*under(h), T.OrderedTransform(), SortSurjection()]),
        "max": lambda h: ((2,), [*under(h), MaxSurjection(2, hidden=s)]),
        "augment": lambda h: (
            (2 + cfg.extra,),
            [*coupling_stack(2 + cfg.extra, L, h), AugmentSurjection(2, cfg.extra, hidden=s)],
        ),
    }


def _flow(builder: Builder, hidden: int) -> Flow:
    base_shape, layers = builder(hidden)
    return Flow(base_shape, layers)


def match_hidden(builder: Builder, target: int, low: int = 2, high: int = 4096) -> tuple[int, int]:
    """The hidden width whose model has the parameter count closest to ``target``.

    The count grows with the width, so doubling and then bisection find the first
    width at or above the target; the closer of it and its predecessor wins.

    Returns:
        ``(hidden, count)``.

    Example:
        >>> b = toy_builders(QUICK)
        >>> target = count_parameters(_flow(b["spline"], 32))
        >>> h, n = match_hidden(b["affine"], target)
        >>> abs(n - target) / target < 0.05
        True
    """
    if not isinstance(target, int) or target < 1:
        raise ValueError(f"match_hidden: expected a positive int target, got {target!r}")

    def count(h: int) -> int:
        return count_parameters(_flow(builder, h))

    lo, hi = low, low
    while count(hi) < target:  # doubling first: huge widths are slow to build
        if hi >= high:
            return high, count(high)
        lo, hi = hi + 1, min(2 * hi, high)
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min({lo, max(low, lo - 1)}, key=lambda h: (abs(count(h) - target), h))
    return best, count(best)


def _seconds_and_fit(flow: Flow, data: Tensor, steps: int, batch_size: int, lr: float,
                     seed: int) -> tuple[float, float]:
    start = time.perf_counter()
    losses = fit_density(flow, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    return time.perf_counter() - start, losses[-1]


def _find(rows: list[dict[str, Any]], model: str, dataset: str) -> dict[str, Any]:
    return next(r for r in rows if r["model"] == model and r["dataset"] == dataset)


# ----------------------------------------------------------------------------- sections


def _toy_split(cfg: Config, ds: str) -> tuple[Tensor, Tensor]:
    device = torch.device(cfg.device)
    train = datasets.load(ds, cfg.n_train, seed=cfg.seed).to(device)
    test = datasets.load(ds, cfg.n_test, seed=cfg.seed + 1000).to(device)
    return train, test


def _toy_job(cfg: Config, ds: str, name: str, hidden: int) -> dict[str, Any]:
    """Train one toy model on one data set (one worker's job)."""
    train, test = _toy_split(cfg, ds)
    torch.manual_seed(cfg.seed)
    flow = _flow(toy_builders(cfg)[name], hidden).to(train.device)
    secs, last = _seconds_and_fit(flow, train, cfg.steps, cfg.batch_size, cfg.lr, cfg.seed)
    return {"dataset": ds, "model": name, "params": count_parameters(flow),
            "test_nll": evaluate_nll(flow, test, num_particles=cfg.num_particles),
            "final_loss": last, "train_seconds": secs}


def run_toy(cfg: Config) -> dict[str, Any]:
    """Train every toy model on every 2-D data set; return parameter counts and test NLLs.

    Returns:
        ``{"params": {model: {"hidden", "params", "relative"}}, "rows": [...]}``; each
        row has ``dataset``, ``model``, ``params``, ``test_nll`` (nats per point,
        importance weighted for the augmented flow), ``final_loss`` and ``train_seconds``.
    """
    builders = {k: v for k, v in toy_builders(cfg).items() if k in cfg.models}
    target = count_parameters(_flow(builders["spline"], cfg.hidden))
    params: dict[str, dict[str, Any]] = {}
    for name, builder in builders.items():
        h, n = (cfg.hidden, target) if name == "spline" else match_hidden(builder, target)
        params[name] = {"hidden": h, "params": n, "relative": n / target - 1.0}
    print_table(
        "Parameter counts (hidden width chosen to match the plain spline flow)",
        [{"model": k, **v} for k, v in params.items()],
        [Column("model", "model"), Column("hidden", "hidden"), Column("params", "params"),
         Column("relative", "vs spline", "+.1%")],
    )
    jobs = [(cfg, ds, m, params[m]["hidden"]) for ds in cfg.datasets for m in builders]
    rows = parallel_map(_toy_job, jobs, cfg.workers, cfg.threads)
    pivot = [{"dataset": ds, **{m: _find(rows, m, ds)["test_nll"] for m in builders}}
             for ds in cfg.datasets]
    print_table(
        f"2-D test NLL (nats per point, lower is better; {cfg.steps} Adam steps, "
        f"batch {cfg.batch_size}; augment: importance-weighted, K={cfg.num_particles})",
        pivot, [Column("dataset", "dataset")] + [Column(m, m, ".3f") for m in builders],
    )
    return {"params": params, "rows": rows}


def _sets_builders(cfg: Config) -> dict[str, Builder]:
    d = cfg.set_size

    def stack(h: int) -> Layers:
        return [*coupling_stack(d, cfg.num_layers, h), ActNorm(d)]

    return {
        "spline": lambda h: ((d,), stack(h)),
        "sort": lambda h: ((d,), [*stack(h), T.OrderedTransform(), SortSurjection()]),
    }


def _sets_job(cfg: Config, name: str) -> dict[str, Any]:
    device = torch.device(cfg.device)
    train = datasets.exchangeable_sets(cfg.n_train, cfg.set_size, seed=cfg.seed).to(device)
    test = datasets.exchangeable_sets(cfg.n_test, cfg.set_size, seed=cfg.seed + 1000).to(device)
    torch.manual_seed(cfg.seed)
    flow = _flow(_sets_builders(cfg)[name], cfg.hidden).to(device)
    secs, _ = _seconds_and_fit(flow, train, cfg.set_steps, cfg.batch_size, cfg.lr, cfg.seed)
    return {"model": name, "params": count_parameters(flow),
            "test_nll": evaluate_nll(flow, test, cfg.num_particles), "train_seconds": secs}


def run_sets(cfg: Config) -> dict[str, Any]:
    """A plain spline flow versus a sort flow on exchangeable sets of ``set_size`` numbers.

    The sort flow models the sorted set with ``OrderedTransform`` and recovers the
    ``log D!`` of the orderings exactly; both flows have the same parameters and end
    in a data-initialized ``ActNorm`` (the sort flow's latent holds log-gaps, whose
    long left tail leaves the range of the splines otherwise).
    """
    d = cfg.set_size
    rows = parallel_map(_sets_job, [(cfg, m) for m in ("spline", "sort")], cfg.workers,
                        cfg.threads)
    print_table(
        f"Exchangeable sets of {d} (test NLL nats per set; log {d}! = {math.lgamma(d + 1):.3f})",
        rows, [Column("model", "model"), Column("params", "params"),
               Column("test_nll", "test NLL", ".3f"), Column("train_seconds", "train s", ".1f")],
    )
    return {"set_size": d, "rows": rows}


def _digits_builder(cfg: Config, variational: bool) -> Builder:
    def build(h: int) -> tuple[tuple[int, ...], Layers]:
        deq: nn.Module = (
            VariationalDequantization(64, DIGIT_LEVELS, hidden=(cfg.digits_noise_hidden,))
            if variational else UniformDequantization(DIGIT_LEVELS)
        )
        layers = coupling_stack(64, cfg.digits_layers, h, kind="affine")
        return (64,), layers + [ActNorm(64), T.SigmoidTransform(), deq]
    return build


def _digits_job(cfg: Config, name: str, hidden: int) -> dict[str, Any]:
    device = torch.device(cfg.device)
    train, test = (t.to(device) for t in datasets.digits(seed=cfg.seed))
    per_dim = 64 * math.log(2)
    torch.manual_seed(cfg.seed)
    flow = _flow(_digits_builder(cfg, name == "variational"), hidden).to(device)
    secs, _ = _seconds_and_fit(flow, train, cfg.digits_steps, cfg.digits_batch, cfg.digits_lr,
                               cfg.seed)
    torch.manual_seed(cfg.seed + 1)
    return {"dequantization": name, "hidden": hidden, "params": count_parameters(flow),
            "test_bpd_bound": evaluate_nll(flow, test, num_particles=1) / per_dim,
            "test_bpd_iw": evaluate_nll(flow, test, cfg.num_particles) / per_dim,
            "train_bpd_iw": evaluate_nll(flow, train, cfg.num_particles) / per_dim,
            "n_train": int(train.shape[0]), "n_test": int(test.shape[0]), "train_seconds": secs}


def run_digits(cfg: Config) -> dict[str, Any]:
    """Bits per dimension on the 8x8 digits under uniform and variational dequantization.

    The flow (affine couplings, ActNorm, sigmoid onto the unit cube) is the same;
    the variational model's coupling width is reduced so that its parameter
    count, noise network included, matches the uniform one's. Bits/dim is the
    NLL in nats of the integer images divided by ``64 ln 2``; ``bound`` is the
    single-sample bound and ``iw`` the importance-weighted estimate (both upper
    bounds on the discrete NLL in expectation; ``iw`` the tighter).
    """
    target = count_parameters(_flow(_digits_builder(cfg, False), cfg.digits_hidden))
    h_var, _ = match_hidden(_digits_builder(cfg, True), target)
    jobs = [(cfg, "uniform", cfg.digits_hidden), (cfg, "variational", h_var)]
    rows = parallel_map(_digits_job, jobs, cfg.workers, cfg.threads)
    print_table(
        f"Digits 8x8, {DIGIT_LEVELS} levels ({rows[0]['n_train']} train / {rows[0]['n_test']} "
        f"test, {cfg.digits_steps} steps; bits/dim, lower is better; iw: K={cfg.num_particles})",
        rows, [Column("dequantization", "dequantization"), Column("hidden", "hidden"),
               Column("params", "params"), Column("test_bpd_bound", "test bound", ".3f"),
               Column("test_bpd_iw", "test iw", ".3f"), Column("train_bpd_iw", "train iw", ".3f"),
               Column("train_seconds", "train s", ".1f")],
    )
    return {"rows": rows}


# ----------------------------------------------------------------------------- zuko


def _zuko_nsf(cfg: Config) -> nn.Module:
    import zuko

    return zuko.flows.NSF(features=2, transforms=cfg.num_layers,
                          hidden_features=[cfg.hidden, cfg.hidden], passes=2)


def fit_zuko(flow: nn.Module, data: Tensor, steps: int, batch_size: int, lr: float,
             seed: int) -> list[float]:
    """Train a zuko flow exactly as ``fit_density`` trains ours (Adam, cosine decay,
    minibatches drawn with replacement after ``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, data.shape[0], (batch_size,), device=data.device)
        loss = -flow().log_prob(data[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    out = torch.stack(losses).tolist()
    if not all(math.isfinite(v) for v in out):
        raise FloatingPointError("fit_zuko: the loss became NaN or inf")
    return out


WHATIF: dict[str, str] = {
    "A": "what-if A: identity first half",
    "B": "what-if B: A + quadratic, forward",
}


def _whatif_stack(cfg: Config, variant: str) -> tuple[Layers, nn.ModuleList]:
    """Pyro spline couplings built as zuko builds them, to show where our time goes.

    ``"A"`` is ``coupling_stack`` with ``identity=True``: the first half of each
    coupling passes through unchanged (Durkan et al.'s coupling) instead of going
    through an extra unconditional spline, so one spline is evaluated per layer
    instead of two. ``"B"`` also uses rational-quadratic splines (``order="quadratic"``,
    as zuko) and puts each coupling in the flow as ``.inv``, so that ``log_prob``
    runs the spline's cheap forward direction (zuko's convention) instead of its
    inverse. Returns the layers and their modules (``Flow`` does not register the
    parameters of an inverted Pyro module, so the caller must hold them).
    """
    if variant not in WHATIF:
        raise ValueError(f"_whatif_stack: expected a variant in {sorted(WHATIF)}, got {variant!r}")
    layers: Layers = []
    modules = nn.ModuleList()
    bins, order = 8, ("linear" if variant == "A" else "quadratic")
    for i in range(cfg.num_layers):
        dims = [bins, bins, bins - 1] + ([bins] if order == "linear" else [])
        net = DenseNN(1, [cfg.hidden, cfg.hidden], dims)
        t = T.SplineCoupling(2, 1, net, bins, 4.0, order=order, identity=True)
        modules.append(t)
        layers.append(t if variant == "A" else t.inv)
        if i < cfg.num_layers - 1:
            layers.append(T.Permute(torch.tensor([1, 0])))
    return layers, modules


def _whatif_flow(cfg: Config, variant: str) -> Flow:
    layers, modules = _whatif_stack(cfg, variant)
    flow = Flow((2,), layers)
    flow.whatif_modules = modules  # registers the parameters (a no-op for "A")
    return flow


def _clock(device: torch.device) -> tuple[Callable[[], float], str]:
    """CPU time of this thread on the CPU (blind to other processes), else wall time."""
    if device.type == "cpu":
        return time.thread_time, "thread CPU time"
    return time.perf_counter, "wall time"


def _timed_step(log_prob: Callable[[Tensor], Tensor], params: list[nn.Parameter], data: Tensor,
                batch_size: int, phases: dict[str, list[float]]) -> Callable[[], None]:
    """One training step (fresh minibatch, log_prob, backward, Adam) recording phase times."""
    opt = torch.optim.Adam(params, lr=1e-3)
    sync = torch.cuda.synchronize if data.device.type == "cuda" else (lambda: None)
    clock, _ = _clock(data.device)

    def step() -> None:
        x = data[torch.randint(0, data.shape[0], (batch_size,), device=data.device)]
        sync()
        t0 = clock()
        loss = -log_prob(x).mean()
        sync()
        t1 = clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = clock()
        opt.step()
        sync()
        t3 = clock()
        for k, v in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
            phases.setdefault(k, []).append(v)

    return step


def _timing_rows(flows: dict[str, tuple[Any, list[nn.Parameter]]],
                 samples: dict[str, list[float]], phases: dict[str, dict[str, list[float]]],
                 inner: int) -> list[dict[str, Any]]:
    rows = []
    for name, (_, params) in flows.items():
        timed = len(samples[name]) * inner  # the last calls recorded are the timed ones
        rows.append({
            "flow": name, "params": sum(p.numel() for p in params),
            "step_ms": 1e3 * median(samples[name]),
            **{f"{k}_ms": 1e3 * median(v[-timed:]) for k, v in phases[name].items()},
            "vs_zuko": median([a / b for a, b in zip(samples[name], samples["zuko NSF"],
                                                     strict=True)]),
        })
    return rows


def _timing(cfg: Config, data: Tensor) -> dict[str, Any]:
    """Interleaved step times of ours, raw Pyro, zuko and the what-if flows, plus a profile."""
    device = data.device
    torch.manual_seed(cfg.seed)
    ours = Flow((2,), coupling_stack(2, cfg.num_layers, cfg.hidden)).to(device)
    torch.manual_seed(cfg.seed)
    raw_transforms = coupling_stack(2, cfg.num_layers, cfg.hidden)
    raw_modules = nn.ModuleList(t for t in raw_transforms if isinstance(t, nn.Module)).to(device)
    zero = torch.zeros(2, device=device)
    torch.manual_seed(cfg.seed)
    zflow = _zuko_nsf(cfg).to(device)
    torch.manual_seed(cfg.seed)
    whatif = {v: _whatif_flow(cfg, v).to(device) for v in WHATIF}

    def ours_lp(x: Tensor) -> Tensor:
        with validation(False):  # as in fit_density
            return ours.log_prob(x)

    def raw_lp(x: Tensor) -> Tensor:
        base = dist.Normal(zero, torch.ones_like(zero)).to_event(1)
        return dist.TransformedDistribution(base, raw_transforms).log_prob(x)

    def whatif_lp(variant: str) -> Callable[[Tensor], Tensor]:
        def lp(x: Tensor) -> Tensor:
            with validation(False):
                return whatif[variant].log_prob(x)
        return lp

    flows = {
        "pyro-relax Flow": (ours_lp, list(ours.parameters())),
        "raw Pyro TransformedDistribution": (raw_lp, list(raw_modules.parameters())),
        "zuko NSF": (lambda x: zflow().log_prob(x), list(zflow.parameters())),
        **{WHATIF[v]: (whatif_lp(v), list(f.parameters())) for v, f in whatif.items()},
    }
    phases: dict[str, dict[str, list[float]]] = {k: {} for k in flows}
    steps = {k: _timed_step(lp, p, data, cfg.batch_size, phases[k]) for k, (lp, p) in flows.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clock, clock_name = _clock(device)
        samples = interleaved_timing(steps, rounds=cfg.timing_rounds, inner=cfg.timing_inner,
                                     warmup=cfg.timing_warmup, clock=clock)
        ratio_samples = [a / b for a, b in zip(samples["pyro-relax Flow"], samples["zuko NSF"],
                                               strict=True)]
        overhead_samples = [a / b for a, b in zip(samples["pyro-relax Flow"],
                                                  samples["raw Pyro TransformedDistribution"],
                                                  strict=True)]
        ratio = median(ratio_samples)
        rows = _timing_rows(flows, samples, phases, cfg.timing_inner)
        profile = None
        if ratio > 1.0:
            groups = {
                "Pyro spline math (spline.py)": ["pyro/distributions/transforms/spline.py"],
                "Pyro coupling, DenseNN, other Pyro": ["pyro/"],
                "pyro-relax wrapper (Flow, adapter, layers)": ["pyro_relax/"],
                "autograd backward (C++ engine)": ["run_backward"],
                "Adam step": ["torch/optim/"],
                "torch.distributions glue, other torch Python": ["torch/"],
            }
            # thin torch wrappers: their time belongs to whoever calls them
            wrappers = ["torch/nn/functional.py", "torch/nn/modules/module.py",
                        "torch/functional.py"]
            profile = profile_breakdown(steps["pyro-relax Flow"], cfg.profile_calls, groups,
                                        passthrough=wrappers, clock=clock)
    finally:
        torch.set_num_threads(threads)
    return {"rows": rows, "ratio_ours_over_zuko": ratio,
            "ratio_ours_over_raw_pyro": median(overhead_samples),
            "ratio_samples": ratio_samples, "profile": profile, "clock": clock_name,
            "batch_size": cfg.batch_size, "rounds": cfg.timing_rounds, "inner": cfg.timing_inner}


def _zuko_job(cfg: Config, ds: str, which: str) -> float:
    """Test NLL after training ``which`` (``"ours"``, ``"zuko"``, ``"A"`` or ``"B"``) on one set."""
    train, test = _toy_split(cfg, ds)
    torch.manual_seed(cfg.seed)
    if which == "zuko":
        zflow = _zuko_nsf(cfg).to(train.device)
        fit_zuko(zflow, train, cfg.steps, cfg.batch_size, cfg.lr, cfg.seed)
        with torch.no_grad():
            return float(-zflow().log_prob(test).mean())
    if which == "ours":
        flow = _flow(toy_builders(cfg)["spline"], cfg.hidden).to(train.device)
    elif which in WHATIF:
        flow = _whatif_flow(cfg, which).to(train.device)
    else:
        raise ValueError(f"_zuko_job: expected 'ours', 'zuko', 'A' or 'B', got {which!r}")
    fit_density(flow, train, cfg.steps, cfg.batch_size, cfg.lr, cfg.seed)
    return evaluate_nll(flow, test)


def run_zuko(cfg: Config, toy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain spline flow against zuko's NSF: test NLL on the 2-D sets and step time.

    Our plain-flow NLLs are taken from ``toy`` when given (same seeds and budget),
    else trained here. The what-if flows (zuko-style couplings in Pyro, see
    :func:`_whatif_stack`) are trained too, so their NLL can be weighed against their speed.
    """
    known = {r["dataset"]: r["test_nll"] for r in (toy or {}).get("rows", [])
             if r["model"] == "spline"}
    jobs = [(cfg, ds, w) for ds in cfg.datasets for w in ("zuko", *WHATIF)]
    jobs += [(cfg, ds, "ours") for ds in cfg.datasets if ds not in known]
    values = parallel_map(_zuko_job, jobs, cfg.workers, cfg.threads)
    nll = {(ds, which): v for (_, ds, which), v in zip(jobs, values, strict=True)}
    nll.update({(ds, "ours"): v for ds, v in known.items()})
    rows = [{"dataset": ds, "ours_nll": nll[ds, "ours"], "zuko_nll": nll[ds, "zuko"],
             "diff": nll[ds, "ours"] - nll[ds, "zuko"],
             **{f"whatif_{v}_nll": nll[ds, v] for v in WHATIF}}
            for ds in cfg.datasets]
    print_table(
        "Plain spline flow: pyro-relax vs zuko NSF (test NLL nats, same budget; "
        "diff = ours - zuko; A, B: the what-if couplings of the timing table)", rows,
        [Column("dataset", "dataset"), Column("ours_nll", "ours", ".3f"),
         Column("zuko_nll", "zuko", ".3f"), Column("diff", "diff", "+.3f"),
         Column("whatif_A_nll", "A", ".3f"), Column("whatif_B_nll", "B", ".3f")],
    )
    timing = _timing(cfg, _toy_split(cfg, cfg.datasets[0])[0])
    print_table(
        f"Training step time ({timing['clock']}, 1 thread, batch {cfg.batch_size}, medians of "
        f"{cfg.timing_rounds} interleaved rounds x {cfg.timing_inner} steps)",
        timing["rows"],
        [Column("flow", "flow"), Column("params", "params"), Column("step_ms", "step ms", ".2f"),
         Column("forward_ms", "fwd ms", ".2f"), Column("backward_ms", "bwd ms", ".2f"),
         Column("optimizer_ms", "adam ms", ".2f"), Column("vs_zuko", "/ zuko", ".2f")],
    )
    print(f"ratio ours/zuko = {timing['ratio_ours_over_zuko']:.2f} (goal <= 1.0); "
          f"wrapper overhead ours/raw Pyro = {timing['ratio_ours_over_raw_pyro']:.2f}")
    if timing["profile"] is not None:
        prof = timing["profile"]
        print_table("Where our training step spends its time (cProfile, own time by group)",
                    [{"group": k, "share": v} for k, v in
                     sorted(prof["groups"].items(), key=lambda kv: -kv[1])],
                    [Column("group", "group"), Column("share", "share", ".1%")])
        print_table("Costliest functions (own time)", prof["top"],
                    [Column("function", "function"), Column("group", "group"),
                     Column("calls", "calls"), Column("fraction", "share", ".1%")])
    return {"nll": rows, "timing": timing,
            "zuko_params": count_parameters(_zuko_nsf(cfg)),
            "ours_params": count_parameters(_flow(toy_builders(cfg)["spline"], cfg.hidden))}


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every size of :class:`Config` can be overridden)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    p.add_argument("--sections", type=str, default=None,
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--datasets", type=str, default=None,
                   help=f"comma-separated subset of {','.join(sorted(datasets.DATASETS))}")
    p.add_argument("--models", type=str, default=None,
                   help=f"comma-separated subset of {','.join(TOY_MODELS)} (spline required)")
    p.add_argument("--peers", action="store_true",
                   help="run the peers' 2-D protocol (ours vs zuko NSF) instead of the sections")
    p.add_argument("--peers-steps", type=int, default=PeersConfig.steps,
                   help=f"steps of --peers (default {PeersConfig.steps})")
    p.add_argument("--peers-n-test", type=int, default=PeersConfig.n_test,
                   help=f"test points of --peers (default {PeersConfig.n_test})")
    p.add_argument("--peers-datasets", type=str, default=",".join(PEER_DATASETS),
                   help="comma-separated data sets of --peers")
    p.add_argument("--peers-lr", type=float, default=PeersConfig.lr,
                   help=f"Adam learning rate of every model in --peers (default {PeersConfig.lr})")
    p.add_argument("--peers-bins", type=int, default=None,
                   help="bins of our stack in --peers (default: density_stack's)")
    p.add_argument("--no-survae", dest="survae", action="store_false",
                   help="--peers without the SurVAE stacks")
    for f in dataclasses.fields(Config):
        if f.name in ("sections", "datasets", "models"):
            continue
        kind = {"int": int, "float": float, "str": str}[str(f.type)]
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                       help=f"default {getattr(DEFAULT, f.name)}, quick {getattr(QUICK, f.name)}")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset (``--quick`` or the default) with the options given on the command line."""
    base = QUICK if args.quick else DEFAULT
    changes: dict[str, Any] = {}
    for name in ("sections", "datasets", "models"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = tuple(v.strip() for v in value.split(",") if v.strip())
    for f in dataclasses.fields(Config):
        value = getattr(args, f.name, None)
        if f.name not in changes and value is not None:
            changes[f.name] = value
    return dataclasses.replace(base, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status (2 for bad options)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        print(f"density.py: error: {err}", file=sys.stderr)
        return 2
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        print("density.py: error: --device cuda asked for, but CUDA is not available",
              file=sys.stderr)
        return 2
    if args.json is not None and not args.json.parent.exists():
        print(f"density.py: error: folder {str(args.json.parent)!r} does not exist",
              file=sys.stderr)
        return 2
    torch.set_num_threads(cfg.threads)
    if args.peers:
        return _main_peers(args, cfg)
    start = time.perf_counter()
    print(f"density benchmark ({'quick' if args.quick else 'default'}): "
          f"sections {','.join(cfg.sections)}, device {cfg.device}, "
          f"{cfg.workers} worker(s) x {cfg.threads} thread(s)")
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "quick": bool(args.quick)}
    try:
        if "toy" in cfg.sections:
            results["toy"] = run_toy(cfg)
        if "sets" in cfg.sections:
            results["sets"] = run_sets(cfg)
        if "digits" in cfg.sections:
            results["digits"] = run_digits(cfg)
        if "zuko" in cfg.sections:
            results["zuko"] = run_zuko(cfg, results.get("toy"))
    finally:
        shutdown_pools()
    results["total_seconds"] = time.perf_counter() - start
    print(f"\ntotal time {results['total_seconds']:.0f} s")
    if args.json is not None:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


def _main_peers(args: argparse.Namespace, cfg: Config) -> int:
    """``--peers``: the peers' protocol, one data set per worker, one thread each."""
    names = tuple(v.strip() for v in args.peers_datasets.split(",") if v.strip())
    bad = [n for n in names if n not in PEER_DATASETS]
    if (bad or not names or args.peers_steps < 1 or args.peers_n_test < 1
            or not (math.isfinite(args.peers_lr) and args.peers_lr > 0)):
        print(f"density.py: error: expected --peers-datasets from {list(PEER_DATASETS)} and "
              f"positive --peers-steps, --peers-n-test and --peers-lr, got {list(names)}, "
              f"{args.peers_steps}, {args.peers_n_test}, {args.peers_lr}", file=sys.stderr)
        return 2
    pcfg = PeersConfig(steps=args.peers_steps, n_test=args.peers_n_test, datasets=names,
                       lr=args.peers_lr,
                       our_bins=args.peers_bins, survae=args.survae, seed=cfg.seed)
    print(f"density benchmark --peers: {pcfg}")
    start = time.perf_counter()
    try:
        out = run_peers(pcfg, lambda f, jobs: parallel_map(f, jobs, cfg.workers, 1))
    finally:
        shutdown_pools()
    print_table(
        f"Peers' 2-D protocol ({pcfg.steps} steps, batch {pcfg.batch_size}, {pcfg.num_layers} "
        f"layers, 2 x {pcfg.hidden} hidden, bound {pcfg.bound}, lr {pcfg.lr:g} (cosine), "
        f"{pcfg.n_test} test points; "
        f"thread CPU seconds per 100 steps, alternated in one loop; gap = test NLL - true NLL)",
        out["rows"],
        [Column("dataset", "dataset"), Column("model", "model"), Column("params", "params"),
         Column("cpu_s_per_100", "CPU s/100", ".2f"), Column("time_vs_zuko", "/ zuko", ".2f"),
         Column("test_nll", "test NLL", ".3f"), Column("true_nll", "true NLL", ".3f"),
         Column("gap", "gap", ".3f")],
    )
    print_table("Summary (median step-time ratio to zuko over the data sets, mean gap)",
                out["summary"],
                [Column("model", "model"), Column("datasets", "sets"), Column("params", "params"),
                 Column("median_time_vs_zuko", "time / zuko", ".2f"),
                 Column("mean_gap", "mean gap", ".3f"), Column("max_gap", "max gap", ".3f")])
    out["config"] = dataclasses.asdict(pcfg)
    out["total_seconds"] = time.perf_counter() - start
    print(f"\ntotal time {out['total_seconds']:.0f} s")
    if args.json is not None:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
