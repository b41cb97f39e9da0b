"""Closed-form optimal networks for Gaussian data (for tests and as baselines)."""

from __future__ import annotations

__all__ = ["GaussianNoisePredictor", "GaussianScore"]

import math

import torch
from torch import Tensor, nn

from pyro_relax.diffusion.ddpm import DDPMSchedule
from pyro_relax.diffusion.sde import SDE


class _Gaussian(nn.Module):
    """Data ``N(mean, cov)``; noised marginals ``N(a mean, a^2 cov + s^2 I)`` in its eigenbasis."""

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        super().__init__()
        if mean.dim() != 1 or cov.shape != (mean.shape[0],) * 2:
            raise ValueError(
                f"{type(self).__name__}: expected mean (d,) and cov (d, d), "
                f"got {tuple(mean.shape)} and {tuple(cov.shape)}"
            )
        evals, evecs = torch.linalg.eigh(cov)
        if not bool((evals > 0).all()):
            raise ValueError(f"{type(self).__name__}: expected a positive definite cov")
        self.dim = mean.shape[0]
        self.register_buffer("mean", mean.clone())
        self.register_buffer("evals", evals)
        self.register_buffer("evecs", evecs)

    def _stats(self, x: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Coordinates of ``x - a mean`` in the eigenbasis and the marginal variances there."""
        a, s = a.unsqueeze(-1), s.unsqueeze(-1)
        u = (x - a * self.mean.to(x.dtype)) @ self.evecs.to(x.dtype)
        return u, a.square() * self.evals.to(x.dtype) + s.square()

    def _score(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        u, var = self._stats(x, a, s)
        return -(u / var) @ self.evecs.to(x.dtype).T

    def _log_prob(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        u, var = self._stats(x, a, s)
        return -0.5 * (u.square() / var + var.log() + math.log(2 * math.pi)).sum(-1)


class GaussianScore(_Gaussian):
    r"""The exact score ``grad log p_t`` of the SDE's marginals for data ``N(mean, cov)``.

    ``p_t = N(a(t) mean, a(t)^2 cov + s(t)^2 I)``. Use with
    ``parameterization="score"``.

    Arguments:
        sde: the forward SDE.
        mean: data mean ``(d,)``.
        cov: data covariance ``(d, d)``, positive definite.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import VPSDE
        >>> net = GaussianScore(VPSDE(), torch.zeros(2), torch.eye(2))
        >>> net(torch.ones(2), torch.tensor(0.5)).round(decimals=4)
        tensor([-1., -1.])
    """

    def __init__(self, sde: SDE, mean: Tensor, cov: Tensor) -> None:
        super().__init__(mean, cov)
        self.sde = sde

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """The score at ``(x, t)``; ``t`` broadcasts to ``x.shape[:-1]``."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype).expand(x.shape[:-1])
        return self._score(x, *self.sde.marginal_coefs(t))

    def log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``log p_t(x)``, the exact log density of the noised data at time ``t``."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype).expand(x.shape[:-1])
        return self._log_prob(x, *self.sde.marginal_coefs(t))


class GaussianNoisePredictor(_Gaussian):
    r"""The optimal DDPM noise prediction ``E[eps | x_t] = -sqrt(1 - abar_t) grad log q(x_t)``.

    Called as ``net(x, t / N)`` like any DDPM network; the step is recovered
    by rounding ``t N``.

    Arguments:
        schedule: the DDPM schedule.
        mean: data mean ``(d,)``.
        cov: data covariance ``(d, d)``.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import DDPMSchedule
        >>> net = GaussianNoisePredictor(DDPMSchedule(10), torch.zeros(2), torch.eye(2))
        >>> net(torch.zeros(3, 2), torch.full((3,), 0.5)).shape
        torch.Size([3, 2])
    """

    def __init__(self, schedule: DDPMSchedule, mean: Tensor, cov: Tensor) -> None:
        super().__init__(mean, cov)
        self.schedule = schedule

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """The optimal noise prediction at ``(x, t / N)``."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype).expand(x.shape[:-1])
        i = (t * self.schedule.num_steps).round().long()
        abar = self.schedule.alpha_bars[i].to(x.dtype)
        score = self._score(x, abar.sqrt(), (1 - abar).sqrt())
        return -(1 - abar).sqrt().unsqueeze(-1) * score
