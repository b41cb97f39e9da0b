"""Discrete-time diffusion: DDPM schedules (linear, cosine), the model and its ELBO."""

from __future__ import annotations

__all__ = ["DDPM", "DDPMSchedule"]

import math

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_event_shape, check_finite, check_int
from pyro_relax.core.switch import validation_enabled
from pyro_relax.diffusion.guard import (
    check_finite_result,
    check_model_dtype,
    check_network,
    model_dtype,
    module_anchor,
    network_output,
)

_LOG_2PI = math.log(2 * math.pi)


class DDPMSchedule(nn.Module):
    r"""The noise schedule ``beta_1..beta_N`` of a DDPM, as float64 buffers indexed ``0..N``.

    Index 0 is the data: ``beta_0 = 0``, ``alpha_bar_0 = 1``;
    ``alpha_bar_t = prod_{s <= t} (1 - beta_s)``.

    Arguments:
        num_steps: ``N``.
        kind: ``"linear"`` (Ho et al. 2020: ``beta`` from ``beta_start`` to
            ``beta_end``) or ``"cosine"`` (Nichol & Dhariwal 2021:
            ``alpha_bar(t) = cos^2(pi/2 (t/N + s) / (1 + s))``, betas clipped at 0.999).
        beta_start: first beta of the linear schedule.
        beta_end: last beta of the linear schedule.
        cosine_s: the offset ``s`` of the cosine schedule.

    Example:
        >>> s = DDPMSchedule(100, "cosine")
        >>> s.alpha_bars.shape, float(s.alpha_bars[0])
        (torch.Size([101]), 1.0)
    """

    def __init__(
        self,
        num_steps: int = 1000,
        kind: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
    ) -> None:
        super().__init__()
        n = check_int(num_steps, "num_steps", "DDPMSchedule", minimum=1)
        if kind == "linear":
            if not 0 < beta_start <= beta_end < 1:
                raise ValueError(
                    "DDPMSchedule: expected 0 < beta_start <= beta_end < 1, "
                    f"got {beta_start}, {beta_end}"
                )
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
        elif kind == "cosine":
            u = torch.arange(n + 1, dtype=torch.float64) / n
            f = torch.cos((u + cosine_s) / (1 + cosine_s) * math.pi / 2).square()
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"DDPMSchedule: expected kind 'linear' or 'cosine', got {kind!r}")
        betas = torch.cat([betas.new_zeros(1), betas])
        self.num_steps, self.kind = n, kind
        self.register_buffer("betas", betas)
        self.register_buffer("alpha_bars", torch.cumprod(1 - betas, 0))

    def extra_repr(self) -> str:
        """The number of steps and the kind, shown by ``repr``."""
        return f"num_steps={self.num_steps}, kind={self.kind!r}"


