"""Diffusion normalizing flow (DiffFlow): a trainable forward drift with the score."""

from __future__ import annotations

__all__ = ["DiffFlow", "path_log_weight", "time_grid"]

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_int
from pyro_relax.diffusion.guard import StepGuard, check_finite_result, network_output
from pyro_relax.diffusion.samplers import reverse_euler
from pyro_relax.diffusion.score_model import ScoreProcess
from pyro_relax.diffusion.sde import SDE


def time_grid(num_steps: int, kind: str = "quadratic", T: float = 1.0) -> list[float]:
    """Times ``0 = t_0 < ... < t_N = T``: ``"uniform"`` or ``"quadratic"`` (``T (k/N)^2``).

    The quadratic grid takes small steps near the data, where the noise is small.

    Example:
        >>> time_grid(2, "uniform")
        [0.0, 0.5, 1.0]
    """
    check_int(num_steps, "num_steps", "time_grid", minimum=1)
    if kind == "uniform":
        return [T * k / num_steps for k in range(num_steps + 1)]
    if kind == "quadratic":
        return [T * (k / num_steps) ** 2 for k in range(num_steps + 1)]
    raise ValueError(f"time_grid: expected kind 'uniform' or 'quadratic', got {kind!r}")


def path_log_weight(process: ScoreProcess, x0: Tensor, times: Sequence[float]) -> Tensor:
    r"""The path weight ``log p_B(x_{0:N}) - log q_F(x_{1:N} | x_0)`` of the discretized SDEs.

    Forward (Euler-Maruyama): ``x_{i+1} = x_i + f(x_i, t_i) dt_i + g(t_i) sqrt(dt_i) dF_i``;
    backward: ``x_i = x_{i+1} - [f - g^2 s](x_{i+1}, t_{i+1}) dt_i + g(t_{i+1}) sqrt(dt_i) dB_i``.
    Both transitions are Gaussian, so the weight is
    ``log prior(x_N) + sum_i [|dF_i|^2 / 2 - |dB_i|^2 / 2 + d log(g(t_i) / g(t_{i+1}))]``.
    Its expectation is an ELBO of the backward chain's marginal ``p_B(x_0)``
    and ``E exp(log w) = p_B(x_0)``. The path is reparameterized, so the
    weight is differentiable in the drift and the score.

    Arguments:
        process: a DiffFlow or any score process (a fixed-SDE score model too).
        x0: data of shape ``batch_shape + (dim,)``.
        times: increasing times ``t_0 < ... < t_N`` with ``t_N = T``.

    Returns:
        ``log w`` of shape ``batch_shape``.

    References:
        Zhang & Chen, *Diffusion Normalizing Flow*, NeurIPS 2021, eq. (9)-(12).
    """
    return _path_log_weight(process, x0, times, "path_log_weight")


def _path_log_weight(
    process: ScoreProcess, x0: Tensor, times: Sequence[float], name: str
) -> Tensor:
    if not isinstance(process, ScoreProcess):
        raise TypeError(f"{name}: expected a DiffFlow or ScoreModel, got {type(process).__name__}")
    process.check_input(x0, name)
    try:
        times = [float(t) for t in times]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a sequence of float times, got {times!r}") from None
    if len(times) < 2 or any(b <= a for a, b in zip(times[:-1], times[1:], strict=True)):
        raise ValueError(f"{name}: expected at least 2 increasing times, got {times}")
    if times[0] < 0 or abs(times[-1] - process.sde.T) > 1e-12:
        raise ValueError(f"{name}: expected times from >= 0 to T={process.sde.T:g}, got {times}")
    d = process.dim
    x = x0
    t = x0.new_full(x0.shape[:-1], times[0])
    f = process.unchecked_forward_drift(x, t)
    g = process.sde.diffusion_sq(t).sqrt()
    log_w = x0.new_zeros(x0.shape[:-1])
    guard = StepGuard(name)
    for i in range(len(times) - 1):
        dt = times[i + 1] - times[i]
        noise = torch.randn_like(x)
        x_next = x + f * dt + (g * math.sqrt(dt)).unsqueeze(-1) * noise
        t_next = x0.new_full(x0.shape[:-1], times[i + 1])
        f_next, s_next = process.unchecked_drift_and_score(x_next, t_next)
        g2_next = process.sde.diffusion_sq(t_next)
        g_next = g2_next.sqrt()
        back = f_next - g2_next.unsqueeze(-1) * s_next
        guard.watch(back, i + 1, times[i + 1], "the score or drift")
        d_back = (x - x_next + back * dt) / (g_next * math.sqrt(dt)).unsqueeze(-1)
        log_w = log_w + 0.5 * (noise.square().sum(-1) - d_back.square().sum(-1))
        log_w = log_w + d * (g.log() - g_next.log())
        x, f, g = x_next, f_next, g_next
    log_w = log_w + process.sde.prior_log_prob(x)
    guard.watch(log_w, len(times) - 1, times[-1], "the path log weight")
    guard.check("check the networks, or use a finer grid")
    return log_w


