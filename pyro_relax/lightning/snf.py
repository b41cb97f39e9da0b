"""Training of a stochastic normalizing flow against a target, as a LightningModule."""

from __future__ import annotations

__all__ = ["SNFModule", "StepData"]

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pyro_relax.core.checks import check_int
from pyro_relax.core.switch import validation
from pyro_relax.infer.snf_training import mixed_kl_loss
from pyro_relax.lightning._trainer import RNGStateMixin, finite_or_raise
from pyro_relax.stochastic.snf import StochasticNormalizingFlow


class _Ticks(Dataset):
    """``length`` dummy items: one per draw slot; the draws themselves come from the flow."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tensor:
        return torch.tensor(i)


class StepData(L.LightningDataModule):
    """Batches of slots for reverse-KL training (no data): ``batch_size`` flow draws per step.

    Each worker gets ``batch_size / world_size`` slots per step and draws that many
    samples from its own RNG stream (:class:`SNFModule` seeds ``seed + rank``).

    Arguments:
        batch_size: global number of flow draws per step.
        steps_per_epoch: steps between epoch ends (where checkpoints are written).
    """

    def __init__(self, batch_size: int = 256, steps_per_epoch: int = 100) -> None:
        super().__init__()
        for name, v in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch)):
            check_int(v, name, "StepData", 1)
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        """This worker's share of the steps (each item a global batch size)."""
        trainer = self.trainer
        world, rank = (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)
        if self.batch_size % world:
            raise ValueError(f"StepData: expected batch_size divisible by the {world} workers, "
                             f"got {self.batch_size}")
        ticks = _Ticks(self.batch_size * self.steps_per_epoch)
        sampler = DistributedSampler(ticks, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(ticks, batch_size=self.batch_size // world, sampler=sampler,
                          drop_last=True, generator=torch.Generator().manual_seed(0))


class SNFModule(RNGStateMixin, L.LightningModule):
    """Reverse KL (and optionally forward KL on data) of an SNF, one batch of draws per step.

    The loss is :func:`~pyro_relax.infer.snf_training.mixed_kl_loss`, the one
    :class:`~pyro_relax.infer.snf_training.SNFTrainer` minimizes; each worker
    draws ``len(batch)`` samples with its own seed (``seed + rank``), so DDP
    averages independent reverse-KL gradients. The logged ``train_loss`` is
    the global mean; ``log_z`` (the path-weight estimate of ``log Z`` over the
    batch, a lower bound in expectation) is logged every step.

    Arguments:
        snf: the model.
        lr: Adam learning rate.
        reverse_weight: weight of the reverse KL.
        forward_weight: weight of the forward KL (needs ``data``).
        data: target samples for the forward KL (a random minibatch per step).
        seed: base torch seed (gradient clipping: the Trainer's ``gradient_clip_val``).

    Raises:
        TypeError: if ``snf`` is not a ``StochasticNormalizingFlow``.
        ValueError: for bad weights or ``lr``, or a forward KL without data.
    """

    seed_per_rank = True

    def __init__(self, snf: StochasticNormalizingFlow, lr: float = 1e-3,
                 reverse_weight: float = 1.0, forward_weight: float = 0.0,
                 data: Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(snf, StochasticNormalizingFlow):
            raise TypeError(f"SNFModule: expected a StochasticNormalizingFlow, "
                            f"got {type(snf).__name__}")
        for name, v in (("lr", lr), ("reverse_weight", reverse_weight),
                        ("forward_weight", forward_weight)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"SNFModule: expected a finite {name} >= 0, got {v!r}")
        if lr == 0 or reverse_weight == forward_weight == 0:
            raise ValueError("SNFModule: expected lr > 0 and a positive reverse or forward weight")
        if forward_weight and data is None:
            raise ValueError("SNFModule: forward_weight > 0 needs data, got None")
        if data is not None:
            snf.check_data(data)
        self.snf = snf
        self.lr, self.seed = float(lr), int(seed)
        self.reverse_weight, self.forward_weight = float(reverse_weight), float(forward_weight)
        self.data = data
        self.history: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:  # noqa: ANN401
        """The mixed KL loss of one step's flow samples (and data minibatch)."""
        n = int(batch.shape[0])
        minibatch = None
        if self.data is not None and self.forward_weight:
            idx = torch.randint(0, self.data.shape[0], (n,), device=self.data.device)
            minibatch = self.data[idx]
        with validation(False):
            loss, parts = mixed_kl_loss(self.snf, n, minibatch, self.reverse_weight,
                                        self.forward_weight)
        finite_or_raise(self, loss, "SNFModule")
        self.log("train_loss", loss, on_step=True, on_epoch=False, sync_dist=True, batch_size=n)
        for k, v in parts.items():
            self.log(k, v, on_step=True, on_epoch=False, sync_dist=True, batch_size=n)
        self.history.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the flow's trainable parameters."""
        return torch.optim.Adam([p for p in self.snf.parameters() if p.requires_grad], lr=self.lr)
