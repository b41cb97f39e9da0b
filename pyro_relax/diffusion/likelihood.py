"""Exact likelihood through the probability-flow ODE; divergences; bits per dimension."""

from __future__ import annotations

__all__ = [
    "bits_per_dim",
    "dequantize",
    "dequantized_log_prob",
    "ode_log_prob",
    "ode_options",
    "solve_guarded",
]

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from pyro_relax.core.checks import check_finite, check_int, check_positive
from pyro_relax.diffusion.divergence import exact_divergence, hutchinson_divergence
from pyro_relax.diffusion.guard import StepGuard, check_finite_result

if TYPE_CHECKING:
    from pyro_relax.diffusion.score_model import ScoreProcess

_FIXED_METHODS = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "explicit_adams",
    "implicit_adams",
    "fixed_adams",
)
_ADAPTIVE_METHODS = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")


def ode_options(method: str, steps: int | None, name: str) -> dict[str, Any] | None:
    """Options for ``torchdiffeq.odeint``: ``steps`` uniform steps for a fixed-step method."""
    if not isinstance(method, str):
        raise TypeError(f"{name}: expected a torchdiffeq method name, got {type(method).__name__}")
    if method not in _FIXED_METHODS + _ADAPTIVE_METHODS:
        raise ValueError(
            f"{name}: expected a method in {_FIXED_METHODS + _ADAPTIVE_METHODS}, got {method!r}"
        )
    if method not in _FIXED_METHODS:
        return None
    check_int(steps, "steps", f"{name} (fixed-step method {method!r})", minimum=1)

    def grid(func: object, y0: Tensor, t: Tensor) -> Tensor:
        return torch.linspace(float(t[0]), float(t[-1]), steps + 1, device=t.device, dtype=t.dtype)

    return {"grid_constructor": grid}


def solve_guarded(
    guard: StepGuard,
    func: Callable[..., Any],
    y0: Tensor | tuple[Tensor, ...],
    times: Tensor,
    method: str,
    rtol: float,
    atol: float,
    options: dict[str, Any] | None,
    hint: str,
) -> Tensor | tuple[Tensor, ...]:
    """``torchdiffeq.odeint`` whose failures name the entry point (``guard.name``).

    A non-finite network output recorded by ``guard`` is raised as a
    ``FloatingPointError`` naming the first bad evaluation (also when it made the
    adaptive solver give up); the solver's own ``AssertionError`` (``underflow in
    dt``) becomes a ``FloatingPointError`` too.

    Arguments:
        guard: the guard the ODE function watches its outputs with.
        func: the ODE function.
        y0: the start state (a tensor or a tuple of tensors).
        times: the two end times.
        method: the torchdiffeq method.
        rtol: relative tolerance.
        atol: absolute tolerance.
        options: torchdiffeq options.
        hint: what the user may change, appended to the message.

    Returns:
        The solution at ``times``.

    Raises:
        FloatingPointError: if the network returned NaN or inf or the solver failed.
    """
    for label, tol in (("rtol", rtol), ("atol", atol)):
        check_positive(tol, label, guard.name)
    try:
        out = odeint(func, y0, times, method=method, rtol=rtol, atol=atol, options=options)
    except AssertionError as err:
        guard.check(hint)
        raise FloatingPointError(
            f"{guard.name}: the ODE solver {method!r} failed ({err}); {hint}"
        ) from err
    except Exception:
        guard.check(hint)
        raise
    guard.check(hint)
    return out


