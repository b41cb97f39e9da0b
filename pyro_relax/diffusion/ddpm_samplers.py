"""Samplers of a DDPM: ancestral (optionally respaced) and DDIM."""

from __future__ import annotations

__all__ = ["ddim", "ddpm_ancestral"]

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pyro_relax._progress import progress_bar
from pyro_relax.core.checks import check_real
from pyro_relax.diffusion.ddpm import DDPM
from pyro_relax.diffusion.guard import StepGuard
from pyro_relax.diffusion.samplers import check_steps, sample_shape_of


def _ddpm_steps(ddpm: DDPM, steps: int | None, name: str) -> list[int]:
    n = ddpm.num_steps
    steps = n if steps is None else steps
    check_steps(steps, name)
    if steps > n:
        raise ValueError(f"{name}: expected steps <= {n} (the schedule's length), got {steps}")
    if steps == 1:
        return [0, n]
    return [0] + sorted({round(1 + (n - 1) * k / (steps - 1)) for k in range(steps)})


def _ddpm_loop(
    ddpm: DDPM,
    sample_shape: Sequence[int],
    steps: int | None,
    eta: float | None,
    name: str,
    x_T: Tensor | None,
    progress: bool,
) -> Tensor:
    if not isinstance(ddpm, DDPM):
        raise TypeError(f"{name}: expected a DDPM, got {type(ddpm).__name__}")
    seq = _ddpm_steps(ddpm, steps, name)
    shape = sample_shape_of(sample_shape, name)
    if x_T is None:
        x = ddpm.prior_sample(shape)
    else:
        ddpm.check_input(x_T, name)
        x = x_T
    abars = ddpm.schedule.alpha_bars
    guard = StepGuard(name)
    bar = progress_bar(range(len(seq) - 1, 0, -1), disable=not progress, desc=name)
    for n, k in enumerate(bar, start=1):
        i = x.new_full(x.shape[:-1], seq[k], dtype=torch.long)
        abar, abar_prev = abars[seq[k]].to(x.dtype), abars[seq[k - 1]].to(x.dtype)
        eps = ddpm.unchecked_noise_prediction(x, i)
        guard.watch(eps, n, seq[k] / ddpm.num_steps, "the noise prediction")
        beta = 1 - abar / abar_prev
        if eta is None:  # ancestral step of the respaced chain
            x = (x - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()
            var = beta if ddpm.variance == "beta" else (1 - abar_prev) / (1 - abar) * beta
        else:  # DDIM
            var = eta**2 * (1 - abar_prev) / (1 - abar) * beta
            x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - var).clamp_min(0).sqrt() * eps
        if k > 1:
            x = x + var.sqrt() * torch.randn_like(x)
    guard.watch(x, len(seq) - 1, 0.0, "the sample")
    guard.check("check the network (steps count the sampler's steps; t = step / N)")
    return x


def ddpm_ancestral(
    ddpm: DDPM,
    sample_shape: Sequence[int] = (),
    steps: int | None = None,
    x_T: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    r"""DDPM's ancestral sampler; for ``steps < N``, on the respaced chain.

    The respaced chain has ``beta' = 1 - abar_t / abar_s`` between kept steps ``s < t``.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import DDPM, DDPMSchedule
        >>> from pyro_relax.nn.score import ScoreMLP
        >>> ddpm = DDPM(ScoreMLP(2, hidden=(8,)), schedule=DDPMSchedule(20))
        >>> ddpm_ancestral(ddpm, (3,)).shape
        torch.Size([3, 2])
    """
    return _ddpm_loop(ddpm, sample_shape, steps, None, "ddpm_ancestral", x_T, progress)


def ddim(
    ddpm: DDPM,
    sample_shape: Sequence[int] = (),
    steps: int = 50,
    eta: float = 0.0,
    x_T: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    r"""DDIM sampling on ``steps`` of the DDPM's steps; ``eta = 0`` is deterministic.

    ``x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z`` with
    ``sigma^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)``.

    References:
        Song, Meng, Ermon, *Denoising Diffusion Implicit Models*, ICLR 2021.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import DDPM, DDPMSchedule
        >>> from pyro_relax.nn.score import ScoreMLP
        >>> ddpm = DDPM(ScoreMLP(2, hidden=(8,)), schedule=DDPMSchedule(20))
        >>> ddim(ddpm, (3,), steps=5).shape
        torch.Size([3, 2])
    """
    eta = check_real(eta, "eta", "ddim", 0.0, math.inf, closed=True)
    return _ddpm_loop(ddpm, sample_shape, steps, eta, "ddim", x_T, progress)
