r"""The robust SVI loop behind :func:`~pyro_relax.infer.runner.fit_guide`.

One loop for every ``AutoContinuous`` guide (Pyro's and ours). Each step draws
``n`` reparametrized particles ``(z_i, log q_i)`` and evaluates the model's
unconstrained log density ``log p(z_i)`` (vectorized: a particle plate, else
``torch.func.vmap``, else a loop, see :mod:`pyro_relax.infer.guides.potential`).
The ELBO estimate is ``mean_i (log p(z_i) - log q_i)``, the quantity
``Trace_ELBO`` computes for these guides. What is added is robustness:

* **Non-finite particles are dropped, and counted.** The model's gradient
  enters through ``z`` only, so the loss is the surrogate
  ``-(1/m) sum_{i ok} (g_i . z_i - log q_i)`` with ``g_i = grad log p(z_i)``
  (detached): its gradient is the ELBO gradient over the ``m`` particles whose
  log density and gradient are finite, and a bad particle cannot put NaN into
  the parameters' gradients.
* **A step whose loss or gradient is not finite is skipped** and the learning
  rate halved; gradients are clipped (norm 10). After ``max_bad_steps`` bad
  steps in a row the fit stops with a :class:`FloatingPointError` that says
  what went wrong and what to try.
* **Optional convergence stop**: with ``until_converged=True`` the loop ends
  when the mean ELBO of a window of steps has not beaten the best window by
  ``tol`` nats for ``patience`` windows.
"""

from __future__ import annotations

__all__ = ["LoopStats", "fit_particles", "particle_draw"]

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor

from pyro_relax._progress import progress_bar
from pyro_relax.infer.guides.base import RelaxedGuideMixin
from pyro_relax.infer.model import Potential


@dataclass
class LoopStats:
    """What :func:`fit_particles` measured."""

    elbo: list[float]
    seconds: float
    steps: int
    particles: int
    dropped_particles: int = 0
    skipped_steps: int = 0
    final_lr: float = 0.0
    converged: bool | None = None
    vectorization: str | None = None
    notes: list[str] = field(default_factory=list)


def particle_draw(guide: AutoContinuous, n: int) -> tuple[Tensor, Tensor]:
    """``n`` reparametrized draws ``z`` and ``log q(z)`` from a set-up ``AutoContinuous`` guide."""
    if isinstance(guide, RelaxedGuideMixin):
        return guide.rsample_unconstrained(n)
    post = guide.get_posterior()
    z = post.rsample(torch.Size([n]))
    return z, post.log_prob(z)


def _lower_lr(optim: torch.optim.Optimizer, factor: float) -> float:
    for group in optim.param_groups:
        group["lr"] *= factor
    return float(optim.param_groups[0]["lr"])


