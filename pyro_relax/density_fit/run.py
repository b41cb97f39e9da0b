"""The run of ``pyro-relax density``: its options, their checks, the training and the outputs.

Only :mod:`pyro_relax.cli` calls :func:`add_density_parser` and :func:`run_density`;
``run_density`` writes into the (temporary) folder the command hands it. The
training itself is :class:`pyro_relax.lightning.DensityModule` (several processes
with ``--devices N --strategy ddp``), imported only when a fit runs.
"""

from __future__ import annotations

__all__ = ["add_density_parser", "check_density_args", "run_density", "write_outputs"]

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pyro_relax.density_fit.data import BUILTIN, load_data, split_data
from pyro_relax.density_fit.flows import FLOWS, build_flow, save_density_model
from pyro_relax.distributions.flow import Flow

if TYPE_CHECKING:  # lightning is imported only when a fit runs
    from pyro_relax.lightning import DensityModule


def add_density_parser(subparsers: Any) -> argparse.ArgumentParser:  # noqa: ANN401 - no public type
    """Add the ``density`` subcommand with its own options and return its parser.

    The CLI adds ``--out``, ``--force``, ``--device``, ``--seed`` and
    ``--no-progress`` as for ``fit``.
    """
    p = subparsers.add_parser("density", help="fit a flow to data (.npy, .csv or a built-in set)")
    p.add_argument("data", help=f"a .npy or .csv file (points x columns) or one of {BUILTIN}")
    p.add_argument("--flow", choices=list(FLOWS), default="spline",
                   help="; ".join(f"{k}: {v}" for k, v in FLOWS.items()))
    p.add_argument("--steps", type=int, default=2000, help="most optimizer steps")
    p.add_argument("--batch-size", type=int, default=256, help="global batch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--layers", type=int, default=4, help="coupling layers")
    p.add_argument("--hidden", type=int, default=64, help="conditioner width")
    p.add_argument("--extra", type=int, default=2, help="added dimensions of --flow augment")
    p.add_argument("--bins", type=int, default=None,
                   help="levels of --flow (v)dequantize (default: the data's maximum + 1)")
    p.add_argument("--points", type=int, default=5000, help="points drawn from a built-in 2-D set")
    p.add_argument("--columns", type=int, default=None, help="the number of columns expected")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=10,
                   help="validations without improvement before stopping early")
    p.add_argument("--particles", type=int, default=64,
                   help="importance samples of the validation/test NLL of bound flows")
    p.add_argument("--devices", type=int, default=1, help="processes (CPU) or GPUs")
    p.add_argument("--strategy", default="auto",
                   help="auto (one process) or ddp (DistributedDataParallel over --devices)")
    return p


_COUNTS = {"steps": 1, "batch_size": 2, "layers": 1, "hidden": 2, "extra": 1, "points": 20,
           "patience": 1, "particles": 1, "devices": 1}


