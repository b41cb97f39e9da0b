"""SVI with any guide on a model with a subsampled data plate, as a LightningModule.

Pyro's recipe (its ``examples/svi_lightning.py``): the ELBO as a module
(``Trace_ELBO()(model, guide)``), a LightningModule whose ``training_step``
returns that loss, and an explicit subsample so workers do not draw the same one.
Here the subsample is the worker's shard of the indices: the model is called as
``model(ind, *tensors)`` and uses ``pyro.plate(name, size, subsample=ind)``.
"""

from __future__ import annotations

__all__ = [
    "GUIDE_NAMES",
    "IndexedDataset",
    "SVIModule",
    "fit_guide_distributed",
    "fit_svi_distributed",
]

import csv
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import pyro
import torch
from lightning.pytorch.callbacks import Callback
from pyro.infer import Trace_ELBO
from pyro.infer.elbo import ELBO
from torch import Tensor
from torch.utils.data import Dataset

from pyro_relax.core.checks import check_int
from pyro_relax.infer.runner import GUIDES, FitResult, make_guide
from pyro_relax.lightning._trainer import RNGStateMixin, ShardedData, finite_or_raise, make_trainer

# guides that train by plain SVI steps (the pipelines auto / pathfinder / flow-ais do not)
GUIDE_NAMES = tuple(name for name, method in GUIDES.items() if method.make is not None)
"""The guides :func:`fit_svi_distributed` can train: the SVI guides of the runner's table."""


class IndexedDataset(Dataset):
    """Items ``(i, t_1[i], ..., t_k[i])``: the index comes first, for the plate's subsample.

    Arguments:
        tensors: tensors sharing their first dimension (may be empty: indices only,
            then ``size`` gives the length).
        size: the number of items when no tensor is given.

    Example:
        >>> IndexedDataset(torch.zeros(3, 2))[1][0]
        tensor(1)
    """

    def __init__(self, *tensors: Tensor, size: int | None = None) -> None:
        if not tensors and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"IndexedDataset: expected tensors or a positive size, got {size!r}")
        lengths = {t.shape[0] for t in tensors if isinstance(t, Tensor) and t.dim() > 0}
        if tensors and (len(lengths) != 1 or any(not isinstance(t, Tensor) for t in tensors)):
            raise ValueError("IndexedDataset: expected tensors with one common first dimension, "
                             f"got shapes {[tuple(getattr(t, 'shape', ())) for t in tensors]}")
        self.tensors = tensors
        self.size = lengths.pop() if tensors else int(size)  # type: ignore[arg-type]

    def __len__(self) -> int:
        """The number of items (the plate's size)."""
        return self.size

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        """The index ``i`` as a tensor, then ``t[i]`` of every tensor."""
        return (torch.tensor(i),) + tuple(t[i] for t in self.tensors)


