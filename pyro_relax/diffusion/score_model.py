"""Continuous-time score models trained by denoising score matching."""

from __future__ import annotations

__all__ = ["ScoreModel", "ScoreProcess"]

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_int
from pyro_relax.core.switch import validation_enabled
from pyro_relax.diffusion import guard
from pyro_relax.diffusion.divergence import exact_divergence, hutchinson_divergence
from pyro_relax.diffusion.sde import SDE, as_time, check_time

_PARAMETERIZATIONS = ("noise", "score")
_WHAT = {
    "score": "the score",
    "forward_drift": "the drift",
    "reverse_drift": "the drift",
    "ode_drift": "the velocity",
}


class ScoreProcess(nn.Module):
    r"""A forward SDE ``dx = f(x, t) dt + g(t) dW`` with a learned score ``s(x, t)``.

    The common base of :class:`ScoreModel` (``f`` the fixed SDE's drift) and
    :class:`~pyro_relax.diffusion.DiffFlow` (``f`` learned too). It defines the
    reverse SDE ``dx = [f - g^2 s] dt + g dW`` and the probability-flow ODE
    ``dx/dt = f - g^2 s / 2`` that the samplers and :func:`ode_log_prob` use.
    Subclasses may override the ``unchecked_*`` methods (:meth:`unchecked_score`,
    :meth:`unchecked_forward_drift`, :meth:`unchecked_drift_and_score`): they
    skip the input checks and are what the sampler loops call; the checked
    public methods (:meth:`score`, :meth:`forward_drift`, ...) go through them.

    Arguments:
        sde: the noise process (its ``g``, prior and, for the ``"noise"``
            parameterization, its marginal standard deviation).
        network: an ``nn.Module`` mapping ``(x, t)`` to a tensor shaped like ``x``.
        dim: the event size (default: ``network.dim`` when present).
        parameterization: ``"noise"``: the network predicts the noise and
            ``s = -network(x, t) / std(t)``; ``"score"``: ``s = network(x, t)``.
        t_min: the smallest time of samplers and likelihoods (default ``sde.t_min``);
            it must be positive with the ``"noise"`` parameterization.

    Times: the score is defined on ``[0, T]`` with the ``"score"``
    parameterization and on the open-at-zero ``(0, T]`` with ``"noise"``
    (``std(0) = 0``); the public methods and the samplers raise a ``ValueError``
    for a time outside, and a ``FloatingPointError`` naming the step when the
    network returns NaN or inf.
    """

    def __init__(
        self,
        sde: SDE,
        network: nn.Module,
        dim: int | None = None,
        parameterization: str = "noise",
        t_min: float | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(sde, SDE):
            raise TypeError(f"{name}: expected an SDE, got {type(sde).__name__}")
        dim = guard.check_network(network, dim, name)
        if parameterization not in _PARAMETERIZATIONS:
            raise ValueError(
                f"{name}: expected parameterization in {_PARAMETERIZATIONS}, "
                f"got {parameterization!r}"
            )
        if isinstance(t_min, bool) or not (t_min is None or isinstance(t_min, int | float)):
            raise TypeError(f"{name}: expected t_min as a float, got {type(t_min).__name__}")
        t_min = sde.t_min if t_min is None else float(t_min)
        if not 0.0 <= t_min < sde.T:
            raise ValueError(f"{name}: expected t_min in [0, {sde.T:g}), got {t_min}")
        self.sde, self.network, self.dim = sde, network, dim
        self.parameterization, self.t_min = parameterization, t_min
        self.check_t_floor(t_min, name)

    def check_t_floor(self, t: float, name: str) -> None:
        """Raise a ``ValueError`` if the score is undefined at time ``t`` (0 with ``"noise"``).

        Arguments:
            t: a time (a Python float).
            name: the entry point named in the message.

        Raises:
            ValueError: for ``t = 0`` (or below) with the noise parameterization.
        """
        if self.parameterization == "noise" and not t > 0.0:
            raise ValueError(
                f"{name}: expected a time > 0 with the 'noise' parameterization (its score "
                f"divides by std(t), which is 0 at t=0), got {t:g}"
            )

    # ---- unchecked pieces (sampler loops) -------------------------------------------
    def _as_score(self, out: Tensor, t: Tensor) -> Tensor:
        """The score from a network output, by the parameterization."""
        if self.parameterization == "score":
            return out
        _, std = self.sde.marginal_coefs(t)
        return -out / std.unsqueeze(-1)

    def unchecked_score(self, x: Tensor, t: Tensor) -> Tensor:
        """The score ``s(x, t)`` without input checks; ``t`` has shape ``x.shape[:-1]``."""
        return self._as_score(guard.network_output(self.network, x, t, type(self).__name__), t)

    def unchecked_forward_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """The forward drift ``f(x, t)`` without input checks (here the SDE's linear drift)."""
        return self.sde.drift_coef(t).unsqueeze(-1) * x

    def unchecked_drift_and_score(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x, t), s(x, t))`` together (one network call where a subclass can share one)."""
        return self.unchecked_forward_drift(x, t), self.unchecked_score(x, t)

    def unchecked_reverse_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """The reverse-SDE drift ``f - g^2 s`` without input checks."""
        f, s = self.unchecked_drift_and_score(x, t)
        return f - self.sde.diffusion_sq(t).unsqueeze(-1) * s

    def unchecked_ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """The probability-flow ODE velocity ``f - g^2 s / 2`` without input checks."""
        f, s = self.unchecked_drift_and_score(x, t)
        return f - 0.5 * self.sde.diffusion_sq(t).unsqueeze(-1) * s

    # ---- checked public versions ----------------------------------------------------
    def check_input(self, x: Tensor, name: str) -> None:
        """Check that ``x`` is a finite tensor of the model's dtype with event shape ``(dim,)``."""
        label = f"{type(self).__name__}.{name}"
        guard.check_model_dtype(x, guard.model_dtype(self.network), label)
        self.sde.check_input(x, self.dim, label)

    def _checked(self, x: Tensor, t: Tensor | float, name: str) -> Tensor:
        self.check_input(x, name)
        label = f"{type(self).__name__}.{name}"
        t = as_time(t, x, label)
        check_time(t, 0.0, self.sde.T, label)
        if (
            self.parameterization == "noise"
            and validation_enabled()
            and t.device.type != "meta"
            and t.numel()
            and bool((t <= 0).any())
        ):
            self.check_t_floor(float(t.min()), label)
        try:
            return t.expand(x.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"{label}: expected times broadcasting to the batch shape {tuple(x.shape[:-1])}, "
                f"got shape {tuple(t.shape)}"
            ) from None

    def _evaluate(
        self, fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor | float, name: str
    ) -> Tensor:
        """``fn(x, t)`` after the input checks of the entry point ``name``, checked finite."""
        out = fn(x, self._checked(x, t, name))
        return guard.check_finite_result(out, f"{type(self).__name__}.{name}", _WHAT[name])

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The score ``s(x, t) ~ grad log p_t(x)``; ``t`` broadcasts to ``x.shape[:-1]``."""
        return self._evaluate(self.unchecked_score, x, t, "score")

    def forward_drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The forward drift ``f(x, t)``."""
        return self._evaluate(self.unchecked_forward_drift, x, t, "forward_drift")

    def reverse_drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The reverse-SDE drift ``f - g^2 s`` (to be integrated backwards in time)."""
        return self._evaluate(self.unchecked_reverse_drift, x, t, "reverse_drift")

    def ode_drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The probability-flow ODE velocity ``f - g^2 s / 2``."""
        return self._evaluate(self.unchecked_ode_drift, x, t, "ode_drift")

    def prior_sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draw ``sample_shape + (dim,)`` from the prior at ``T``."""
        shape = torch.Size(sample_shape) + (self.dim,)
        return self.sde.prior_sample(shape, guard.module_anchor(self))


class ScoreModel(ScoreProcess):
    r"""A score model on a fixed SDE, trained by denoising score matching.

    Arguments: as :class:`ScoreProcess`.

    References:
        Song et al., *Score-Based Generative Modeling through SDEs*, ICLR 2021;
        Song, Durkan, Murray, Ermon, *Maximum Likelihood Training of
        Score-Based Diffusion Models*, NeurIPS 2021; Huang, Lim, Courville,
        *A Variational Perspective on Diffusion-Based Generative Models*, 2021.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import VPSDE
        >>> from pyro_relax.nn.score import ScoreMLP
        >>> model = ScoreModel(VPSDE(), ScoreMLP(2, hidden=(16,)))
        >>> model.loss(torch.randn(8, 2)).shape
        torch.Size([])
    """

    def loss(self, x0: Tensor, likelihood_weighting: bool = False) -> Tensor:
        r"""The denoising score matching loss, averaged over the batch.

        ``1/2 E_t E[lambda(t) |s(x_t, t) + z / std(t)|^2]`` with ``t ~ U(t_min, T)``,
        ``x_t = a(t) x_0 + std(t) z``; ``lambda = std^2`` by default and
        ``lambda = g^2`` with ``likelihood_weighting`` (then, up to a constant
        and a factor ``T - t_min``, the score part of a bound on ``-log p``).

        Arguments:
            x0: data of shape ``batch_shape + (dim,)``.
            likelihood_weighting: weight by ``g(t)^2``.
        """
        self.check_input(x0, "loss")
        if x0.numel() == 0:
            raise ValueError("ScoreModel.loss: expected at least one data point, got none")
        t = self.t_min + (self.sde.T - self.t_min) * torch.rand_like(x0[..., 0])
        z = torch.randn_like(x0)
        a, std = self.sde.marginal_coefs(t)
        xt = a.unsqueeze(-1) * x0 + std.unsqueeze(-1) * z
        s = self.unchecked_score(xt, t)
        if likelihood_weighting:
            g2 = self.sde.diffusion_sq(t)
            per = g2 * (s + z / std.unsqueeze(-1)).square().sum(-1)
        else:
            per = (std.unsqueeze(-1) * s + z).square().sum(-1)
        return guard.check_finite_result(0.5 * per.mean(), "ScoreModel.loss", "the loss")

    def elbo(
        self, x0: Tensor, num_times: int = 1, t_min: float | None = None, divergence: str = "auto"
    ) -> Tensor:
        r"""A Monte Carlo lower bound on ``log p(x0)`` of the continuous reverse-SDE model.

        ``log p(x) >= E[log prior(x_T)] - int_{t_min}^T E[g^2 |s|^2 / 2 + div(g^2 s - f)] dt``
        (Huang et al. 2021, Song et al. 2021), with ``x_t`` drawn from the
        forward marginal given ``x0``, stratified times and, above 10
        dimensions (or with ``divergence="hutchinson"``), Hutchinson's estimator.
        It is a bound for ``t_min = 0``; the default ``t_min`` truncates as
        the samplers do.

        Arguments:
            x0: data of shape ``batch_shape + (dim,)``.
            num_times: times drawn per data point.
            t_min: the lower end of the time integral (default ``self.t_min``).
            divergence: ``"exact"``, ``"hutchinson"`` or ``"auto"``.

        Returns:
            the bound, of shape ``batch_shape``.
        """
        self.check_input(x0, "elbo")
        check_int(num_times, "num_times", "ScoreModel.elbo", minimum=1)
        t_lo = self.t_min if t_min is None else float(t_min)
        if not 0.0 <= t_lo < self.sde.T:
            raise ValueError(f"ScoreModel.elbo: expected t_min in [0, {self.sde.T:g}), got {t_lo}")
        if divergence == "auto":
            divergence = "exact" if self.dim <= 10 else "hutchinson"
        span = self.sde.T - t_lo
        xs = x0.expand((num_times,) + x0.shape)
        k = torch.arange(num_times, device=x0.device, dtype=x0.dtype).reshape(
            (num_times,) + (1,) * (x0.dim() - 1)
        )
        t = t_lo + span * (k + torch.rand_like(xs[..., 0])) / num_times
        xt = self._marginal_draw(xs, t)
        g2 = self.sde.diffusion_sq(t)

        def g2_score(x: Tensor) -> Tensor:
            return g2.unsqueeze(-1) * self.unchecked_score(x, t)

        graph = torch.is_grad_enabled() and (
            x0.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if divergence == "exact":
            g2s, div = exact_divergence(g2_score, xt, graph)
        elif divergence == "hutchinson":
            g2s, div = hutchinson_divergence(g2_score, xt, create_graph=graph)
        else:
            raise ValueError(
                "ScoreModel.elbo: expected divergence 'exact', 'hutchinson' or 'auto', "
                f"got {divergence!r}"
            )
        div_f = self.dim * self.sde.drift_coef(t)
        integrand = 0.5 * (g2s.square().sum(-1) / g2) + div - div_f
        a, std = self.sde.marginal_coefs(x0.new_full((), self.sde.T))
        s2 = self.sde.prior_std**2
        e_log_prior = -0.5 * (
            (a.square() * x0.square().sum(-1) + self.dim * std.square()) / s2
            + self.dim * math.log(2 * math.pi * s2)
        )
        out = e_log_prior - span * integrand.mean(0)
        return guard.check_finite_result(out, "ScoreModel.elbo", "the bound")

    def _marginal_draw(self, x0: Tensor, t: Tensor) -> Tensor:
        a, std = self.sde.marginal_coefs(t)
        return a.unsqueeze(-1) * x0 + std.unsqueeze(-1) * torch.randn_like(x0)
