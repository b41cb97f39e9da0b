"""The peers' 2-D protocol of ``benchmarks/density.py --peers``: ours against zuko's NSF.

Every model of a data set trains in one loop on the same minibatches, one step
each in turn, on one thread; the thread CPU time of each model's steps is summed
separately, so the step-time ratios are measured under the same machine load.
The test NLL is compared with the true NLL of the data (``datasets.log_density``),
so the gap measures the fit alone.
"""

from __future__ import annotations

__all__ = ["PEER_DATASETS", "PeersConfig", "peer_models", "run_peers"]

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from pyro_relax import datasets, validation
from pyro_relax.distributions.flow import Flow
from pyro_relax.surjections.abs import AbsSurjection
from pyro_relax.surjections.augment import AugmentSurjection
from pyro_relax.surjections.sort import SortSurjection
from pyro_relax.transforms.actnorm import ActNorm
from pyro_relax.transforms.stacks import density_stack

PEER_DATASETS: tuple[str, ...] = ("two_moons", "checkerboard", "eight_gaussians", "rings")
# the SurVAE stacks and the data sets whose symmetry they use (augment fits any data)
SURVAE_ON: dict[str, tuple[str, ...]] = {
    "abs": ("eight_gaussians", "rings"),  # symmetric under the sign flip of each coordinate
    "sort": ("checkerboard", "eight_gaussians", "rings"),  # symmetric under swapping x and y
    "augment": PEER_DATASETS,
}


@dataclass(frozen=True)
class PeersConfig:
    """The protocol: the peers' sizes; ``bins`` is zuko's, ``our_bins`` our default stack's."""

    steps: int = 2000
    batch_size: int = 512
    num_layers: int = 8
    hidden: int = 64
    bins: int = 8
    our_bins: int | None = None  # None: the default of density_stack
    bound: float = 5.0
    n_train: int = 50_000
    n_test: int = 20_000
    lr: float = 1e-3
    particles: int = 32
    seed: int = 0
    survae: bool = True
    datasets: tuple[str, ...] = PEER_DATASETS


def _ours(cfg: PeersConfig, dim: int = 2) -> list:
    kw = {} if cfg.our_bins is None else {"count_bins": cfg.our_bins}
    return density_stack(dim, cfg.num_layers, cfg.hidden, bound=cfg.bound, **kw)


