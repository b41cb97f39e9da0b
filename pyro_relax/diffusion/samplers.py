"""Samplers of score processes: reverse-SDE Euler-Maruyama, predictor-corrector, ODE."""

from __future__ import annotations

__all__ = [
    "check_steps",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow",
    "reverse_euler",
    "sample_shape_of",
]

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pyro_relax._progress import progress_bar
from pyro_relax.core.checks import check_int, check_positive
from pyro_relax.diffusion.guard import StepGuard
from pyro_relax.diffusion.likelihood import ode_options, solve_guarded
from pyro_relax.diffusion.score_model import ScoreProcess

_HINT = "check the network, or take more steps or a larger t_min"


def check_steps(steps: int, name: str) -> None:
    """Raise a ``TypeError`` or ``ValueError`` unless ``steps`` is a positive int.

    Example:
        >>> check_steps(10, "demo")
    """
    check_int(steps, "steps", name, minimum=1)


def sample_shape_of(sample_shape: Sequence[int] | torch.Size, name: str) -> torch.Size:
    """``sample_shape`` as a ``torch.Size`` of non-negative sizes."""
    try:
        shape = torch.Size(sample_shape)
    except TypeError:
        raise TypeError(f"{name}: expected a sample shape of ints, got {sample_shape!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"{name}: expected non-negative sizes, got {tuple(shape)}")
    return shape


def _grid(
    process: ScoreProcess,
    steps: int,
    t_min: float | None,
    times: Sequence[float] | Tensor | None,
    name: str,
    closed: bool = False,
) -> list[float]:
    """Increasing times ``t_min = t_0 < ... < t_K = T`` as Python floats (no host syncs later).

    ``closed``: the sampler evaluates the network at ``t_min`` too (an ODE solver),
    so ``t_min`` must be a time where the score is defined.
    """
    if isinstance(t_min, bool) or not (t_min is None or isinstance(t_min, int | float)):
        raise TypeError(f"{name}: expected t_min as a float or None, got {type(t_min).__name__}")
    if times is not None:
        try:
            raw = times.flatten().tolist() if isinstance(times, Tensor) else list(times)
            grid = [float(v) for v in raw]
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a sequence of float times, got {times!r}") from None
        if not all(math.isfinite(v) for v in grid):
            raise ValueError(f"{name}: expected finite times, got {grid}")
        if len(grid) < 2 or any(b <= a for a, b in zip(grid[:-1], grid[1:], strict=True)):
            raise ValueError(f"{name}: expected at least 2 strictly increasing times, got {grid}")
        if grid[0] < 0 or grid[-1] > process.sde.T:
            raise ValueError(
                f"{name}: expected times in [0, {process.sde.T:g}], got [{grid[0]}, {grid[-1]}]"
            )
        return grid
    check_steps(steps, name)
    lo = process.t_min if t_min is None else float(t_min)
    if not 0.0 <= lo < process.sde.T:
        raise ValueError(f"{name}: expected t_min in [0, {process.sde.T:g}), got {lo}")
    if closed and lo == 0.0:
        process.check_t_floor(lo, name)
    return [lo + (process.sde.T - lo) * k / steps for k in range(steps + 1)]


def _start(process: ScoreProcess, shape: torch.Size, x_T: Tensor | None, name: str) -> Tensor:
    if x_T is None:
        return process.prior_sample(shape)
    process.check_input(x_T, name)
    return x_T


def euler_maruyama(
    process: ScoreProcess,
    sample_shape: Sequence[int] = (),
    steps: int = 1000,
    t_min: float | None = None,
    times: Sequence[float] | Tensor | None = None,
    denoise: bool = True,
    x_T: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    r"""Euler-Maruyama on the reverse SDE ``dx = [f - g^2 s] dt + g dW``, from ``T`` to ``t_min``.

    ``x_{k-1} = x_k - [f - g^2 s](x_k, t_k) dt_k + g(t_k) sqrt(dt_k) z``: the
    backward scheme of DiffFlow. Differentiable (``rsample``) with respect to
    the networks.

    Arguments:
        process: a score model or DiffFlow.
        sample_shape: leading shape of the samples (the event ``(dim,)`` is appended).
        steps: the number of uniform steps (ignored when ``times`` is given).
        t_min: the final time (default ``process.t_min``).
        times: an explicit increasing time grid from the final time to ``T``.
        denoise: leave the noise out of the last step (returns its mean).
        x_T: a start at ``T`` (default: drawn from the prior).
        progress: show a tqdm progress bar.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import GaussianScore, ScoreModel, VPSDE
        >>> sde = VPSDE()
        >>> m = ScoreModel(sde, GaussianScore(sde, torch.zeros(2), torch.eye(2)), 2, "score")
        >>> euler_maruyama(m, (5,), steps=10).shape
        torch.Size([5, 2])
    """
    return reverse_euler(
        process, sample_shape, steps, t_min, times, denoise, x_T, progress, "euler_maruyama"
    )


def reverse_euler(
    process: ScoreProcess,
    sample_shape: Sequence[int],
    steps: int,
    t_min: float | None,
    times: Sequence[float] | Tensor | None,
    denoise: bool,
    x_T: Tensor | None,
    progress: bool,
    name: str,
) -> Tensor:
    """:func:`euler_maruyama` with the entry point ``name`` in its messages (for wrappers)."""
    if not isinstance(process, ScoreProcess):
        raise TypeError(f"{name}: expected a ScoreModel or DiffFlow, got {type(process).__name__}")
    shape = sample_shape_of(sample_shape, name)
    grid = _grid(process, steps, t_min, times, name)
    x = _start(process, shape, x_T, name)
    guard = StepGuard(name)
    last = len(grid) - 1
    bar = progress_bar(range(last, 0, -1), disable=not progress, desc=name)
    for n, k in enumerate(bar, start=1):
        dt = grid[k] - grid[k - 1]
        t = x.new_full(x.shape[:-1], grid[k])
        drift = process.unchecked_reverse_drift(x, t)
        guard.watch(drift, n, grid[k], "the score (reverse drift)")
        x = x - drift * dt
        if k > 1 or not denoise:
            g = process.sde.diffusion_sq(t).sqrt().unsqueeze(-1)
            x = x + g * dt**0.5 * torch.randn_like(x)
    guard.watch(x, last, grid[0], "the sample")
    guard.check(_HINT)
    return x


def predictor_corrector(
    process: ScoreProcess,
    sample_shape: Sequence[int] = (),
    steps: int = 1000,
    snr: float = 0.16,
    corrector_steps: int = 1,
    t_min: float | None = None,
    denoise: bool = True,
    x_T: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    r"""Predictor-corrector sampling: Langevin corrector steps, then an Euler-Maruyama predictor.

    At each time the corrector moves ``x <- x + eps s + sqrt(2 eps) z`` with the
    signal-to-noise step ``eps = 2 alpha (snr |z| / |s|)^2`` (``alpha = 1 - beta(t) dt``
    for VP, 1 otherwise), the norms averaged over all the samples of the batch as in
    Song et al.: per-sample norms blow up the step where a score happens to be
    near zero, which in low dimension is frequent.

    Arguments:
        process: a score model or DiffFlow.
        sample_shape: leading shape of the samples.
        steps: predictor steps.
        snr: the corrector's signal-to-noise ratio ``r``.
        corrector_steps: Langevin steps per time.
        t_min: the final time.
        denoise: leave the noise out of the last predictor step.
        x_T: a start at ``T``.
        progress: show a tqdm progress bar.

    References:
        Song et al., *Score-Based Generative Modeling through SDEs*, ICLR 2021, Algorithms 4-5.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import GaussianScore, ScoreModel, VESDE
        >>> sde = VESDE(sigma_max=5.0)
        >>> m = ScoreModel(sde, GaussianScore(sde, torch.zeros(2), torch.eye(2)), 2, "score")
        >>> predictor_corrector(m, (3,), steps=10).shape
        torch.Size([3, 2])
    """
    shape = sample_shape_of(sample_shape, "predictor_corrector")
    grid = _grid(process, steps, t_min, None, "predictor_corrector")
    check_int(corrector_steps, "corrector_steps", "predictor_corrector", minimum=0)
    check_positive(snr, "snr", "predictor_corrector")
    x = _start(process, shape, x_T, "predictor_corrector")
    guard = StepGuard("predictor_corrector")
    bar = progress_bar(range(steps, 0, -1), disable=not progress, desc="predictor_corrector")
    for n, k in enumerate(bar, start=1):
        dt = grid[k] - grid[k - 1]
        t = x.new_full(x.shape[:-1], grid[k])
        # VP's alpha = 1 - beta dt is negative for coarse grids: no corrector move there
        alpha = process.sde.corrector_alpha(t, dt).clamp_min(0.0).unsqueeze(-1)
        for _ in range(corrector_steps):
            s = process.unchecked_score(x, t)
            guard.watch(s, n, grid[k], "the score (corrector)")
            z = torch.randn_like(x)
            ratio = z.norm(dim=-1).mean() / s.norm(dim=-1).mean().clamp_min(1e-30)
            eps = 2 * alpha * (snr * ratio).square()
            x = x + eps * s + (2 * eps).sqrt() * z
        drift = process.unchecked_reverse_drift(x, t)
        guard.watch(drift, n, grid[k], "the score (reverse drift)")
        x = x - drift * dt
        if k > 1 or not denoise:
            x = x + process.sde.diffusion_sq(t).sqrt().unsqueeze(-1) * dt**0.5 * torch.randn_like(x)
    guard.watch(x, steps, grid[0], "the sample")
    guard.check(_HINT + ", or a smaller snr")
    return x


def probability_flow(
    process: ScoreProcess,
    sample_shape: Sequence[int] = (),
    steps: int = 100,
    method: str = "rk4",
    t_min: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    x_T: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    r"""Integrate the probability-flow ODE ``dx/dt = f - g^2 s / 2`` from ``T`` to ``t_min``.

    Deterministic given ``x_T``; with torchdiffeq's fixed-step methods
    (``"euler"``, ``"midpoint"``, ``"rk4"``) ``steps`` uniform steps are taken,
    with an adaptive one (``"dopri5"``) ``steps`` is checked and the step
    size is the solver's. The progress bar counts network evaluations.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import GaussianScore, ScoreModel, VPSDE
        >>> net = GaussianScore(VPSDE(), torch.zeros(2), torch.eye(2))
        >>> m = ScoreModel(net.sde, net, 2, "score")
        >>> x_T = torch.randn(4, 2)
        >>> first, again = (probability_flow(m, x_T=x_T, steps=5) for _ in range(2))
        >>> torch.equal(first, again)
        True
    """
    shape = sample_shape_of(sample_shape, "probability_flow")
    check_steps(steps, "probability_flow")
    grid = _grid(process, steps, t_min, None, "probability_flow", closed=True)
    options = ode_options(method, steps, "probability_flow")
    x = _start(process, shape, x_T, "probability_flow")
    flat = x.reshape(-1, process.dim)
    bar = progress_bar(disable=not progress, desc="probability_flow", unit="evaluations")
    guard = StepGuard("probability_flow")
    calls = [0]

    def func(t: Tensor, y: Tensor) -> Tensor:
        bar.update(1)
        calls[0] += 1
        v = process.unchecked_ode_drift(y, t.expand(y.shape[:-1]))
        guard.watch(v, calls[0], t, "the score (ODE velocity; steps count evaluations)")
        return v

    times = torch.tensor([grid[-1], grid[0]], device=x.device, dtype=x.dtype)
    try:
        out = solve_guarded(guard, func, flat, times, method, rtol, atol, options, _HINT)[-1]
    finally:
        bar.close()
    return out.reshape(x.shape)