class SVIModule(RNGStateMixin, L.LightningModule):
    """The ELBO of ``model`` and ``guide`` as the training loss of a LightningModule.

    Every worker uses the same seed, so the guide's draws of the global latents
    agree across workers; each worker's ELBO is scaled by ``size / len(ind)``
    through the plate, so the DDP average of the workers' gradients is the
    gradient of the ELBO on the global batch (the same as one process).

    Arguments:
        model: a Pyro model called as ``model(ind, *tensors)`` (indices first).
        guide: a guide for it (an ``nn.Module``, e.g. an autoguide).
        example: one batch, ``(ind, *tensors)``, used to create the guide's parameters.
        lr: Adam learning rate.
        elbo: the ELBO (default ``Trace_ELBO()``).
        seed: torch seed (the same on every worker).

    Raises:
        TypeError: for a model that is not callable, a guide that is not an
            ``nn.Module``, or an ELBO that is not a Pyro ``ELBO``.
        ValueError: for a bad ``lr``, or a guide with no parameters.
    """

    def __init__(self, model: Callable[..., Any], guide: torch.nn.Module,
                 example: tuple[Tensor, ...], lr: float = 1e-2, elbo: ELBO | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"SVIModule: expected a callable model, got {type(model).__name__}")
        if not isinstance(guide, torch.nn.Module):
            raise TypeError(f"SVIModule: expected an nn.Module guide, got {type(guide).__name__}")
        elbo = Trace_ELBO() if elbo is None else elbo
        if not isinstance(elbo, ELBO):
            raise TypeError(f"SVIModule: expected a Pyro ELBO, got {type(elbo).__name__}")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"SVIModule: expected a positive finite lr, got {lr!r}")
        if not isinstance(example, tuple) or not example:
            raise TypeError("SVIModule: expected example a tuple (ind, *tensors), got "
                            f"{type(example).__name__}")
        with pyro.poutine.block(), torch.no_grad():
            guide(*example)  # creates the lazily built parameters before DDP wraps the module
        self.loss_fn = elbo(model, guide)
        if not any(p.requires_grad for p in self.loss_fn.parameters()):
            raise ValueError("SVIModule: the guide has no trainable parameters after one call")
        self.model, self.guide = model, guide
        self.lr, self.seed = float(lr), int(seed)
        self.history: list[float] = []

    def setup(self, stage: str) -> None:
        """In each worker: give guides that drop their model when pickled (ours) the model back."""
        attach = getattr(self.guide, "attach_model", None)
        if attach is not None:
            attach(self.model)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:  # noqa: ANN401
        """The ELBO loss of the batch's subsample."""
        loss = self.loss_fn(*batch)
        finite_or_raise(self, loss, "SVIModule")
        self.log("train_loss", loss, on_step=True, on_epoch=False, sync_dist=True,
                 batch_size=batch[0].shape[0])
        self.history.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the model's and the guide's parameters."""
        return torch.optim.Adam(self.loss_fn.parameters(), lr=self.lr)


def fit_svi_distributed(
    model: Callable[..., Any],
    guide_name: str,
    devices: int,
    *tensors: Tensor,
    size: int | None = None,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    strategy: str | None = None,
    accelerator: str = "cpu",
    log_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Callback] = (),
    elbo: ELBO | None = None,
) -> tuple[SVIModule, L.Trainer]:
    """Fit one of :data:`GUIDE_NAMES` to ``model`` by SVI on ``devices`` workers.

    Arguments:
        model: a Pyro model called as ``model(ind, *tensors)`` with a plate
            ``pyro.plate(name, N, subsample=ind)`` over the data.
        guide_name: one of :data:`GUIDE_NAMES`.
        devices: number of workers (CPU processes or GPUs).
        tensors: the data, sharing their first dimension (the plate's).
        size: the plate size when no tensor is given.
        steps: optimizer steps.
        batch_size: global subsample size per step (divisible by ``devices``).
        lr: Adam learning rate.
        seed: seed of the guide's draws and the data order.
        strategy: ``"ddp_spawn"`` (workers spawned from here; the trained guide comes
            back to this process), ``"ddp"`` (the script is run again per worker) or
            ``"auto"``; ``None``: ``"ddp_spawn"`` for several devices, else ``"auto"``.
        accelerator: ``"cpu"`` or ``"gpu"``.
        log_dir: folder of the CSV log (``train_loss`` per step).
        checkpoint_dir: folder of the checkpoints (``last.ckpt``).
        callbacks: more Lightning callbacks.
        elbo: the ELBO (default ``Trace_ELBO()``).

    Returns:
        The trained module (``module.guide`` is the guide) and the trainer.

    Raises:
        ValueError: for an unknown guide name, strategy, accelerator or device count.
    """
    if guide_name not in GUIDE_NAMES:
        raise ValueError(f"fit_svi_distributed: expected a guide in {list(GUIDE_NAMES)}, "
                         f"got {guide_name!r}")
    if strategy is None:
        strategy = "ddp_spawn" if devices != 1 else "auto"
    data = IndexedDataset(*tensors, size=size)
    shards = ShardedData(data, batch_size=batch_size, shuffle=True, seed=seed)
    trainer = make_trainer(accelerator=accelerator, devices=devices, strategy=strategy,
                           max_steps=steps, log_dir=log_dir, checkpoint_dir=checkpoint_dir,
                           callbacks=callbacks)
    torch.manual_seed(seed)
    guide = make_guide(model, guide_name)
    example = tuple(torch.stack(c) for c in zip(*(data[i] for i in range(batch_size)),
                                                 strict=True))
    module = SVIModule(model, guide, example, lr=lr, elbo=elbo, seed=seed)
    trainer.fit(module, datamodule=shards)
    return module, trainer


def fit_guide_distributed(
    model: Callable[..., Any],
    guide_name: str,
    devices: int,
    *tensors: Tensor,
    num_particles: int = 1,
    **options: Any,  # noqa: ANN401 - those of fit_svi_distributed
) -> FitResult:
    """:func:`fit_svi_distributed`, its result packed like :func:`~pyro_relax.infer.fit_guide`'s.

    The ``elbo`` of the result is the ELBO estimate of every step (the mean
    over the workers, each scaled to the whole data), read from the run's CSV
    log. Draw from the guide with
    ``guide_draws(fit, model, n, (torch.arange(N), *tensors))``: the model on
    all indices.

    Arguments:
        model: a Pyro model ``model(ind, *tensors)`` (see :func:`fit_svi_distributed`).
        guide_name: one of :data:`GUIDE_NAMES`.
        devices: number of workers.
        tensors: the data.
        num_particles: ELBO particles per step and worker.
        options: more options of :func:`fit_svi_distributed` (not ``log_dir``, ``elbo``).

    Returns:
        A :class:`~pyro_relax.infer.runner.FitResult` (its ``dtype`` is torch's default).
    """
    for name in ("log_dir", "elbo"):
        if name in options:
            raise TypeError(f"fit_guide_distributed: {name} is set here, got {name}=...")
    check_int(num_particles, "num_particles", "fit_guide_distributed", 1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pyro-relax-log-") as log_dir:
        module, _ = fit_svi_distributed(
            model, guide_name, devices, *tensors, log_dir=log_dir,
            elbo=Trace_ELBO(num_particles=num_particles), **options)
        with open(os.path.join(log_dir, "metrics.csv")) as f:
            losses = [float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")]
    seconds = time.perf_counter() - start
    elbo = [-v for v in losses]
    stage = {"stage": f"svi ({guide_name}) on {devices} workers", "seconds": seconds,
             "steps": len(elbo), "final_elbo": elbo[-1] if elbo else math.nan,
             "particles": num_particles, "devices": devices,
             "strategy": options.get("strategy") or ("ddp_spawn" if devices > 1 else "auto")}
    return FitResult(module.guide, elbo, seconds, guide_name, [stage], torch.get_default_dtype())