class DDPM(nn.Module):
    r"""Denoising diffusion probabilistic model on ``R^dim`` with a noise-predicting network.

    ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``; the reverse step is
    ``p(x_{t-1} | x_t) = N(mu, sigma_t^2 I)`` with
    ``mu = (x_t - beta_t eps(x_t, t) / sqrt(1 - abar_t)) / sqrt(alpha_t)``
    with ``sigma_t^2 = beta_t`` (``variance="beta"``) or the posterior variance
    (``"posterior"``; ``beta_1`` at ``t = 1``). The network is called as
    ``network(x, t / N)``, so the score-network interface of ``ScoreMLP`` fits.

    Arguments:
        network: ``nn.Module`` mapping ``(x, t / N)`` to a noise prediction shaped like ``x``.
        dim: event size (default ``network.dim``).
        schedule: a :class:`DDPMSchedule` (default: linear with 1000 steps).
        variance: ``"beta"`` or ``"posterior"``.

    References:
        Ho, Jain, Abbeel, *Denoising Diffusion Probabilistic Models*, NeurIPS 2020.

    Example:
        >>> import torch
        >>> from pyro_relax.nn.score import ScoreMLP
        >>> ddpm = DDPM(ScoreMLP(2, hidden=(16,)), schedule=DDPMSchedule(50))
        >>> ddpm.elbo(torch.randn(3, 2), num_terms=4).shape
        torch.Size([3])
    """

    def __init__(
        self,
        network: nn.Module,
        dim: int | None = None,
        schedule: DDPMSchedule | None = None,
        variance: str = "beta",
    ) -> None:
        super().__init__()
        dim = check_network(network, dim, "DDPM")
        if variance not in ("beta", "posterior"):
            raise ValueError(f"DDPM: expected variance 'beta' or 'posterior', got {variance!r}")
        self.network, self.dim, self.variance = network, dim, variance
        self.schedule = DDPMSchedule() if schedule is None else schedule
        self.num_steps = self.schedule.num_steps

    # ---- pieces ----------------------------------------------------------------------
    def _coef(self, name: str, i: Tensor, like: Tensor) -> Tensor:
        return getattr(self.schedule, name)[i].to(like.dtype).unsqueeze(-1)

    def unchecked_noise_prediction(self, x: Tensor, i: Tensor) -> Tensor:
        """The network's noise prediction at integer steps ``i`` of shape ``x.shape[:-1]``.

        No input checks: this is what the sampler loops call; see :meth:`noise_prediction`.
        """
        return network_output(self.network, x, i.to(x.dtype) / self.num_steps, "DDPM")

    def _sigma2(self, i: Tensor, like: Tensor) -> Tensor:
        beta = self._coef("betas", i, like)
        if self.variance == "beta":
            return beta
        abar, abar_prev = self._coef("alpha_bars", i, like), self._coef("alpha_bars", i - 1, like)
        post = (1 - abar_prev) / (1 - abar) * beta
        return torch.where(i.unsqueeze(-1) == 1, beta, post)

    def check_input(self, x: Tensor, name: str) -> None:
        """Check that ``x`` is a finite tensor of the model's dtype with event shape ``(dim,)``."""
        check_model_dtype(x, model_dtype(self.network), f"DDPM.{name}")
        check_event_shape(x, (self.dim,), f"DDPM.{name}")
        check_finite(x, f"DDPM.{name}")

    def check_steps(self, i: Tensor, name: str) -> Tensor:
        """Raise a ``ValueError`` unless ``i`` holds integer steps in ``1..N``."""
        if not isinstance(i, Tensor):
            i = torch.as_tensor(i)
        if i.is_floating_point() or i.is_complex():
            raise ValueError(f"DDPM.{name}: expected integer steps, got dtype {i.dtype}")
        if validation_enabled() and i.numel() and bool(((i < 1) | (i > self.num_steps)).any()):
            raise ValueError(
                f"DDPM.{name}: expected steps in [1, {self.num_steps}], "
                f"got values in [{int(i.min())}, {int(i.max())}]"
            )
        return i.long()

    def noise_prediction(self, x: Tensor, i: Tensor) -> Tensor:
        """The network's noise prediction at integer steps ``i`` (broadcast to ``x.shape[:-1]``)."""
        self.check_input(x, "noise_prediction")
        i = self.check_steps(i, "noise_prediction").to(x.device).expand(x.shape[:-1])
        return self.unchecked_noise_prediction(x, i)

    def q_sample(self, x0: Tensor, i: Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw ``x_i ~ q(x_i | x_0)``."""
        self.check_input(x0, "q_sample")
        i = self.check_steps(i, "q_sample").to(x0.device).expand(x0.shape[:-1])
        noise = torch.randn_like(x0) if noise is None else noise
        abar = self._coef("alpha_bars", i, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def prior_sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draw ``x_N ~ N(0, I)`` of shape ``sample_shape + (dim,)``."""
        like = module_anchor(self)
        return torch.randn(
            torch.Size(sample_shape) + (self.dim,), device=like.device, dtype=like.dtype
        )

    # ---- objectives ------------------------------------------------------------------
    def loss(self, x0: Tensor) -> Tensor:
        """Ho et al.'s simple loss ``E |eps - eps(x_t, t)|^2``, ``t ~ U{1..N}``, batch mean."""
        self.check_input(x0, "loss")
        if x0.numel() == 0:
            raise ValueError("DDPM.loss: expected at least one data point, got an empty batch")
        i = torch.randint(1, self.num_steps + 1, x0.shape[:-1], device=x0.device)
        noise = torch.randn_like(x0)
        abar = self._coef("alpha_bars", i, x0)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        loss = (self.unchecked_noise_prediction(xt, i) - noise).square().sum(-1).mean()
        return check_finite_result(loss, "DDPM.loss", "the loss")

    def _term(self, x0: Tensor, i: Tensor) -> Tensor:
        """``-L_{i-1}``: ``log p(x0 | x1)`` at ``i = 1``, ``-KL(q(x_{i-1}|x_i,x0) || p)`` above."""
        abar, abar_prev = self._coef("alpha_bars", i, x0), self._coef("alpha_bars", i - 1, x0)
        beta = self._coef("betas", i, x0)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn_like(x0)
        eps = self.unchecked_noise_prediction(xt, i)
        mean = (xt - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()
        var = self._sigma2(i, x0)
        post_var = (1 - abar_prev) / (1 - abar) * beta
        post_mean = (abar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - abar_prev) * xt) / (
            1 - abar
        )
        decoder = -0.5 * ((x0 - mean).square() / var + var.log() + _LOG_2PI).sum(-1)
        safe_post = torch.where(post_var > 0, post_var, torch.ones_like(post_var))
        kl = 0.5 * (
            (var / safe_post).log() + (post_var + (post_mean - mean).square()) / var - 1
        ).sum(-1)
        return torch.where(i == 1, decoder, -kl)

    def elbo(self, x0: Tensor, num_terms: int | None = None, chunk: int = 100) -> Tensor:
        r"""The variational lower bound on ``log p(x0)`` (Ho et al. 2020, eq. 5).

        ``log p(x0) >= -KL(q(x_N|x0) || N(0,I)) - sum_{t>=2} KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t))
        + E log p(x0|x1)``, each term with one draw of ``x_t``. With
        ``num_terms=None`` all ``N`` terms are summed (in chunks of ``chunk`` steps);
        with ``num_terms=K``, ``K`` uniform steps estimate the sum without bias.

        Returns:
            the bound, of shape ``x0.shape[:-1]``.
        """
        self.check_input(x0, "elbo")
        check_int(chunk, "chunk", "DDPM.elbo", minimum=1)
        n, d = self.num_steps, self.dim
        if num_terms is not None:
            check_int(num_terms, "num_terms", "DDPM.elbo", minimum=1)
        abar_n = self.schedule.alpha_bars[n].to(x0.dtype)
        prior_kl = 0.5 * (
            abar_n * x0.square().sum(-1) + d * (1 - abar_n) - d - d * torch.log(1 - abar_n)
        )
        batch = x0.shape[:-1]
        total = x0.new_zeros(batch)
        if num_terms is None:
            for start in range(1, n + 1, chunk):
                ks = torch.arange(start, min(start + chunk, n + 1), device=x0.device)
                i = ks.reshape((-1,) + (1,) * len(batch)).expand((len(ks),) + batch)
                total = total + self._term(x0.expand(i.shape + (d,)), i).sum(0)
        else:
            i = torch.randint(1, n + 1, (num_terms,) + batch, device=x0.device)
            total = self._term(x0.expand(i.shape + (d,)), i).mean(0) * n
        return check_finite_result(total - prior_kl, "DDPM.elbo", "the bound")
