"""Throughput of density training (samples per second) on 1 and N workers through Lightning.

Each row fits the same spline flow to built-in 2-D data with
:class:`pyro_relax.lightning.DensityModule` at the same global batch, on
``devices`` CPU processes (DDP over gloo) or GPUs (DDP over NCCL). The time
counted is rank 0's wall time from the end of the ``--warmup`` steps to the end
of training (process start, imports and the first steps are left out), and the
throughput is ``global batch x timed steps / seconds``. The headline number is
the ratio of the medians (over ``--repeats`` interleaved runs) to one worker; with
``OMP_NUM_THREADS`` unset, Lightning gives each of N CPU workers cores / N torch
threads. On a 2-core machine two processes share the cores that
one process's intra-op threads would otherwise use, so a ratio near 1 (or
below) is expected there; the gain appears with more cores or GPUs.

Usage::

    python benchmarks/scaling.py                     # CPU, 1 and 2 processes (about 3 minutes)
    python benchmarks/scaling.py --accelerator gpu --devices 1,2,4 --batch-size 8192
    python benchmarks/scaling.py --json results/scaling.json [--overwrite]
"""

from __future__ import annotations

__all__ = ["Throughput", "build_parser", "main", "measure"]

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import TensorDataset

from pyro_relax import datasets
from pyro_relax.distributions.flow import Flow
from pyro_relax.lightning import DensityModule, ShardedData, make_trainer
from pyro_relax.transforms.stacks import coupling_stack

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _common when imported elsewhere

from _common import Column, median, print_table, write_json  # noqa: E402


class Throughput(Callback):
    """Rank 0 writes ``{"steps", "seconds", "threads"}`` of the steps after ``warmup`` to ``path``.

    With ``threads``, every worker runs with that many torch threads.
    """

    def __init__(self, warmup: int, path: str, threads: int | None = None) -> None:
        self.warmup, self.path, self.start, self.threads = warmup, path, None, threads

    def on_fit_start(self, trainer: Any, module: Any) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            _sync(module)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: Any, module: Any) -> None:
        _sync(module)
        if trainer.global_rank == 0 and self.start is not None:
            seconds = time.perf_counter() - self.start
            Path(self.path).write_text(json.dumps(
                {"steps": trainer.global_step - self.warmup, "seconds": seconds,
                 "threads": torch.get_num_threads()}))


def _sync(module: Any) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


def measure(devices: int, *, accelerator: str = "cpu", steps: int = 60, warmup: int = 10,
            batch_size: int = 1024, hidden: int = 64, layers: int = 4,
            points: int = 65536, seed: int = 0, threads: int | None = None) -> dict[str, Any]:
    """One row: the samples per second of ``steps - warmup`` timed steps on ``devices`` workers."""
    if warmup >= steps:
        raise ValueError(f"expected --warmup below --steps, got {warmup} >= {steps}")
    torch.manual_seed(seed)
    flow = Flow((2,), coupling_stack(2, layers, hidden))
    data = datasets.two_moons(points, seed=seed)
    strategy = "auto" if devices == 1 else "ddp_spawn"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "time.json")
        trainer = make_trainer(accelerator=accelerator, devices=devices, strategy=strategy,
                               max_steps=steps, callbacks=[Throughput(warmup, path, threads)])
        trainer.fit(DensityModule(flow, lr=1e-3, seed=seed),
                    datamodule=ShardedData(TensorDataset(data), batch_size=batch_size, seed=seed))
        timed = json.loads(Path(path).read_text())
    rate = batch_size * timed["steps"] / timed["seconds"]
    return {"devices": devices, "accelerator": accelerator, "strategy": strategy,
            "batch_size": batch_size, "timed_steps": timed["steps"],
            "seconds": timed["seconds"], "threads_per_worker": timed["threads"],
            "samples_per_s": rate}


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--devices", default="1,2", help="comma-separated worker counts (first: base)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024, help="global batch size")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: cores / workers, Lightning's choice)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved repetitions of each worker count (the median is kept)")
    p.add_argument("--json", default=None, help="write the rows to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the rows, print the table with the ratio to the first worker count."""
    args = build_parser().parse_args(argv)
    try:
        counts = [int(c) for c in args.devices.split(",")]
    except ValueError:
        print(f"scaling: expected --devices like 1,2, got {args.devices!r}", file=sys.stderr)
        return 2
    if args.json and Path(args.json).exists() and not args.overwrite:
        print(f"scaling: {args.json} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"scaling: expected --threads >= 1, got {args.threads}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"scaling: expected --repeats >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(args.repeats):  # interleaved, so a busy spell of the machine hits both
        for n in counts:
            runs[n].append(measure(n, accelerator=args.accelerator, steps=args.steps,
                                   warmup=args.warmup, batch_size=args.batch_size,
                                   hidden=args.hidden, layers=args.layers,
                                   threads=args.threads))
    rows = []
    for n in counts:
        rates = sorted(r["samples_per_s"] for r in runs[n])
        row = dict(runs[n][0])
        row.update(samples_per_s=median(rates), all_samples_per_s=rates,
                   seconds=median([r["seconds"] for r in runs[n]]))
        rows.append(row)
    for r in rows:
        r["ratio"] = r["samples_per_s"] / rows[0]["samples_per_s"]
    print_table(f"Density training throughput ({args.accelerator}, global batch "
                f"{args.batch_size})", rows,
                [Column("devices", "workers"), Column("threads_per_worker", "threads"),
                 Column("timed_steps", "steps"),
                 Column("seconds", "seconds", ".2f"), Column("samples_per_s", "samples/s", ".0f"),
                 Column("ratio", "ratio", ".2f")])
    if args.json:
        write_json(args.json, {"rows": rows, "options": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
