r"""Optimizer steps for the trainers: a warm-up then cosine schedule, and a gradient guard.

* :class:`WarmupCosine` is the learning-rate factor of a linear warm-up from
  ``start`` times the peak rate to the peak, then a cosine decay to ``end``
  times it (the schedule fab-jax trains FAB with: 2e-5 to 2e-4 over its first
  iterations, then down to 0); use it with ``torch.optim.lr_scheduler.LambdaLR``.
* :class:`GradientGuard` skips a step whose gradient norm exceeds
  ``ignore_factor`` times the median of the last ``window`` norms, and clips the
  others at ``clip_factor`` times that median (fab-jax's dynamic guard; FAB's
  gradients carry rare samples of huge weight, and one of them can undo many
  steps).
* :func:`apply_loss` makes one guarded step: non-finite loss or gradients are
  skipped, never applied.
"""

from __future__ import annotations

__all__ = ["GradientGuard", "WarmupCosine", "apply_loss"]

import math
import numbers
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int, check_real


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay.

    The factor is ``start`` at step 0, 1 at step ``warmup``, and falls as a half
    cosine to ``end`` at step ``total`` (and stays there). It holds only numbers,
    so a ``LambdaLR`` using it saves and restores with ``weights_only=True``.

    Arguments:
        total: steps of the whole schedule (at least 1).
        warmup: warm-up steps, ``0 <= warmup < total`` (0: a plain cosine decay).
        start: factor at step 0, in ``(0, 1]``.
        end: factor at step ``total``, in ``[0, 1]``.

    Example:
        >>> f = WarmupCosine(total=110, warmup=10, start=0.1)
        >>> [round(f(k), 3) for k in (0, 5, 10, 60, 110)]
        [0.1, 0.55, 1.0, 0.5, 0.0]
    """

    def __init__(self, total: int, warmup: int = 0, start: float = 0.1, end: float = 0.0) -> None:
        self.total = check_int(total, "total", "WarmupCosine", 1)
        self.warmup = check_int(warmup, "warmup", "WarmupCosine", 0)
        if self.warmup >= self.total:
            raise ValueError(
                f"WarmupCosine: expected warmup < total={self.total}, got warmup={self.warmup}"
            )
        self.start = check_real(start, "start", "WarmupCosine", 0.0, 1.0, closed=True)
        if self.start == 0.0:
            raise ValueError("WarmupCosine: expected start in (0, 1], got 0")
        self.end = check_real(end, "end", "WarmupCosine", 0.0, 1.0, closed=True)

    def __call__(self, step: int) -> float:
        """The factor at optimizer step ``step``."""
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        frac = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.end + (1.0 - self.end) * 0.5 * (1.0 + math.cos(math.pi * frac))


class GradientGuard:
    """Skip gradient spikes and clip by the median of recent gradient norms.

    Each call records the step's total gradient norm (the ``window`` most recent
    are kept, spikes included, as fab-jax does). Once ``min_history`` norms are
    held, a norm above ``ignore_factor`` times their median means the step is
    skipped, and a norm above ``clip_factor`` times the median is scaled down to
    it. Before that the step passes unchanged.

    Arguments:
        window: norms the median is taken over.
        ignore_factor: skip above this multiple of the median (fab-jax: 10).
        clip_factor: clip at this multiple of the median (fab-jax: 2); at most
            ``ignore_factor``.
        min_history: norms needed before the guard acts (at most ``window``).

    Example:
        >>> guard = GradientGuard(window=4, min_history=2)
        >>> w = torch.zeros(1, requires_grad=True)
        >>> for g in (1.0, 1.0, 50.0, 3.0):
        ...     w.grad = torch.tensor([g])
        ...     print(guard.check([w]), round(float(w.grad), 2))
        True 1.0
        True 1.0
        False 50.0
        True 2.0
    """

    def __init__(
        self,
        window: int = 100,
        ignore_factor: float = 10.0,
        clip_factor: float = 2.0,
        min_history: int = 10,
    ) -> None:
        owner = "GradientGuard"
        self.window = check_int(window, "window", owner, 1)
        self.ignore_factor = check_real(ignore_factor, "ignore_factor", owner, 0.0)
        self.clip_factor = check_real(clip_factor, "clip_factor", owner, 0.0)
        if not 0.0 < self.clip_factor <= self.ignore_factor:
            raise ValueError(
                f"GradientGuard: expected 0 < clip_factor <= ignore_factor, got "
                f"clip_factor={clip_factor!r}, ignore_factor={ignore_factor!r}"
            )
        self.min_history = check_int(min_history, "min_history", owner, 1)
        if self.min_history > self.window:
            raise ValueError(
                f"GradientGuard: expected min_history <= window={self.window}, got {min_history!r}"
            )
        self.norms: list[float] = []
        self.ignored = 0
        self.clipped = 0

    @property
    def spec(self) -> str:
        """The options, as one string (kept in the trainers' configuration)."""
        return (
            f"window={self.window},ignore={self.ignore_factor:g},"
            f"clip={self.clip_factor:g},min={self.min_history}"
        )

    def check(self, params: Sequence[Tensor], norm: float | None = None) -> bool:
        """Record the gradient norm of ``params``; clip in place; ``False``: skip the step.

        ``norm``: their total gradient norm if the caller has it already (computed
        here otherwise). A non-finite norm is a skip and is not recorded.
        """
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        if norm is None:
            norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        if not math.isfinite(norm):
            self.ignored += 1
            return False
        ok = True
        if len(self.norms) >= self.min_history:
            median = statistics.median_low(self.norms)
            if norm > self.ignore_factor * median:
                self.ignored += 1
                ok = False
            elif norm > self.clip_factor * median > 0.0:
                torch.nn.utils.clip_grad_norm_(params, self.clip_factor * median)
                self.clipped += 1
        self.norms = [*self.norms, norm][-self.window :]
        return ok

    def state_dict(self) -> dict[str, Any]:
        """The recorded norms and counters."""
        return {"norms": list(self.norms), "ignored": self.ignored, "clipped": self.clipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            ValueError: if a part is missing or not numbers.
        """
        try:
            norms = [float(v) for v in state["norms"]][-self.window :]
            ignored, clipped = int(state["ignored"]), int(state["clipped"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"GradientGuard: expected a state with 'norms', 'ignored' and 'clipped', "
                f"got {err!r}"
            ) from err
        self.norms, self.ignored, self.clipped = norms, ignored, clipped


def make_guard(guard: object, owner: str = "make_guard") -> GradientGuard | None:
    """``None``/``False``: no guard; ``True``: fab-jax's guard; or a :class:`GradientGuard`."""
    if guard is None or guard is False:
        return None
    if guard is True:
        return GradientGuard()
    if isinstance(guard, GradientGuard):
        return guard
    raise TypeError(
        f"{owner}: expected grad_guard to be a bool, None or a GradientGuard, "
        f"got {type(guard).__name__}"
    )


def apply_loss(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    clip_grad: float | None = None,
    guard: GradientGuard | None = None,
) -> bool:
    """Back-propagate ``loss`` and step ``optimizer``; ``False`` if the step was skipped.

    Skipped, never applied: a non-finite loss, a non-finite gradient, or a step
    the ``guard`` refuses. ``clip_grad`` caps the gradient norm first (the guard
    sees the capped norm).

    Example:
        >>> w = torch.nn.Parameter(torch.ones(1))
        >>> opt = torch.optim.SGD([w], lr=0.5)
        >>> apply_loss((w ** 2).sum(), opt), float(w)
        (True, 0.0)
        >>> apply_loss(w.sum() * float("nan"), opt)
        False
    """
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError(f"apply_loss: expected a scalar tensor loss, got {type(loss).__name__}")
    real = clip_grad is None or isinstance(clip_grad, numbers.Real)
    if isinstance(clip_grad, bool) or not real:
        raise TypeError(f"apply_loss: expected clip_grad None or a float, got {clip_grad!r}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not math.isfinite(float(loss.detach())):
        return False
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = None  # the total gradient norm after the cap, for the guard
    if clip_grad is not None:
        before = float(torch.nn.utils.clip_grad_norm_(params, float(clip_grad)))
        norm = min(before, float(clip_grad))
    ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
    if ok and guard is not None:
        ok = guard.check(params, norm)
    if ok:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return ok
