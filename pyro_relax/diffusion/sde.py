"""Linear noise SDEs of score-based models: variance preserving, exploding and sub-VP."""

from __future__ import annotations

__all__ = ["SDE", "SubVPSDE", "VESDE", "VPSDE", "as_time", "check_time"]

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from pyro_relax.core.checks import check_event_shape, check_finite
from pyro_relax.core.switch import validation_enabled


def as_time(t: Tensor | float, like: Tensor | None, name: str = "as_time") -> Tensor:
    """``t`` as a tensor on the device and with the dtype of ``like`` (if given).

    ``name`` is the entry point named in the ``TypeError`` for a time of another type.
    """
    if isinstance(t, Tensor):
        if t.is_complex():
            raise TypeError(f"{name}: expected a real time, got dtype {t.dtype}")
        if like is None:
            return t if t.is_floating_point() else t.to(torch.get_default_dtype())
        return t.to(device=like.device, dtype=like.dtype)
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise TypeError(f"{name}: expected a time as float or Tensor, got {type(t).__name__}")
    if like is None:
        return torch.as_tensor(float(t), dtype=torch.get_default_dtype())
    return torch.as_tensor(float(t), device=like.device, dtype=like.dtype)


def check_time(t: Tensor, low: float, high: float, name: str) -> None:
    """Raise a ``ValueError`` unless every entry of ``t`` lies in ``[low, high]``.

    The check synchronizes with the device once; it is skipped when
    :func:`pyro_relax.validation` is off.
    """
    if not validation_enabled() or t.device.type == "meta":
        return
    check_finite(t, name)
    if bool(((t < low) | (t > high)).any()):
        raise ValueError(
            f"{name}: expected times in [{low:g}, {high:g}], "
            f"got values in [{float(t.min()):g}, {float(t.max()):g}]"
        )


