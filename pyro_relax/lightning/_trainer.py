"""Trainer construction, option checks and the data module shared by the Lightning modules."""

from __future__ import annotations

__all__ = [
    "ACCELERATORS",
    "STRATEGIES",
    "RNGStateMixin",
    "ShardedData",
    "StepSampler",
    "check_devices",
    "check_strategy",
    "make_trainer",
]

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pyro_relax.core.checks import check_int

ACCELERATORS = ("cpu", "gpu")
STRATEGIES = {
    "auto": "one process (or Lightning's choice for the devices)",
    "ddp": "DistributedDataParallel, workers launched as new processes running the same script",
    "ddp_spawn": "DistributedDataParallel, workers spawned from this process (results come back)",
}


def check_strategy(strategy: object) -> str:
    """Return ``strategy`` if it is one of :data:`STRATEGIES`; else a one-line ``ValueError``."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"expected a strategy in {sorted(STRATEGIES)}, got {strategy!r}")
    return strategy


def check_devices(accelerator: object, devices: object) -> int:
    """Check the accelerator and the number of devices against what this machine has.

    Arguments:
        accelerator: ``"cpu"`` or ``"gpu"``.
        devices: number of processes (CPU) or GPUs, a positive int.

    Returns:
        ``devices`` as an int.

    Raises:
        TypeError: if ``devices`` is not an int.
        ValueError: for an unknown accelerator, or more devices than exist here.
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(f"expected accelerator one of {list(ACCELERATORS)}, got {accelerator!r}")
    if isinstance(devices, bool) or not isinstance(devices, int):
        raise TypeError(f"expected devices a positive int, got {type(devices).__name__}")
    if devices < 1:
        raise ValueError(f"expected devices >= 1, got {devices}")
    if accelerator == "gpu":
        have = torch.cuda.device_count()
        if devices > have:
            raise ValueError(f"expected at most {have} GPU devices (this machine has {have}), "
                             f"got devices={devices}")
    else:
        have = os.cpu_count() or 1
        if devices > have:
            raise ValueError(f"expected at most {have} CPU processes (this machine has {have} "
                             f"cores), got devices={devices}")
    return devices


def make_trainer(
    *,
    accelerator: str = "cpu",
    devices: int = 1,
    strategy: str = "auto",
    max_steps: int = 1000,
    max_epochs: int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every_n_epochs: int = 1,
    monitor: str | None = None,
    callbacks: Sequence[Callback] = (),
    val_every_n_epochs: int = 1,
    progress: bool = False,
) -> L.Trainer:
    """A ``lightning.Trainer`` set up the way the pyro-relax modules expect.

    The modules shard their data themselves (:class:`ShardedData`), so Lightning's
    own sampler replacement is off; on CPU, DDP uses the gloo backend. Checkpoints
    (``last.ckpt`` and, with ``monitor``, the best one) are written by rank 0 at the
    end of every ``checkpoint_every_n_epochs``-th epoch, where a resumed run
    continues exactly (see :class:`ShardedData`).

    Arguments:
        accelerator: ``"cpu"`` or ``"gpu"``.
        devices: processes (CPU) or GPUs.
        strategy: one of :data:`STRATEGIES`.
        max_steps: optimizer steps.
        max_epochs: optional bound on epochs (``None``: only ``max_steps``).
        log_dir: folder for the CSV log of the losses and metrics (``None``: no log).
        checkpoint_dir: folder for checkpoints (``None``: none).
        checkpoint_every_n_epochs: epochs between checkpoints.
        monitor: metric whose best value picks the best checkpoint (e.g. ``"val_nll"``).
        callbacks: more callbacks (early stopping, ...).
        val_every_n_epochs: epochs between validation runs.
        progress: show Lightning's progress bar.

    Returns:
        The trainer.

    Raises:
        ValueError: for a bad strategy, accelerator or device count.
    """
    devices = check_devices(accelerator, devices)
    check_strategy(strategy)
    for name, v in (("max_steps", max_steps), ("checkpoint_every_n_epochs",
                    checkpoint_every_n_epochs), ("val_every_n_epochs", val_every_n_epochs)):
        check_int(v, name, "make_trainer", 1)
    chosen: Any = strategy
    if strategy in ("ddp", "ddp_spawn"):
        backend = "nccl" if accelerator == "gpu" else "gloo"
        start = "popen" if strategy == "ddp" else "spawn"
        chosen = DDPStrategy(process_group_backend=backend, start_method=start)
    cbs = list(callbacks)
    if checkpoint_dir is not None:
        cbs.append(ModelCheckpoint(
            dirpath=os.fspath(checkpoint_dir), save_last=True, monitor=monitor, mode="min",
            save_top_k=1, every_n_epochs=checkpoint_every_n_epochs, save_on_train_epoch_end=True,
            filename="best" if monitor else "epoch{epoch}", auto_insert_metric_name=False,
        ))
    logger: Any = False if log_dir is None else CSVLogger(os.fspath(log_dir), name="", version="")
    return L.Trainer(
        accelerator=accelerator, devices=devices, strategy=chosen, max_steps=max_steps,
        max_epochs=-1 if max_epochs is None else max_epochs, logger=logger, callbacks=cbs,
        enable_checkpointing=checkpoint_dir is not None, use_distributed_sampler=False,
        num_sanity_val_steps=0, enable_progress_bar=progress, enable_model_summary=False,
        check_val_every_n_epoch=val_every_n_epochs, log_every_n_steps=1,
    )


