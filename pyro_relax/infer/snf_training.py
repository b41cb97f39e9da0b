"""Training loops for stochastic normalizing flows: reverse KL, forward KL, and their mix.

Example (the losses on an SNF whose only layer is the identity, towards ``N(0, I)``):
    >>> import torch, pyro.distributions.transforms as T
    >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob
    >>> identity = [T.AffineTransform(0.0, 1.0)]
    >>> snf = StochasticNormalizingFlow((2,), identity, standard_normal_log_prob)
    >>> abs(float(reverse_kl_loss(snf, 4))) < 1e-6  # q is the target: log w = log Z = 0
    True
    >>> round(float(forward_kl_loss(snf, torch.zeros(3, 2))), 4)  # -log N(0; 0, I_2)
    1.8379
"""

from __future__ import annotations

__all__ = ["SNFTrainer", "forward_kl_loss", "mixed_kl_loss", "reverse_kl_loss", "train_snf"]

import math
import os
from typing import Any

import torch
from torch import Tensor

from pyro_relax._progress import progress_bar
from pyro_relax.core.checks import check_int, check_real
from pyro_relax.stochastic.annealing import check_log_density_output
from pyro_relax.stochastic.snf import StochasticNormalizingFlow
from pyro_relax.train.checkpoint import (
    check_state_parts,
    config_differences,
    read_checkpoint,
    save_checkpoint,
    trainer_state,
)


def reverse_kl_loss(snf: StochasticNormalizingFlow, n: int) -> Tensor:
    """``-mean(log w)`` over ``n`` samples: ``KL(q_path || p_path) - log Z`` (reverse KL).

    See the module's example.
    """
    return -snf.sample_with_log_weights(n)[1].mean()


def forward_kl_loss(snf: StochasticNormalizingFlow, data: Tensor) -> Tensor:
    """``-mean(log_prob(data))`` through the backward path: maximum likelihood (a path-KL bound).

    See the module's example.
    """
    return -snf.log_prob(data).mean()