def fit_particles(
    guide: AutoContinuous,
    model: Callable[[], Any],
    steps: int,
    lr: float,
    num_particles: int,
    *,
    until_converged: bool = False,
    average_from: int | None = None,
    min_steps: int = 300,
    window: int = 100,
    patience: int = 3,
    tol: float = 0.05,
    clip_norm: float = 10.0,
    max_bad_steps: int = 25,
    progress: bool = False,
    desc: str = "fit",
    owner: str = "fit_guide",
) -> LoopStats:
    """Fit ``guide`` to ``model`` by the robust particle ELBO of the module docstring.

    Arguments:
        guide: an ``AutoContinuous`` guide (it is set up here if it never ran).
        model: the zero-argument model.
        steps: the number of steps (the most, with ``until_converged``).
        lr: Adam's initial learning rate (decayed tenfold over ``steps``).
        num_particles: particles per step (lowered to 2 when the model can only
            be evaluated row by row in a Python loop; the stats say so).
        until_converged: stop once the windowed ELBO stops improving.
        average_from: from this step on, the parameters are averaged (Polyak-Ruppert)
            and the average is kept at the end: for noisy (mini-batch) gradients.
        min_steps: the fewest steps before a convergence stop.
        window: steps per window of the convergence rule.
        patience: windows without improvement before stopping.
        tol: the improvement in nats that counts.
        clip_norm: gradient norm clipping.
        max_bad_steps: consecutive non-finite steps before giving up.
        progress: show a progress bar.
        desc: the progress bar's label.
        owner: the name used in error messages.

    Returns:
        The ELBO trace and the counts of dropped particles and skipped steps.

    Raises:
        FloatingPointError: when ``max_bad_steps`` steps in a row are not finite.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoDiagonalNormal
        >>> def model():
        ...     pyro.sample("x", dist.Normal(1.0, 2.0))
        >>> stats = fit_particles(AutoDiagonalNormal(model), model, 50, 0.05, 4)
        >>> len(stats.elbo), stats.dropped_particles
        (50, 0)
    """
    start = time.perf_counter()
    if getattr(guide, "prototype_trace", None) is None:
        guide()
    params = [p for p in guide.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{owner}: the guide has no trainable parameters")
    if isinstance(guide, RelaxedGuideMixin):
        potential = guide.potential
    else:  # Pyro's own guides: a potential in the dtype of their parameters
        potential = Potential(model, dtype=params[0].dtype)
    optim = torch.optim.Adam(params, lr=lr)
    decay = 0.1 ** (1.0 / max(steps, 1))
    stats = LoopStats([], 0.0, 0, num_particles, final_lr=lr)
    bad_run, last_problem = 0, ""
    best, stale, window_sum = -math.inf, 0, 0.0
    averaged: list[Tensor] | None = None
    count = 0
    bar = progress_bar(range(steps), disable=not progress, desc=desc)
    for i in bar:
        n = stats.particles
        z, log_q = particle_draw(guide, n)
        zd = z.detach().requires_grad_(True)
        lp = potential.log_density(zd)
        if stats.vectorization is None and potential.vectorization is not None:
            stats.vectorization = potential.vectorization
            if stats.vectorization == "loop" and n > 2:
                stats.particles = 2
                stats.notes.append(
                    f"the model runs only row by row: {n} particles per step lowered to 2"
                )
        (grad,) = torch.autograd.grad(lp.sum(), zd, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(zd)
        log_q = log_q.to(lp.dtype)
        ok = torch.isfinite(lp) & torch.isfinite(grad).all(-1) & torch.isfinite(log_q)
        ok = ok & torch.isfinite(z).all(-1)
        m = int(ok.sum())
        stats.dropped_particles += n - m
        loss = None
        if m > 0:
            loss = -((grad[ok].detach() * z[ok]).sum(-1) - log_q[ok]).sum() / m
            optim.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
            if not torch.isfinite(norm):
                loss, last_problem = None, "a non-finite gradient of the guide's parameters"
            else:
                optim.step()
        else:
            bad = lp[~torch.isfinite(lp)]
            kind = "NaN" if bool(torch.isnan(bad).any()) else "infinite" if bad.numel() else "bad"
            last_problem = f"a {kind} log density or gradient at all {n} particles"
        if loss is None:
            optim.zero_grad()
            stats.skipped_steps += 1
            bad_run += 1
            stats.final_lr = _lower_lr(optim, 0.5)
            if bad_run >= max_bad_steps:
                raise FloatingPointError(
                    f"{owner}: {bad_run} steps in a row failed at step {i} ({last_problem}); "
                    "try --dtype float64, a smaller --lr, or check the model's support and "
                    "initial values"
                )
            continue
        bad_run = 0
        stats.final_lr = _lower_lr(optim, decay)
        if average_from is not None and i >= average_from:  # Polyak-Ruppert averaging
            with torch.no_grad():
                if averaged is None:
                    averaged, count = [p.detach().clone() for p in params], 1
                else:
                    count += 1
                    for a, p in zip(averaged, params, strict=True):
                        a += (p.detach() - a) / count
        value = float((lp[ok] - log_q[ok]).detach().mean())
        stats.elbo.append(value)
        if progress and i % 50 == 0:
            bar.set_postfix(elbo=f"{value:.3f}")
        if until_converged:
            window_sum += value
            if len(stats.elbo) % window == 0:
                mean = window_sum / window
                window_sum = 0.0
                if mean > best + tol:
                    best, stale = mean, 0
                else:
                    stale += 1
                if stale >= patience and len(stats.elbo) >= min_steps:
                    stats.converged = True
                    break
    else:
        if until_converged:
            stats.converged = False
    bar.close()
    if averaged is not None:
        with torch.no_grad():
            for a, p in zip(averaged, params, strict=True):
                p.copy_(a)
    if not stats.elbo:
        raise FloatingPointError(f"{owner}: no step had a finite ELBO ({last_problem})")
    stats.steps = len(stats.elbo) + stats.skipped_steps
    stats.seconds = time.perf_counter() - start
    stats.vectorization = potential.vectorization or stats.vectorization
    return stats