class DiffFlow(ScoreProcess):
    r"""Diffusion normalizing flow: forward ``dx = [c(t) x + f_theta(x, t)] dt + g(t) dW``.

    The forward drift is the SDE's linear drift plus a trainable ``drift_net``
    (zero at start when built with ``zero_last=True``; ``None`` keeps the fixed
    SDE, and the model is then a score model trained on the path KL). The
    model is the backward chain ``x_N ~ prior``, ``x_i = x_{i+1} - [f - g^2 s] dt
    + g sqrt(dt) z`` on the ``num_steps`` grid; it is trained by minimizing the
    path KL ``E[-log w]`` (:func:`path_log_weight`) by plain backpropagation
    through the steps.

    Arguments:
        sde: the noise process (its ``g``, its linear drift, its prior).
        score_net: network ``(x, t) -> score`` (or noise, see ``parameterization``);
            with ``drift_net="shared"`` a network ``(x, t) -> [score, drift]`` of
            ``2 * dim`` outputs, one call per step for both.
        drift_net: network ``(x, t) -> drift correction``, ``None`` (fixed SDE) or
            ``"shared"``: the second half of ``score_net``'s output times a learned
            scale that starts at zero.
        dim: event size (default ``score_net.dim``).
        num_steps: steps of the discretization (about 30).
        grid: ``"quadratic"``, ``"uniform"`` or an explicit increasing sequence from 0 to ``T``.
        parameterization: ``"noise"`` or ``"score"`` as in :class:`ScoreProcess`.
        t_min: the smallest time of the ODE likelihood and of the other samplers.

    References:
        Zhang & Chen, *Diffusion Normalizing Flow*, NeurIPS 2021, arXiv 2110.07579.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import VPSDE
        >>> from pyro_relax.nn.score import ScoreMLP
        >>> drift = ScoreMLP(2, hidden=(16,), zero_last=True)
        >>> flow = DiffFlow(VPSDE(), ScoreMLP(2, hidden=(16,)), drift)
        >>> flow.loss(torch.randn(8, 2)).shape, flow.sample((5,)).shape
        (torch.Size([]), torch.Size([5, 2]))
    """

    def __init__(
        self,
        sde: SDE,
        score_net: nn.Module,
        drift_net: nn.Module | str | None = None,
        dim: int | None = None,
        num_steps: int = 30,
        grid: str | Sequence[float] = "quadratic",
        parameterization: str = "noise",
        t_min: float | None = None,
    ) -> None:
        super().__init__(sde, score_net, dim, parameterization, t_min)
        self.shared = isinstance(drift_net, str)
        if self.shared:
            if drift_net != "shared":
                raise ValueError(
                    f"DiffFlow: expected drift_net 'shared', a module or None, got {drift_net!r}"
                )
            self.drift_scale = nn.Parameter(torch.zeros(()))
            drift_net = None
        elif drift_net is not None:
            if not isinstance(drift_net, nn.Module):
                raise TypeError(
                    f"DiffFlow: expected an nn.Module drift_net, got {type(drift_net).__name__}"
                )
            net_dim = getattr(drift_net, "dim", None)
            if isinstance(net_dim, int) and net_dim != self.dim:
                raise ValueError(
                    f"DiffFlow: expected a drift network of dimension {self.dim}, got {net_dim}"
                )
        self.drift_net = drift_net
        if isinstance(grid, str):
            times = time_grid(num_steps, grid, sde.T)
        else:
            times = [float(t) for t in grid]
            ok = len(times) >= 2 and all(b > a for a, b in zip(times[:-1], times[1:], strict=True))
            if not ok or times[0] != 0.0 or abs(times[-1] - sde.T) > 1e-12:
                raise ValueError(
                    f"DiffFlow: expected an increasing grid from 0 to {sde.T:g}, got {times}"
                )
        self.times = times

    @property
    def num_steps(self) -> int:
        """The number of steps of the discretization."""
        return len(self.times) - 1

    def unchecked_forward_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """The SDE's linear drift plus the learned correction, without input checks."""
        if self.shared:
            return self.unchecked_drift_and_score(x, t)[0]
        base = super().unchecked_forward_drift(x, t)
        if self.drift_net is None:
            return base
        return base + network_output(self.drift_net, x, t, type(self).__name__)

    def unchecked_score(self, x: Tensor, t: Tensor) -> Tensor:
        """The learned score, without input checks."""
        if self.shared:
            return self.unchecked_drift_and_score(x, t)[1]
        return super().unchecked_score(x, t)

    def unchecked_drift_and_score(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x, t), s(x, t))``, from one call of a shared network, without input checks."""
        if not self.shared:
            return super().unchecked_drift_and_score(x, t)
        out = self.network(x, t)
        d = self.dim
        if out.shape != x.shape[:-1] + (2 * d,):
            raise ValueError(
                f"DiffFlow: expected the shared network to return shape "
                f"{tuple(x.shape[:-1]) + (2 * d,)}, got {tuple(out.shape)}"
            )
        base = self.sde.drift_coef(t).unsqueeze(-1) * x
        drift = base + self.drift_scale.to(x.dtype) * out[..., d:]
        return drift, self._as_score(out[..., :d], t)

    def elbo(self, x0: Tensor, num_particles: int = 1) -> Tensor:
        """The path ELBO of ``log p_B(x0)``, averaged over ``num_particles`` forward paths."""
        return self._weights(x0, num_particles).mean(0)

    def log_prob_iw(self, x0: Tensor, num_particles: int = 16) -> Tensor:
        """The importance-weighted bound ``log mean_k w_k``, tighter as ``num_particles`` grows."""
        return self._weights(x0, num_particles).logsumexp(0) - math.log(num_particles)

    def _weights(self, x0: Tensor, num_particles: int) -> Tensor:
        check_int(num_particles, "num_particles", "DiffFlow", minimum=1)
        self.check_input(x0, "elbo")
        return _path_log_weight(
            self, x0.expand((num_particles,) + x0.shape), self.times, "DiffFlow.elbo"
        )

    def loss(self, x0: Tensor) -> Tensor:
        """The path KL ``E[-log w]`` up to the data entropy, averaged over the batch."""
        self.check_input(x0, "loss")
        if x0.numel() == 0:
            raise ValueError("DiffFlow.loss: expected at least one data point, got an empty batch")
        loss = -_path_log_weight(self, x0, self.times, "DiffFlow.loss").mean()
        return check_finite_result(loss, "DiffFlow.loss", "the loss")

    def sample(
        self, sample_shape: Sequence[int] = (), denoise: bool = False, progress: bool = False
    ) -> Tensor:
        """Run the backward chain on the model's grid (with its last noise unless ``denoise``)."""
        return reverse_euler(
            self, sample_shape, 1, None, self.times, denoise, None, progress, "DiffFlow.sample"
        )