class StepSampler(DistributedSampler):
    """A ``DistributedSampler`` whose epoch and position come from the optimizer step.

    When an iterator is made, the epoch is ``step // steps_per_epoch`` and the first
    ``step % steps_per_epoch`` batches are skipped, where ``step`` is what
    ``global_step()`` says; Lightning's own epoch counter (``set_epoch``), which
    differs by one after a resume from an epoch-end checkpoint, is ignored.

    Arguments:
        dataset: the dataset.
        global_step: returns the number of optimizer steps done so far.
        local_batch: items per worker per step.
        kwargs: ``num_replicas``, ``rank``, ``shuffle``, ``seed`` of ``DistributedSampler``.
    """

    def __init__(self, dataset: Dataset, global_step: Callable[[], int], local_batch: int,
                 **kwargs: Any) -> None:  # noqa: ANN401 - DataLoader's options
        super().__init__(dataset, drop_last=True, **kwargs)
        self.global_step, self.local_batch = global_step, local_batch
        self.steps_per_epoch = max(1, self.num_samples // local_batch)
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the epoch follows the optimizer step."""

    def __iter__(self) -> Iterator[object]:
        step = int(self.global_step())
        self.epoch, self._skip = divmod(step, self.steps_per_epoch)
        items = list(super().__iter__())
        return iter(items[self._skip * self.local_batch:])

    def __len__(self) -> int:
        skip = int(self.global_step()) % self.steps_per_epoch
        return self.num_samples - skip * self.local_batch


class ShardedData(L.LightningDataModule):
    """Training (and optional validation) data split between the workers without overlap.

    Each worker gets ``batch_size / world_size`` items per step from a
    ``DistributedSampler`` that knows the true world size (also with one process),
    so the global batch of a step is the same set of items whatever the number
    of workers. The order is a function of ``seed`` and the trainer's global step
    only (:class:`StepSampler`), so a resumed run sees the batches the
    uninterrupted run saw.

    Arguments:
        train: a dataset (e.g. ``TensorDataset``).
        val: an optional validation dataset.
        batch_size: the global batch size (divisible by the number of workers).
        shuffle: reshuffle every epoch (seeded); ``False`` keeps the data order.
        seed: seed of the shuffling.
    """

    def __init__(self, train: Dataset, val: Dataset | None = None, *, batch_size: int = 256,
                 shuffle: bool = True, seed: int = 0) -> None:
        super().__init__()
        check_int(batch_size, "batch_size", "ShardedData", 1)
        n = len(train)  # type: ignore[arg-type]
        if n < batch_size:
            raise ValueError(f"ShardedData: expected at least batch_size={batch_size} training "
                             f"items, got {n}")
        self.train, self.val = train, val
        self.batch_size, self.shuffle, self.seed = batch_size, bool(shuffle), int(seed)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def _global_step(self) -> int:
        return 0 if self.trainer is None else int(self.trainer.global_step)

    def _local_batch(self, world: int) -> int:
        if self.batch_size % world:
            raise ValueError(f"ShardedData: expected batch_size divisible by the {world} workers, "
                             f"got {self.batch_size}")
        return self.batch_size // world

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        local = self._local_batch(world)
        sampler = StepSampler(self.train, self._global_step, local, num_replicas=world,
                              rank=rank, shuffle=self.shuffle, seed=self.seed)
        return DataLoader(self.train, batch_size=local, sampler=sampler,
                          drop_last=True, generator=_own_generator(self.seed))

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None:
            return []
        world, rank = self._world()
        sampler = DistributedSampler(self.val, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(self.val, batch_size=max(self._local_batch(world), 256),
                          sampler=sampler, generator=_own_generator(self.seed))


def _own_generator(seed: int) -> torch.Generator:
    """A generator for a DataLoader's base seed, seeded with ``seed``.

    Creating an iterator then draws nothing from torch's global RNG (which the
    modules' noise uses and checkpoints carry).
    """
    return torch.Generator().manual_seed(seed)


class RNGStateMixin:
    """Seeds torch at the start of a fit and carries every worker's RNG state through checkpoints.

    Every worker starts from ``seed`` (``seed + rank`` when ``seed_per_rank``, for
    modules whose workers must draw different noise). A checkpoint holds the RNG
    state of every worker (gathered from all of them), restored just before the
    first training batch after a resume, so nothing run in between (validation
    noise) shifts the stream; a resume needs the same number of workers.
    """

    seed: int
    seed_per_rank: bool = False
    _pending_rng: Tensor | None = None

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "_trainer", None)  # None outside a fit
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def on_fit_start(self) -> None:
        world, rank = self._rank()
        torch.manual_seed(self.seed + (rank if self.seed_per_rank else 0))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = torch.get_rng_state().to(torch.int32)
        world, _ = self._rank()
        if world > 1:  # every rank runs this hook; rank 0 writes the file
            state = self.all_gather(state)  # type: ignore[attr-defined]
        checkpoint["pyro_relax_rng"] = state.reshape(world, -1).cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("pyro_relax_rng")
        if not isinstance(states, Tensor) or states.dim() != 2:
            raise ValueError("the checkpoint holds no pyro-relax RNG state; it was not written "
                             "by a pyro_relax.lightning module")
        world, rank = self._rank()
        if states.shape[0] != world:
            raise ValueError(f"the checkpoint was written by {states.shape[0]} workers; resume it "
                             f"with as many, got {world}")
        self._pending_rng = states[rank].to(torch.uint8)

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        if self._pending_rng is not None:
            torch.set_rng_state(self._pending_rng)
            self._pending_rng = None


def finite_or_raise(module: L.LightningModule, loss: Tensor, owner: str) -> None:
    """Raise on every worker together when any worker's loss is NaN or inf."""
    bad = (~torch.isfinite(loss.detach())).to(loss.dtype)
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a Trainer (outside a fit)
        trainer = None
    if trainer is not None and trainer.world_size > 1:
        bad = trainer.strategy.reduce(bad, reduce_op="max")
    if bool(bad):
        raise FloatingPointError(f"{owner}: the loss is {float(loss.detach()):.4g} at step "
                                 f"{module.global_step} on some worker; lower the learning rate")
