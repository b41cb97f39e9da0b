"""Pyro NUTS for the inference benchmark: dense mass matrix, float64, and a wall-time cap.

``pyro_relax.infer.runner.run_mcmc`` builds ``NUTS(model)`` with a diagonal
mass matrix and no time limit. The issue's reference NUTS adapts a dense mass
matrix (the 26-dimensional regression needs it), and on some posteriors a
chain takes many minutes, so the benchmark drives Pyro's kernel itself, the
way ``pyro.infer.MCMC`` does (``setup``, ``sample`` for warmup then draws,
``cleanup``), and stops once ``cap`` seconds have passed: the draws made so
far are kept and the row says how many.
"""

from __future__ import annotations

__all__ = ["NutsRun", "run_nuts"]

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import NUTS


@dataclasses.dataclass
class NutsRun:
    """Constrained draws ``(1, n, ...)`` per site, the seconds, and what was cut by the cap."""

    samples: dict[str, torch.Tensor]
    seconds: float
    draws: int
    warmup_done: int
    capped: bool
    step_size: float


def run_nuts(
    model: Callable[[], Any],
    num_samples: int,
    warmup_steps: int,
    seed: int,
    cap: float = math.inf,
    full_mass: bool = True,
    dtype: torch.dtype = torch.float64,
) -> NutsRun:
    """One chain of Pyro's NUTS on ``model``, stopped after ``cap`` wall seconds.

    Arguments:
        model: a zero-argument Pyro model with continuous latent sites.
        num_samples: draws after warmup (the most, when the cap stops the chain).
        warmup_steps: adaptation steps (step size and mass matrix).
        seed: Pyro's random seed.
        cap: the wall-time limit in seconds (warmup included).
        full_mass: adapt a dense mass matrix (else diagonal).
        dtype: torch's default dtype during the run (the model's data follow it).

    Returns:
        The draws, with ``capped`` saying whether the cap cut the chain short.

    Raises:
        ValueError: for counts below 1 (draws) or 0 (warmup), or a cap that is not positive.
        TimeoutError: when the cap is reached before the first draw after warmup.
    """
    for name, v, lowest in (("num_samples", num_samples, 1), ("warmup_steps", warmup_steps, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
            raise ValueError(f"run_nuts: expected an int {name} >= {lowest}, got {v!r}")
    if not (isinstance(cap, int | float) and cap > 0):
        raise ValueError(f"run_nuts: expected a cap > 0 seconds, got {cap!r}")
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        pyro.set_rng_seed(seed)
        start = time.perf_counter()
        kernel = NUTS(model, full_mass=full_mass)
        kernel.setup(warmup_steps)
        params = kernel.initial_params
        for i in range(warmup_steps):
            params = kernel.sample(params)
            if time.perf_counter() - start > cap:
                raise TimeoutError(f"run_nuts: the {cap:.0f} s cap was reached in warmup "
                                   f"(step {i + 1} of {warmup_steps})")
        draws: list[dict[str, torch.Tensor]] = []
        for _ in range(num_samples):
            params = kernel.sample(params)
            draws.append({k: v.detach().clone() for k, v in params.items()})
            if time.perf_counter() - start > cap:
                break
        step_size = float(kernel.step_size)
        kernel.cleanup()
        samples = {}
        for name in draws[0]:
            z = torch.stack([d[name] for d in draws])
            tf = kernel.transforms.get(name)
            samples[name] = (tf.inv(z) if tf is not None else z).unsqueeze(0)
        seconds = time.perf_counter() - start
    finally:
        torch.set_default_dtype(old)
    return NutsRun(samples, seconds, len(draws), warmup_steps, len(draws) < num_samples,
                   step_size)