def peer_models(cfg: PeersConfig, ds: str) -> dict[str, Callable[[], nn.Module]]:
    """The model factories for data set ``ds``: ours, zuko's NSF, normflows' NSF where
    installed, and the SurVAE stacks whose symmetry the data has."""
    import zuko

    models: dict[str, Callable[[], nn.Module]] = {
        "pyro-relax": lambda: Flow((2,), _ours(cfg)),
        "zuko NSF": lambda: zuko.flows.NSF(features=2, transforms=cfg.num_layers, bins=cfg.bins,
                                           hidden_features=[cfg.hidden, cfg.hidden]),
    }
    try:
        import normflows  # noqa: F401
    except ImportError:
        pass
    else:
        models["normflows NSF"] = lambda: _normflows_nsf(cfg)
    if cfg.survae:
        survae = {
            "abs": lambda: Flow((2,), [*_ours(cfg), ActNorm(2), T.SoftplusTransform(),
                                       AbsSurjection()]),
            "sort": lambda: Flow((2,), [*_ours(cfg), ActNorm(2), T.OrderedTransform(),
                                        SortSurjection()]),
            "augment": lambda: Flow((4,), [*_ours(cfg, 4),
                                           AugmentSurjection(2, 2, hidden=(cfg.hidden // 2,))]),
        }
        models.update({k: v for k, v in survae.items() if ds in SURVAE_ON[k]})
    return models


def _normflows_nsf(cfg: PeersConfig) -> nn.Module:  # pragma: no cover - not installed here
    import normflows as nf

    flows = []
    for _ in range(cfg.num_layers):
        flows += [nf.flows.AutoregressiveRationalQuadraticSpline(
            2, 2, cfg.hidden, num_bins=cfg.bins, tail_bound=cfg.bound), nf.flows.LULinearPermute(2)]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2), flows)


def _log_prob(model: nn.Module) -> Callable[[Tensor], Tensor]:
    if isinstance(model, Flow):
        return model.log_prob
    if hasattr(model, "log_prob"):  # normflows
        return model.log_prob
    return lambda x: model().log_prob(x)  # zuko: the module returns the distribution


@torch.no_grad()
def _test_nll(model: nn.Module, test: Tensor, particles: int) -> float:
    if isinstance(model, Flow) and not model().exact:
        d = model()
        lp = torch.cat([d.log_prob_iw(c, particles) for c in test.split(1024)])
    else:
        lp = torch.cat([_log_prob(model)(c) for c in test.split(4096)])
    return float(-lp.mean())


def _run_dataset(cfg: PeersConfig, ds: str) -> list[dict[str, Any]]:
    train = datasets.load(ds, cfg.n_train, seed=cfg.seed)
    test = datasets.load(ds, cfg.n_test, seed=cfg.seed + 1000)
    true_nll = float(-datasets.log_density(ds, test.double()).mean())
    models, opts, scheds, cpu, log_probs = {}, {}, {}, {}, {}
    for name, make in peer_models(cfg, ds).items():
        torch.manual_seed(cfg.seed)
        model = make()
        if isinstance(model, Flow):
            with torch.no_grad():  # data-initialized ActNorm, outside the timed steps
                model.log_prob(train[: cfg.batch_size])
        models[name], log_probs[name] = model, _log_prob(model)
        opts[name] = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        scheds[name] = torch.optim.lr_scheduler.CosineAnnealingLR(opts[name], cfg.steps)
        cpu[name] = 0.0
    g = torch.Generator().manual_seed(cfg.seed)
    with validation(False):  # as fit_density trains
        for _ in range(cfg.steps):
            x = train[torch.randint(0, train.shape[0], (cfg.batch_size,), generator=g)]
            for name in models:  # alternated: one step of each model in turn
                t0 = time.thread_time()
                loss = -log_probs[name](x).mean()
                opts[name].zero_grad(set_to_none=True)
                loss.backward()
                opts[name].step()
                scheds[name].step()
                cpu[name] += time.thread_time() - t0
    rows = []
    for name, model in models.items():
        torch.manual_seed(cfg.seed + 1)
        nll = _test_nll(model, test, cfg.particles)
        rows.append({"dataset": ds, "model": name,
                     "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                     "cpu_s_per_100": 100.0 * cpu[name] / cfg.steps, "test_nll": nll,
                     "true_nll": true_nll, "gap": nll - true_nll})
    zuko = next(r for r in rows if r["model"] == "zuko NSF")
    for r in rows:
        r["time_vs_zuko"] = r["cpu_s_per_100"] / zuko["cpu_s_per_100"]
    return rows


def run_peers(cfg: PeersConfig, job_map: Callable | None = None) -> dict[str, Any]:
    """Run the protocol on every data set (through ``job_map``, e.g. a process pool's map).

    Returns:
        ``{"rows": [...], "summary": [...]}``: a row per data set and model, and per
        model the median step-time ratio to zuko and the mean gap to the true NLL.
    """
    jobs = [(cfg, ds) for ds in cfg.datasets]
    per_ds = job_map(_run_dataset, jobs) if job_map else [_run_dataset(*j) for j in jobs]
    rows = [r for part in per_ds for r in part]
    summary = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        summary.append({"model": name, "datasets": len(mine),
                        "params": max(r["params"] for r in mine),
                        "median_time_vs_zuko": statistics.median(r["time_vs_zuko"] for r in mine),
                        "mean_gap": sum(r["gap"] for r in mine) / len(mine),
                        "max_gap": max(r["gap"] for r in mine)})
    finite = all(math.isfinite(r["test_nll"]) for r in rows)
    return {"rows": rows, "summary": summary, "all_finite": finite}