def mixed_kl_loss(
    snf: StochasticNormalizingFlow,
    n: int,
    data: Tensor | None,
    reverse_weight: float = 1.0,
    forward_weight: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``reverse_weight * reverse KL + forward_weight * forward KL`` and the two parts.

    Returns:
        ``(loss, parts)`` with ``parts`` holding ``reverse_kl`` and/or ``forward_kl``.
    """
    parts: dict[str, Tensor] = {}
    loss: Tensor | float = 0.0
    if reverse_weight:
        parts["reverse_kl"] = reverse_kl_loss(snf, n)
        loss = loss + reverse_weight * parts["reverse_kl"]
    if forward_weight:
        if data is None:
            raise ValueError("mixed_kl_loss: forward_weight > 0 needs data, got None")
        parts["forward_kl"] = forward_kl_loss(snf, data)
        loss = loss + forward_weight * parts["forward_kl"]
    if not parts:
        raise ValueError("mixed_kl_loss: expected a positive reverse_weight or forward_weight")
    assert isinstance(loss, Tensor)
    return loss, parts


def _check_count(value: object, name: str, minimum: int = 1) -> int:
    return check_int(value, name, "SNFTrainer", minimum)


def _check_weight(value: object, name: str) -> float:
    out = check_real(value, name, "SNFTrainer")
    if out < 0:
        raise ValueError(f"SNFTrainer: expected a finite {name} >= 0, got {value!r}")
    return out


class SNFTrainer:
    """Adam on a mix of reverse KL (samples) and forward KL (data), seeded and resumable.

    The loop draws ``batch_size`` flow samples for the reverse KL and, with
    ``forward_weight > 0``, a minibatch of ``data`` (with replacement) for the
    forward KL; the learning rate follows a cosine decay over ``steps``. With a
    ``checkpoint`` path, the model, optimizer, scheduler, RNG state, step,
    history and the trainer's configuration (:attr:`config`) are saved every
    ``checkpoint_every`` steps and at the end, and a new trainer given the same
    path resumes where the file left off: a resumed run reproduces the
    uninterrupted one (same seed, same device). The file is read with
    ``torch.load(weights_only=True)`` (no pickled code runs), and a configuration
    other than the saved one is refused with a ``ValueError`` listing the
    differences, unless ``override=True`` (then the given ``steps`` and ``lr``
    take over from the saved step: the cosine schedule is recomputed for them).

    Arguments:
        snf: the model.
        steps: total optimizer steps.
        batch_size: samples (and data points) per step.
        lr: initial learning rate.
        reverse_weight: weight of the reverse KL.
        forward_weight: weight of the forward KL (needs ``data``).
        data: target samples ``(n,) + event_shape`` for the forward KL.
        seed: torch seed for the flow's noise and the minibatches.
        clip_grad: clip the gradient norm to this value (``None``: no clipping).
        checkpoint: file path for checkpoints (``None``: none).
        checkpoint_every: steps between checkpoints.
        progress: show a tqdm progress bar.
        override: on resume, continue with the given configuration instead of
            refusing one that differs from the checkpoint's.

    Raises:
        ValueError: on a bad option, or a checkpoint that cannot be read, is not a
            trainer checkpoint, does not fit the model, or was saved with another
            configuration (every message names the file).

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob
        >>> snf = StochasticNormalizingFlow((2,), [T.affine_coupling(2, hidden_dims=[8])],
        ...                                 standard_normal_log_prob)
        >>> history = SNFTrainer(snf, steps=3, batch_size=8, progress=False).run()
        >>> len(history["loss"])
        3
    """

    def __init__(
        self,
        snf: StochasticNormalizingFlow,
        steps: int,
        batch_size: int = 256,
        lr: float = 1e-3,
        reverse_weight: float = 1.0,
        forward_weight: float = 0.0,
        data: Tensor | None = None,
        seed: int = 0,
        clip_grad: float | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 100,
        progress: bool = True,
        override: bool = False,
    ) -> None:
        if not isinstance(snf, StochasticNormalizingFlow):
            raise TypeError(
                f"SNFTrainer: expected a StochasticNormalizingFlow, got {type(snf).__name__}"
            )
        self.snf = snf
        self.steps = _check_count(steps, "steps")
        self.batch_size = _check_count(batch_size, "batch_size")
        self.checkpoint_every = _check_count(checkpoint_every, "checkpoint_every")
        self.reverse_weight = _check_weight(reverse_weight, "reverse_weight")
        self.forward_weight = _check_weight(forward_weight, "forward_weight")
        if _check_weight(lr, "lr") == 0:
            raise ValueError("SNFTrainer: expected lr > 0, got 0")
        if self.reverse_weight == 0 and self.forward_weight == 0:
            raise ValueError("SNFTrainer: expected a positive reverse_weight or forward_weight")
        if self.forward_weight and data is None:
            raise ValueError("SNFTrainer: forward_weight > 0 needs data, got None")
        if data is not None:
            snf.check_data(data)  # shape and finiteness, checked once
            if data.shape[0] < 1:
                raise ValueError("SNFTrainer: expected at least one data point, got none")
        if clip_grad is not None:
            clip_grad = _check_weight(clip_grad, "clip_grad")
        self.data = data
        self.seed = _check_count(seed, "seed", 0)
        self.clip_grad = clip_grad
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.progress = bool(progress)
        params = [p for p in snf.parameters() if p.requires_grad]
        if not params:
            raise ValueError("SNFTrainer: the flow has no trainable parameters")
        self._probe_target(params[0])
        if not isinstance(override, bool):
            raise TypeError(f"SNFTrainer: expected a bool override, got {type(override).__name__}")
        self.lr = float(lr)
        self.override = override
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, self.steps)
        self.step = 0
        self.history: dict[str, list[float]] = {"loss": []}
        self._rng: Tensor | None = None
        if self.checkpoint is not None and os.path.exists(self.checkpoint):
            state = read_checkpoint(self.checkpoint, "SNFTrainer")
            self.load_state_dict(state, source=self.checkpoint)

    def _probe_target(self, like: Tensor) -> None:
        """Check once that the target returns the batch shape (on two points at the origin)."""
        shape = (2,) + tuple(self.snf(None).event_shape)
        try:
            with torch.no_grad():
                lp = self.snf.target_log_prob(like.new_zeros(shape))
        except Exception:  # noqa: BLE001 - a target undefined at 0 is checked on real samples
            return
        check_log_density_output(lp, shape[:1], "SNFTrainer")

    @property
    def config(self) -> dict[str, Any]:
        """The options that shape the run, saved with each checkpoint and compared on resume."""
        return {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "reverse_weight": self.reverse_weight,
            "forward_weight": self.forward_weight,
            "seed": self.seed,
            "clip_grad": self.clip_grad,
            "data_shape": None if self.data is None else list(self.data.shape),
        }

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimizer, scheduler, RNG, step, history, config."""
        return trainer_state(
            self.config, self.snf, self.optimizer, self.scheduler, self.step, self.history
        )

    def load_state_dict(self, state: dict[str, Any], source: str = "the state dict") -> None:
        """Restore a :meth:`state_dict` (the RNG state is applied when :meth:`run` continues).

        Arguments:
            state: what :meth:`state_dict` returned (or a checkpoint file held).
            source: where ``state`` came from, for the messages.

        Raises:
            ValueError: if ``state`` lacks a part, does not fit the model or the
                optimizer, or was saved with another configuration (and
                ``override`` is false).
        """
        where = f"SNFTrainer: checkpoint {source!r}" if source != "the state dict" else (
            "SNFTrainer: the state dict"
        )
        if not isinstance(state, dict):
            raise TypeError(f"{where}: expected a dict, got {type(state).__name__}")
        parts = ("config", "model", "optimizer", "scheduler", "rng", "step", "history")
        check_state_parts(state, parts, where, "SNFTrainer")
        saved = state["config"]
        if isinstance(saved, dict):
            diffs = config_differences(saved, self.config)
        else:
            diffs = [f"config: saved {saved!r}, given {self.config}"]
        if diffs and not self.override:
            raise ValueError(
                f"{where} was saved with another configuration: {'; '.join(diffs)} "
                f"(pass the saved values, or override=True to continue with the given ones)"
            )
        step, history, rng = state["step"], state["history"], state["rng"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"{where}: expected a step >= 0, got {step!r}")
        if step > self.steps:
            raise ValueError(
                f"{where} is at step {step}, beyond steps={self.steps} (expected steps >= {step})"
            )
        if not isinstance(history, dict) or not isinstance(rng, Tensor):
            raise ValueError(f"{where}: expected a history dict and an RNG state tensor")
        try:
            self.snf.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"{where} does not fit this model or optimizer ({type(err).__name__}: {first}); "
                f"expected a checkpoint of the same architecture"
            ) from err
        if diffs:  # override: the given steps and lr take over from the saved step
            self._reschedule(step)
        self.step = step
        self.history = {k: list(v) for k, v in history.items()}
        self._rng = rng

    def _reschedule(self, step: int) -> None:
        """Point the cosine schedule at the given ``steps`` and ``lr`` from ``step`` on."""
        lr_now = 0.5 * self.lr * (1.0 + math.cos(math.pi * step / self.steps))
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.lr
            group["lr"] = lr_now
        state = self.scheduler.state_dict()  # through the scheduler's public state
        n = len(self.optimizer.param_groups)
        state.update(T_max=self.steps, base_lrs=[self.lr] * n, _last_lr=[lr_now] * n)
        self.scheduler.load_state_dict(state)

    def save(self) -> None:
        """Write the checkpoint file atomically (no-op without a ``checkpoint`` path)."""
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.state_dict(), "SNFTrainer")

    # -- the loop -------------------------------------------------------------
    def _minibatch(self) -> Tensor | None:
        if not self.forward_weight or self.data is None:
            return None
        idx = torch.randint(0, self.data.shape[0], (self.batch_size,), device=self.data.device)
        return self.data[idx]

    def run(self, until: int | None = None) -> dict[str, list[float]]:
        """Train up to step ``until`` (default: ``steps``); return the history.

        The history holds ``loss`` and each KL part (``reverse_kl``, ``forward_kl``)
        per step, including the steps of a resumed checkpoint.
        """
        stop = self.steps if until is None else _check_count(until, "until")
        if stop > self.steps:
            raise ValueError(f"SNFTrainer.run: expected until <= steps={self.steps}, got {until}")
        if self.step == 0:
            torch.manual_seed(self.seed)
        elif self._rng is not None:
            torch.set_rng_state(self._rng)
            self._rng = None
        self.snf.train()
        bar = progress_bar(
            total=self.steps, initial=self.step, disable=not self.progress, desc="snf", leave=False
        )
        try:
            while self.step < stop:
                batch = self._minibatch()
                loss, parts = mixed_kl_loss(
                    self.snf, self.batch_size, batch, self.reverse_weight, self.forward_weight
                )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(self.snf.parameters(), self.clip_grad)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                values = torch.stack(
                    [loss.detach(), *(p.detach() for p in parts.values())]
                ).tolist()
                if not all(math.isfinite(v) for v in values):
                    raise FloatingPointError(
                        f"SNFTrainer: the loss became NaN or inf at step {self.step}; "
                        f"lower the learning rate or the blocks' step sizes, or set clip_grad"
                    )
                for key, v in zip(["loss", *parts], values, strict=True):
                    self.history.setdefault(key, []).append(v)
                bar.update(1)
                bar.set_postfix(loss=f"{values[0]:.3f}", refresh=False)
                if self.step % self.checkpoint_every == 0 or self.step == stop:
                    self.save()
        finally:
            bar.close()
        return self.history


def train_snf(snf: StochasticNormalizingFlow, steps: int, **kwargs: Any) -> dict[str, list[float]]:  # noqa: ANN401
    """Shortcut for ``SNFTrainer(snf, steps, **kwargs).run()``.

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> from pyro_relax.stochastic.annealing import standard_normal_log_prob
        >>> snf = StochasticNormalizingFlow((2,), [T.affine_coupling(2, hidden_dims=[8])],
        ...                                 standard_normal_log_prob)
        >>> len(train_snf(snf, 2, batch_size=4, progress=False)["reverse_kl"])
        2
    """
    return SNFTrainer(snf, steps, **kwargs).run()