def check_density_args(args: argparse.Namespace) -> tuple[Tensor, int]:
    """Check the options and the data before anything runs; return the data and the bins.

    Raises:
        ValueError: with one line naming what was expected and what came.
    """
    from pyro_relax.lightning import check_devices

    for name, low in _COUNTS.items():
        v = getattr(args, name)
        if v < low:
            raise ValueError(f"expected --{name.replace('_', '-')} at least {low}, got {v}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"expected --lr a positive number, got {args.lr}")
    if args.strategy not in ("auto", "ddp"):
        raise ValueError(f"expected --strategy auto or ddp, got {args.strategy!r}")
    if args.strategy == "auto" and args.devices > 1:
        raise ValueError(f"--devices {args.devices} needs --strategy ddp")
    check_devices(_accelerator(args), args.devices)
    x = load_data(args.data, n=args.points, seed=args.seed)
    if args.columns is not None and x.shape[1] != args.columns:
        raise ValueError(f"expected {args.columns} columns (--columns) in {args.data}, "
                         f"got {x.shape[1]}")
    bins = args.bins
    if args.flow in ("dequantize", "vdequantize"):
        if bool((x != x.round()).any()) or bool((x < 0).any()):
            raise ValueError(f"--flow {args.flow} needs integers 0, 1, ... in {args.data}, "
                             f"got non-integer or negative values")
        top = int(x.max()) + 1
        bins = top if bins is None else bins
        if bins < max(2, top):
            raise ValueError(f"expected --bins above the data's largest value {top - 1}, "
                             f"got {bins}")
    return x, 256 if bins is None else bins


def _accelerator(args: argparse.Namespace) -> str:
    return "gpu" if str(getattr(args, "device", "cpu")).startswith("cuda") else "cpu"


def run_density(args: argparse.Namespace, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Fit the flow, then write ``model.pt``, ``metrics.json`` and the plots into ``out_dir``.

    Arguments:
        args: the parsed options (from :func:`add_density_parser` plus the CLI's).
        out_dir: the run's temporary folder (the CLI swaps it into place).

    Returns:
        The metrics written to ``metrics.json``.
    """
    from lightning.pytorch.callbacks import EarlyStopping
    from torch.utils.data import TensorDataset

    from pyro_relax.lightning import DensityModule, ShardedData, make_trainer

    out = Path(out_dir)
    x, bins = check_density_args(args)
    train, val, test = split_data(x, args.val_fraction, args.test_fraction, args.seed)
    batch = min(args.batch_size, train.shape[0]) // args.devices * args.devices
    if batch < args.devices:
        raise ValueError(f"expected at least {args.devices} training points per step, got {batch}")
    torch.manual_seed(args.seed)
    config = {"flow": args.flow, "dim": int(x.shape[1]), "layers": args.layers,
              "hidden": args.hidden, "extra": args.extra, "bins": bins}
    with torch.device("cpu"):  # Lightning moves the module to each worker's device
        flow = build_flow(args.flow, x.shape[1], num_layers=args.layers, hidden=args.hidden,
                          extra=args.extra, num_bins=bins)
    with torch.no_grad():  # data-dependent initialization (ActNorm) once, the same on every worker
        flow.log_prob(train[:batch])
    module = DensityModule(flow, lr=args.lr, num_particles=args.particles, seed=args.seed,
                           bits_per_dim=args.flow in ("dequantize", "vdequantize"))
    shards = ShardedData(TensorDataset(train), TensorDataset(val), batch_size=batch,
                         shuffle=True, seed=args.seed)
    work = out / "lightning"
    trainer = make_trainer(
        accelerator=_accelerator(args), devices=args.devices,
        strategy="ddp_spawn" if args.strategy == "ddp" else "auto",  # this process keeps --out
        max_steps=args.steps, log_dir=work, checkpoint_dir=work / "checkpoints",
        monitor="val_nll", callbacks=[EarlyStopping("val_nll", patience=args.patience)],
        progress=bool(getattr(args, "progress", False)),
    )
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=shards)
    except torch.multiprocessing.ProcessRaisedException as err:  # a spawned worker's traceback
        last = [line for line in str(err).splitlines() if line.strip()][-1]
        raise RuntimeError(f"a training worker failed: {last.strip()}") from err
    seconds = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    metrics = _metrics(module, train, val, test, config, args, seconds, work / "metrics.csv", best)
    write_outputs(out, module.flow, config, metrics, work / "metrics.csv", train)
    return metrics


@torch.no_grad()
def _metrics(module: DensityModule, train: Tensor, val: Tensor, test: Tensor,
             config: dict[str, Any],
             args: argparse.Namespace, seconds: float, log_csv: Path, best: str) -> dict[str, Any]:
    module.eval()
    d, per_bit = train.shape[1], train.shape[1] * math.log(2.0)
    out: dict[str, Any] = {"flow": args.flow, "data": args.data, "columns": d,
                           "exact": bool(module.flow().exact), "particles": args.particles}
    for name, part in (("train", train[:5000]), ("val", val), ("test", test)):
        part = part.to(module.device)
        nll = float(torch.cat([module.nll(c) for c in part.split(1024)]).mean())
        if not math.isfinite(nll):
            raise FloatingPointError(f"the {name} NLL of the trained flow is {nll}; "
                                     f"lower --lr or change --flow")
        out[f"{name}_nll"], out[f"{name}_bits_per_dim"] = nll, nll / per_bit
        out[f"n_{name}"] = int(part.shape[0]) if name != "train" else int(train.shape[0])
    steps = len(_read_log(log_csv)["train_loss"])  # spawned workers do not send their step back
    out.update({"seconds": seconds, "steps": steps, "devices": args.devices,
                "strategy": args.strategy, "best_checkpoint": os.path.basename(best) or None,
                "stopped_early": steps < args.steps, "config": config})
    return out


def write_outputs(folder: Path, flow: Flow, config: dict[str, Any], metrics: dict[str, Any],
                  log_csv: Path, train: Tensor) -> None:
    """Write ``model.pt``, ``metrics.json``, ``loss.png`` and, for 2-D data, ``density.png``."""
    save_density_model(folder, flow, config)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _plot_losses(log_csv, folder / "loss.png")
    if train.shape[1] == 2:
        _plot_density(flow, train.to(next(flow.parameters()).device), folder / "density.png",
                      metrics["particles"])


def _read_log(log_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """``(step, value)`` of ``train_loss`` and ``val_nll`` from Lightning's CSV log."""
    curves: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_nll": []}
    if log_csv.is_file():
        with log_csv.open() as f:
            for row in csv.DictReader(f):
                for k, pts in curves.items():
                    if row.get(k):
                        pts.append((int(row["step"]), float(row[k])))
    return curves


def _plot_losses(log_csv: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _read_log(log_csv)
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, pts in curves.items():
        if pts:
            ax.plot(*zip(*pts, strict=True), label=k, marker="o" if k == "val_nll" else None)
    ax.set(xlabel="step", ylabel="NLL (nats)", title="training")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


@torch.no_grad()
def _plot_density(flow: Flow, train: Tensor, path: Path, particles: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = train.min(0).values, train.max(0).values
    lattice = bool(flow.layers) and flow.layers[-1].takes_integers
    if lattice:
        # a dequantized flow has a mass on the integers, not a density: plot it on the lattice
        g0, g1 = (_lattice(float(lo[i]), float(hi[i])) for i in (0, 1))
    else:
        pad = 0.1 * (hi - lo)
        g0 = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), 80)
        g1 = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), 80)
    grid = torch.stack(torch.meshgrid(g0, g1, indexing="xy"), -1).reshape(-1, 2).to(train)
    d = flow()
    lp = d.log_prob(grid) if d.exact else d.log_prob_iw(grid, min(particles, 16))
    samples = flow.sample((min(2000, train.shape[0]),)).cpu()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharex=True, sharey=True)
    shown = train[:2000].cpu()
    axes[0].scatter(shown[:, 0], shown[:, 1], s=2)
    axes[0].set_title("data")
    axes[1].pcolormesh(g0, g1, lp.exp().reshape(len(g1), len(g0)).cpu(), shading="auto")
    axes[1].set_title("model density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, color="C1")
    axes[2].set_title("model samples")
    m = 0.5 if lattice else 0.0  # the lattice's cells reach half a step past its ends
    axes[0].set(xlim=(float(g0[0]) - m, float(g0[-1]) + m),
                ylim=(float(g1[0]) - m, float(g1[-1]) + m))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _lattice(lo: float, hi: float, most: int = 120) -> Tensor:
    """The integers from ``lo`` to ``hi`` (at most ``most`` of them, evenly thinned)."""
    values = torch.arange(math.floor(lo), math.ceil(hi) + 1, dtype=torch.get_default_dtype())
    if values.numel() > most:
        values = values[torch.linspace(0, values.numel() - 1, most).round().long()]
    return values