def ode_log_prob(
    process: ScoreProcess,
    x: Tensor,
    t_min: float | None = None,
    divergence: str = "auto",
    num_probes: int = 1,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    return_latent: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""``log p(x)`` of a score process through its probability-flow ODE.

    Integrates ``dx/dt = f(x, t) - g(t)^2 s(x, t) / 2`` from ``t_min`` to ``T``
    together with ``int div``, and returns
    ``log prior(x_T) + int_{t_min}^T div(f - g^2 s / 2) dt``: the exact log
    density at time ``t_min`` of the continuous model (up to the solver
    error; unbiased in ``exp`` with Hutchinson's estimator).

    In grad mode, when ``x`` or the model's parameters require grad, the graph of
    the whole solve is kept for backpropagation (its memory grows with every solver
    evaluation); evaluate under ``torch.no_grad()`` when no gradient is needed.

    Arguments:
        process: a :class:`~pyro_relax.diffusion.ScoreModel` or
            :class:`~pyro_relax.diffusion.DiffFlow`.
        x: data of shape ``batch_shape + (dim,)``.
        t_min: the start time (default ``process.t_min``).
        divergence: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact up to 10 dimensions).
        num_probes: Hutchinson probes, fixed along the whole solve.
        method: a torchdiffeq method (``"dopri5"`` adaptive; ``"rk4"``, ``"euler"`` fixed).
        rtol: relative tolerance of an adaptive method.
        atol: absolute tolerance of an adaptive method.
        steps: the number of steps of a fixed-step method.
        return_latent: also return ``x_T``.

    Returns:
        ``log p(x)`` of shape ``batch_shape`` (and ``x_T``).

    References:
        Song et al., *Score-Based Generative Modeling through SDEs*, ICLR 2021,
        Appendix D.2; Chen et al., *Neural ODEs*, NeurIPS 2018.

    Example:
        >>> import torch
        >>> from pyro_relax.diffusion import GaussianScore, ScoreModel, VPSDE
        >>> sde = VPSDE()
        >>> model = ScoreModel(sde, GaussianScore(sde, torch.zeros(2), torch.eye(2)), 2, "score")
        >>> ode_log_prob(model, torch.zeros(3, 2)).shape
        torch.Size([3])
    """
    from pyro_relax.diffusion.score_model import ScoreProcess

    if not isinstance(process, ScoreProcess):
        raise TypeError(
            f"ode_log_prob: expected a ScoreModel or DiffFlow, got {type(process).__name__}"
        )
    process.check_input(x, "ode_log_prob")
    if isinstance(t_min, bool) or not (t_min is None or isinstance(t_min, int | float)):
        raise TypeError(f"ode_log_prob: expected t_min as a float, got {type(t_min).__name__}")
    t_min = process.t_min if t_min is None else float(t_min)
    if not 0.0 <= t_min < process.sde.T:
        raise ValueError(f"ode_log_prob: expected t_min in [0, {process.sde.T:g}), got {t_min}")
    process.check_t_floor(t_min, "ode_log_prob")
    check_int(num_probes, "num_probes", "ode_log_prob", minimum=1)
    if divergence == "auto":
        divergence = "exact" if process.dim <= 10 else "hutchinson"
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(
            f"ode_log_prob: expected divergence 'exact', 'hutchinson' or 'auto', got {divergence!r}"
        )
    options = ode_options(method, steps, "ode_log_prob")
    # a graph only when something can take a gradient: the data or the model's parameters
    create_graph = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in process.parameters())
    )
    batch = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    probes = None
    if divergence == "hutchinson":
        probes = torch.randn((num_probes,) + flat.shape, device=x.device, dtype=x.dtype).sign()

    def func(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        y = state[0]
        tt = t.expand(y.shape[:-1])

        def drift(z: Tensor) -> Tensor:
            return process.unchecked_ode_drift(z, tt)

        if probes is None:
            v, div = exact_divergence(drift, y, create_graph)
        else:
            v, div = hutchinson_divergence(drift, y, probes=probes, create_graph=create_graph)
        if not create_graph:
            v, div = v.detach(), div.detach()
        calls[0] += 1
        guard.watch(v, calls[0], t, "the score (ODE velocity; steps count evaluations)")
        guard.watch(div, calls[0], t, "the divergence of the ODE velocity")
        return v, div

    guard = StepGuard("ode_log_prob")
    calls = [0]
    times = torch.tensor([t_min, process.sde.T], device=x.device, dtype=x.dtype)
    state0 = (flat, flat.new_zeros(flat.shape[:-1]))
    hint = "check the network, or use a larger t_min or another method"
    xs, divs = solve_guarded(guard, func, state0, times, method, rtol, atol, options, hint)
    z, acc = xs[-1], divs[-1]
    log_p = (process.sde.prior_log_prob(z) + acc).reshape(batch)
    check_finite_result(log_p, "ode_log_prob", "the log density")
    if return_latent:
        return log_p, z.reshape(x.shape)
    return log_p


def dequantize(x: Tensor, num_bins: int) -> Tensor:
    """Uniform dequantization ``y = (x + u) / num_bins`` of integers ``0..num_bins-1``.

    Example:
        >>> import torch
        >>> y = dequantize(torch.tensor([[0.0, 16.0]]), 17)
        >>> bool(((y >= 0) & (y < 1)).all())
        True
    """
    if not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"dequantize: expected num_bins >= 2, got {num_bins!r}")
    check_finite(x, "dequantize")
    if bool(((x != x.round()) | (x < 0) | (x > num_bins - 1)).any()):
        raise ValueError(f"dequantize: expected integer values in [0, {num_bins - 1}]")
    x = x if x.is_floating_point() else x.to(torch.get_default_dtype())
    return (x + torch.rand_like(x)) / num_bins


def dequantized_log_prob(
    log_prob_fn: Callable[[Tensor], Tensor], x: Tensor, num_bins: int, num_samples: int = 1
) -> Tensor:
    r"""Lower bound on ``log P(x)`` of integer data from a density on ``[0, 1)^d``.

    ``log P(x) >= E_u[log p((x + u) / K)] - d log K`` (Jensen; uniform ``u``),
    averaged over ``num_samples`` dequantizations.

    Arguments:
        log_prob_fn: the log density of the dequantized ``y`` in ``[0, 1)^d``.
        x: integers in ``0..num_bins-1`` of shape ``batch_shape + (d,)``.
        num_bins: ``K``, the number of levels.
        num_samples: dequantization draws averaged.

    Returns:
        the bound, of shape ``batch_shape``.

    References:
        Theis, van den Oord, Bethge, *A note on the evaluation of generative models*, 2016.

    Example:
        >>> import torch
        >>> lp = dequantized_log_prob(lambda y: y.new_zeros(y.shape[:-1]), torch.zeros(2, 3), 4)
        >>> bits_per_dim(lp, 3)
        tensor([2., 2.])
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"dequantized_log_prob: expected num_samples >= 1, got {num_samples!r}")
    total = None
    for _ in range(num_samples):
        lp = log_prob_fn(dequantize(x, num_bins))
        total = lp if total is None else total + lp
    assert total is not None
    return total / num_samples - x.shape[-1] * math.log(num_bins)


def bits_per_dim(log_prob: Tensor, event_size: int) -> Tensor:
    """Bits per dimension ``-log_prob / (event_size log 2)``.

    Example:
        >>> import math, torch
        >>> bits_per_dim(torch.tensor(-2 * math.log(2.0)), 2)
        tensor(1.)
    """
    if not isinstance(event_size, int) or event_size < 1:
        raise ValueError(f"bits_per_dim: expected a positive int event_size, got {event_size!r}")
    return -log_prob / (event_size * math.log(2.0))