class SDE(ABC):
    r"""A linear forward SDE ``dx = c(t) x dt + g(t) dW`` on ``t in [0, T]``, ``T = 1``.

    A subclass provides :meth:`drift_coef` ``c(t)``, :meth:`diffusion_sq` ``g(t)^2``,
    :meth:`marginal_coefs` ``(a(t), s(t))`` with ``x_t | x_0 ~ N(a x_0, s^2 I)``,
    and ``prior_std`` (the prior at ``T`` is ``N(0, prior_std^2 I)``). The
    methods without checks (``drift_coef``, ``diffusion_sq``, ``marginal_coefs``)
    are the ones samplers call inside their loops; the public ones below check
    their inputs once.

    Attributes:
        T: the final time (1).
        t_min: the default smallest time of samplers and likelihoods.
        prior_std: the standard deviation of the prior at ``T``.

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole. *Score-Based Generative
        Modeling through Stochastic Differential Equations*, ICLR 2021.
    """

    T: float = 1.0
    t_min: float = 1e-3
    prior_std: float = 1.0

    @abstractmethod
    def drift_coef(self, t: Tensor) -> Tensor:
        """``c(t)`` in the drift ``f(x, t) = c(t) x`` (no checks)."""

    @abstractmethod
    def diffusion_sq(self, t: Tensor) -> Tensor:
        """``g(t)^2`` (no checks)."""

    @abstractmethod
    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(a(t), s(t))`` with ``x_t | x_0 ~ N(a x_0, s^2 I)`` (no checks)."""

    def corrector_alpha(self, t: Tensor, dt: float) -> Tensor:
        """The ``alpha`` scaling a Langevin corrector step (1 except for VP)."""
        return torch.ones_like(t)

    def _time(self, t: Tensor | float, like: Tensor | None, name: str) -> Tensor:
        label = f"{type(self).__name__}.{name}"
        t = as_time(t, like, label)
        check_time(t, 0.0, self.T, label)
        return t

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The drift ``f(x, t)``; ``t`` broadcasts against ``x.shape[:-1]``."""
        t = self._time(t, x, "drift")
        return self.drift_coef(t).unsqueeze(-1) * x

    def diffusion(self, t: Tensor | float) -> Tensor:
        """The diffusion coefficient ``g(t)``."""
        t = self._time(t, None, "diffusion")
        return self.diffusion_sq(t).sqrt()

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``x_t`` given ``x_0`` (std has shape of ``t``)."""
        name = f"{type(self).__name__}.marginal"
        if not isinstance(x0, Tensor) or not x0.is_floating_point():
            got = x0.dtype if isinstance(x0, Tensor) else type(x0).__name__
            raise TypeError(f"{name}: expected a floating-point tensor, got {got}")
        if x0.dim() < 1:
            raise ValueError(f"{name}: expected x0 of shape batch + (dim,), got a scalar")
        check_finite(x0, name)
        t = self._time(t, x0, "marginal")
        try:
            torch.broadcast_shapes(t.shape, x0.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"{name}: expected times broadcasting to the batch shape {tuple(x0.shape[:-1])}, "
                f"got shape {tuple(t.shape)}"
            ) from None
        a, s = self.marginal_coefs(t)
        return a.unsqueeze(-1) * x0, s

    def sample_marginal(self, x0: Tensor, t: Tensor | float, noise: Tensor | None = None) -> Tensor:
        """Draw ``x_t = a(t) x_0 + s(t) noise`` with standard normal ``noise``."""
        mean, std = self.marginal(x0, t)
        noise = torch.randn_like(mean) if noise is None else noise
        return mean + std.unsqueeze(-1) * noise

    def prior_sample(self, shape: torch.Size | tuple[int, ...], like: Tensor) -> Tensor:
        """Draw from the prior ``N(0, prior_std^2 I)``; ``shape`` ends with the event size."""
        return self.prior_std * torch.randn(shape, device=like.device, dtype=like.dtype)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """Log density of the prior, summed over the last dimension."""
        d = z.shape[-1]
        s2 = self.prior_std**2
        return -0.5 * (z.square().sum(-1) / s2 + d * math.log(2 * math.pi * s2))

    def check_input(self, x: Tensor, dim: int, name: str) -> None:
        """Check that ``x`` is finite with event shape ``(dim,)``."""
        check_event_shape(x, (dim,), name)
        check_finite(x, name)


class VPSDE(SDE):
    r"""Variance preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW``.

    ``beta(t) = beta_min + t (beta_max - beta_min)``; ``a(t) = exp(-B(t) / 2)``
    and ``s(t)^2 = 1 - exp(-B(t))`` with ``B(t) = int_0^t beta``. It is the
    continuous limit of DDPM's linear schedule (``beta_min = N beta_1``).

    Arguments:
        beta_min: ``beta(0)``.
        beta_max: ``beta(1)``.

    Example:
        >>> import torch
        >>> mean, std = VPSDE().marginal(torch.ones(3, 2), torch.tensor(0.5))
        >>> mean.shape, std.shape
        (torch.Size([3, 2]), torch.Size([]))
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min <= beta_max:
            raise ValueError(
                f"VPSDE: expected 0 < beta_min <= beta_max, got {beta_min}, {beta_max}"
            )
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(u) du``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t.square()

    def drift_coef(self, t: Tensor) -> Tensor:
        """``c(t)``: see :meth:`SDE.drift_coef`."""
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t: Tensor) -> Tensor:
        """``g(t)^2``: see :meth:`SDE.diffusion_sq`."""
        return self.beta(t)

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(a(t), s(t))``: see :meth:`SDE.marginal_coefs`."""
        b = self.integral(t)
        return torch.exp(-0.5 * b), (-torch.expm1(-b)).sqrt()

    def corrector_alpha(self, t: Tensor, dt: float) -> Tensor:
        """The corrector scale: see :meth:`SDE.corrector_alpha`."""
        return 1.0 - self.beta(t) * dt

    def __repr__(self) -> str:
        """The SDE's class and parameters."""
        return f"VPSDE(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class SubVPSDE(VPSDE):
    r"""Sub-VP SDE: the VP drift with ``g(t)^2 = beta(t) (1 - exp(-2 B(t)))``.

    Its marginal has ``a(t) = exp(-B(t) / 2)`` and ``s(t) = 1 - exp(-B(t))``,
    a variance below the VP one at every time.

    Example:
        >>> import torch
        >>> _, s = SubVPSDE().marginal(torch.zeros(2), torch.tensor(1.0))
        >>> bool(s < 1)
        True
    """

    def diffusion_sq(self, t: Tensor) -> Tensor:
        """``g(t)^2``: see :meth:`SDE.diffusion_sq`."""
        return self.beta(t) * -torch.expm1(-2.0 * self.integral(t))

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(a(t), s(t))``: see :meth:`SDE.marginal_coefs`."""
        b = self.integral(t)
        return torch.exp(-0.5 * b), -torch.expm1(-b)

    def corrector_alpha(self, t: Tensor, dt: float) -> Tensor:
        """The corrector scale: see :meth:`SDE.corrector_alpha`."""
        return torch.ones_like(t)

    def __repr__(self) -> str:
        """The SDE's class and parameters."""
        return f"SubVPSDE(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class VESDE(SDE):
    r"""Variance exploding SDE ``dx = sqrt(d sigma(t)^2 / dt) dW``.

    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``; the marginal is
    ``N(x_0, (sigma(t)^2 - sigma_min^2) I)`` and the prior ``N(0, sigma_max^2 I)``.

    Arguments:
        sigma_min: ``sigma(0)``.
        sigma_max: ``sigma(1)``, about the largest distance between data points.

    Example:
        >>> import torch
        >>> VESDE(sigma_max=10.0).diffusion(torch.tensor([0.0, 1.0])).shape
        torch.Size([2])
    """

    t_min = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"VESDE: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t)``."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def drift_coef(self, t: Tensor) -> Tensor:
        """``c(t)``: see :meth:`SDE.drift_coef`."""
        return torch.zeros_like(t)

    def diffusion_sq(self, t: Tensor) -> Tensor:
        """``g(t)^2``: see :meth:`SDE.diffusion_sq`."""
        return 2.0 * self._log_ratio * self.sigma(t).square()

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(a(t), s(t))``: see :meth:`SDE.marginal_coefs`."""
        var = self.sigma_min**2 * torch.expm1(2.0 * t * self._log_ratio)
        return torch.ones_like(t), var.sqrt()

    def __repr__(self) -> str:
        """The SDE's class and parameters."""
        return f"VESDE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"
