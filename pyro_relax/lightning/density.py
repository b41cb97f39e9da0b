"""Density fitting of any :class:`~pyro_relax.distributions.Flow` as a LightningModule."""

from __future__ import annotations

__all__ = ["DensityModule"]

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from pyro_relax.core.checks import check_int
from pyro_relax.core.switch import validation
from pyro_relax.distributions.flow import Flow
from pyro_relax.lightning._trainer import RNGStateMixin, finite_or_raise


def _first(batch: Tensor | Sequence[Tensor]) -> Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


class DensityModule(RNGStateMixin, L.LightningModule):
    """Maximum likelihood (or its bound, for relaxed stacks) of a flow on data batches.

    ``training_step`` returns the mean negative ``log_prob`` of the worker's batch
    (exact for exact stacks, a single-sample bound otherwise); under DDP the
    gradients are averaged, which for equal worker batches is the gradient of the
    global batch's mean. ``validation_step`` logs ``val_nll``: exact for exact
    stacks, else the importance-weighted estimate ``-log_prob_iw`` with
    ``num_particles``. ``bits_per_dim`` also logs ``val_bpd``.

    Arguments:
        flow: the model (any stack).
        lr: Adam learning rate.
        num_particles: particles of the importance-weighted validation estimate.
        seed: torch seed of the layers' noise (the same on every worker).
        bits_per_dim: also log the validation NLL in bits per dimension.

    Raises:
        TypeError: if ``flow`` is not a pyro-relax ``Flow``.
        ValueError: for a non-positive ``lr`` or ``num_particles``.

    Example:
        >>> from pyro_relax.transforms.stacks import coupling_stack
        >>> module = DensityModule(Flow((2,), coupling_stack(2, 1, 8)), lr=1e-3)
        >>> module.nll(torch.zeros(4, 2)).shape
        torch.Size([4])
    """

    def __init__(self, flow: Flow, lr: float = 1e-3, num_particles: int = 16, seed: int = 0,
                 bits_per_dim: bool = False) -> None:
        super().__init__()
        if not isinstance(flow, Flow):
            raise TypeError(f"DensityModule: expected a pyro_relax Flow, got {type(flow).__name__}")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"DensityModule: expected a positive finite lr, got {lr!r}")
        check_int(num_particles, "num_particles", "DensityModule", 1)
        self.flow = flow
        self.lr, self.num_particles, self.seed = float(lr), num_particles, int(seed)
        self.bits_per_dim = bool(bits_per_dim)
        self.history: list[float] = []  # this worker's training losses, one per step

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:  # noqa: ANN401
        """The mean negative log-likelihood (bound) of the batch."""
        x = _first(batch)
        with validation(False):  # checked once by whoever built the data
            loss = -self.flow.log_prob(x).mean()
        finite_or_raise(self, loss, "DensityModule")
        self.log("train_loss", loss, on_step=True, on_epoch=False, sync_dist=True,
                 batch_size=x.shape[0])
        self.history.append(float(loss.detach()))
        return loss

    def nll(self, x: Tensor) -> Tensor:
        """Per-point negative log-likelihood: exact, or ``-log_prob_iw`` for bound stacks."""
        d = self.flow()
        with validation(False):
            lp = d.log_prob(x) if d.exact else d.log_prob_iw(x, self.num_particles)
        return -lp

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:  # noqa: ANN401
        """The validation NLL of the batch (logged as ``val_nll``)."""
        x = _first(batch)
        nll = self.nll(x).mean()
        self.log("val_nll", nll, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        if self.bits_per_dim:
            dims = math.prod(x.shape[1:])
            self.log("val_bpd", nll / (dims * math.log(2.0)), on_epoch=True, sync_dist=True,
                     batch_size=x.shape[0])
        return nll

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the flow's parameters."""
        return torch.optim.Adam(self.flow.parameters(), lr=self.lr)
