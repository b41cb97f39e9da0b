r"""FAB: flow annealed importance sampling bootstrap (Midgley et al., ICLR 2023).

FAB trains a flow ``q`` on the alpha = 2 divergence ``D_2(p || q) ~ int p^2 / q``,
whose gradient ``-E_{p^2/q}[grad log q]`` is estimated with annealed importance
sampling from ``q`` towards ``p^2 / q`` (its minimum-variance proposal); see
:mod:`pyro_relax.train.ais`. Two losses:

* without a buffer, each AIS batch gives ``-sum_i softmax(log w)_i log q(x_i)``;
* with the prioritized buffer (:class:`~pyro_relax.train.buffer.PrioritizedBuffer`),
  AIS batches are stored, and each step draws a batch in proportion to the stored
  weights and minimizes ``-mean(r_i log q(x_i))`` with
  ``r_i = min(q_old(x_i) / q(x_i), r_max)``, the correction for the change of
  ``q`` since the weights were last updated; the stored weights are then corrected
  by the same ratio.

The trained flow is evaluated by AIS towards ``p`` itself
(:meth:`FABTrainer.annealed_sampler`), which is a
:class:`~pyro_relax.stochastic.snf.StochasticNormalizingFlow` of the package,
so the ESS and ``log Z`` it reports are the unbiased ones.
"""

from __future__ import annotations

__all__ = ["FABTrainer", "fab_loss"]  # fab_loss: at home in pyro_relax.train.fab_losses

import math
import numbers
import os
from typing import Any

import torch
from torch import Tensor

from pyro_relax._progress import progress_bar
from pyro_relax.core.checks import check_int, check_real
from pyro_relax.distributions.flow import Flow
from pyro_relax.stochastic.pullback import annealed_hmc_levels
from pyro_relax.stochastic.snf import StochasticNormalizingFlow
from pyro_relax.train.ais import KERNELS, CountingDensity, LatentAIS, check_exact_flow
from pyro_relax.train.buffer import PrioritizedBuffer
from pyro_relax.train.checkpoint import (
    check_state_parts,
    config_differences,
    read_checkpoint,
    save_checkpoint,
)
from pyro_relax.train.fab_losses import buffer_loss, fab_loss, relative_ess
from pyro_relax.train.optim import GradientGuard, WarmupCosine, apply_loss, make_guard

_OWNER = "FABTrainer"
_ADDED_OPTIONS = {"warmup": 0, "grad_guard": None}  # what checkpoints saved before them mean
_ADDED_PARTS = {"guard", "log_step_sizes"}  # older checkpoints lack them


class FABTrainer:
    """Train an exact flow by FAB against an unnormalized log density; seeded and resumable.

    Each iteration runs ``batch_size`` AIS chains from the flow towards ``p^2/q``
    (``levels`` blocks of HMC or Metropolis in the flow's latent space, step
    sizes adapted towards ``target_accept``), then makes ``updates_per_ais``
    Adam steps on the buffer loss (or one step on the batch without a buffer).
    Chains whose target went NaN or inf are dropped and counted
    (``history["rejected"]``); a step whose loss is not finite is skipped and
    counted (:attr:`skipped_steps`), never applied. With a ``checkpoint`` path the
    flow, optimizer, step sizes, buffer, RNG state, counters, history and the
    configuration (:attr:`config`) are saved every ``checkpoint_every``
    iterations and at the end; a new trainer with the same path resumes exactly
    (same seed and device). The file is read with ``weights_only=True``; a
    different configuration is refused with a ``ValueError`` listing it.

    Arguments:
        flow: a :class:`~pyro_relax.distributions.Flow` (or an SNF) of exact bijections.
        target: the unnormalized target log density (a Target, module, distribution
            or callable mapping ``batch + (dim,)`` to ``batch``).
        steps: AIS iterations.
        batch_size: AIS chains per iteration (and buffer draws per update).
        levels: annealing blocks (``levels - 1`` intermediate distributions).
        kernel: ``"hmc"`` or ``"metropolis"``.
        n_leapfrog: leapfrog steps per HMC step.
        step_size: initial step size of the blocks.
        target_accept: acceptance rate the step sizes are adapted towards.
        buffer: use the prioritized replay buffer.
        buffer_size: buffer capacity (default ``100 * batch_size``).
        min_buffer_size: AIS samples gathered before the first step (default ``10 * batch_size``).
        updates_per_ais: optimizer steps per AIS batch with the buffer.
        max_weight_ratio: clip of the ``q_old / q`` correction in the buffer loss.
        clip_weights_frac: cap the largest AIS (and buffer) log weights at the
            ``1 - frac`` quantile. The default 0 does not clip, as FAB's reference code:
            clipping biases the fit towards the modes ``q`` holds (with 0.01 the flow's
            mass on many-well-8's shallow wells fell from 0.16 to 0.01 in 400 iterations).
        alpha: the divergence's alpha; only 2 is supported.
        lr: Adam's peak learning rate (cosine decay to 0 over the run).
        warmup: iterations of linear warm-up from ``lr / 10`` to ``lr`` (fab-jax: 10).
        clip_grad: fixed gradient-norm clip (``None``: none).
        grad_guard: fab-jax's guard (skip a step whose gradient norm is over 10 times the
            median of the last 100, clip at 2 times): ``"auto"`` uses it with the buffer only
            (without, it cost GMM-40 modes), ``True``, ``False``, or a
            :class:`~pyro_relax.train.optim.GradientGuard`; skips count in :attr:`skipped_steps`.
        seed: torch seed of the run.
        checkpoint: checkpoint file (``None``: none).
        checkpoint_every: iterations between checkpoints.
        progress: show a progress bar.

    Raises:
        ValueError: for a bad option (alpha other than 2, a negative buffer size, ...)
            or a checkpoint that cannot be read or was saved with another configuration.

    References:
        Midgley, Stimper, Simm, Schoelkopf and Hernandez-Lobato. Flow Annealed
        Importance Sampling Bootstrap. ICLR 2023 (arXiv 2208.01893).

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> flow = Flow((2,), [T.affine_coupling(2, hidden_dims=[8])])
        >>> target = lambda x: -0.5 * (x - 1.0).square().sum(-1)
        >>> trainer = FABTrainer(flow, target, steps=2, batch_size=16, progress=False)
        >>> len(trainer.run()["loss"])
        2
    """

    def __init__(
        self,
        flow: Flow,
        target: object,
        steps: int,
        batch_size: int = 128,
        levels: int = 2,
        kernel: str = "hmc",
        n_leapfrog: int = 5,
        step_size: float = 0.5,
        target_accept: float = 0.65,
        buffer: bool = True,
        buffer_size: int | None = None,
        min_buffer_size: int | None = None,
        updates_per_ais: int = 4,
        max_weight_ratio: float = 10.0,
        clip_weights_frac: float = 0.0,
        alpha: float = 2.0,
        lr: float = 3e-4,
        warmup: int = 0,
        clip_grad: float | None = 100.0,
        grad_guard: bool | str | GradientGuard | None = "auto",
        seed: int = 0,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 100,
        progress: bool = True,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or float(alpha) != 2.0:
            raise ValueError(
                f"FABTrainer: only alpha=2 is supported (the alpha-2 divergence, AIS towards "
                f"p^2/q, as in the FAB paper), got alpha={alpha!r}"
            )
        self.dim = check_exact_flow(flow, _OWNER)
        self.flow = flow
        self.target = CountingDensity(target)
        self.steps = check_int(steps, "steps", _OWNER, 1)
        self.batch_size = check_int(batch_size, "batch_size", _OWNER, 1)
        self.levels = check_int(levels, "levels", _OWNER, 1)
        if kernel not in KERNELS:
            raise ValueError(f"FABTrainer: expected kernel in {KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.n_leapfrog = check_int(n_leapfrog, "n_leapfrog", _OWNER, 1)
        self.step_size = check_real(step_size, "step_size", _OWNER, 0.0)
        self.target_accept = check_real(target_accept, "target_accept", _OWNER, 0.0, 1.0)
        if not isinstance(buffer, bool):
            raise TypeError(f"FABTrainer: expected a bool buffer, got {type(buffer).__name__}")
        self.use_buffer = buffer
        size = 100 * self.batch_size if buffer_size is None else buffer_size
        low = 10 * self.batch_size if min_buffer_size is None else min_buffer_size
        self.buffer_size = check_int(size, "buffer_size", _OWNER, self.batch_size)
        self.min_buffer_size = check_int(low, "min_buffer_size", _OWNER, self.batch_size)
        self.min_buffer_size = min(self.min_buffer_size, self.buffer_size)
        self.updates_per_ais = check_int(updates_per_ais, "updates_per_ais", _OWNER, 1)
        self.max_weight_ratio = check_real(max_weight_ratio, "max_weight_ratio", _OWNER, 0.0)
        if isinstance(clip_weights_frac, bool) or not isinstance(clip_weights_frac, numbers.Real):
            raise TypeError("FABTrainer: expected a float clip_weights_frac in [0, 1)")
        if not 0.0 <= float(clip_weights_frac) < 1.0:
            raise ValueError(
                f"FABTrainer: expected clip_weights_frac in [0, 1), got {clip_weights_frac!r}"
            )
        self.clip_weights_frac = float(clip_weights_frac)
        self.lr = check_real(lr, "lr", _OWNER, 0.0)
        self.warmup = check_int(warmup, "warmup", _OWNER, 0)
        if self.warmup >= self.steps:
            raise ValueError(f"FABTrainer: expected warmup < steps={steps}, got {warmup!r}")
        self.clip_grad = (
            None if clip_grad is None else check_real(clip_grad, "clip_grad", _OWNER, 0.0)
        )
        auto = isinstance(grad_guard, str) and grad_guard == "auto"
        self.guard = make_guard(self.use_buffer if auto else grad_guard, _OWNER)
        self.seed = check_int(seed, "seed", _OWNER, 0)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", _OWNER, 1)
        self.progress = bool(progress)
        params = [p for p in flow.parameters() if p.requires_grad]
        if not params:
            raise ValueError("FABTrainer: the flow has no trainable parameters")
        like = {"device": params[0].device, "dtype": params[0].dtype}
        self.ais = LatentAIS(
            list(flow.layers), self.target, self.dim, self.levels, kernel, n_leapfrog, step_size
        ).to(**like)
        self.buffer = PrioritizedBuffer(
            self.dim, self.buffer_size, self.min_buffer_size, like["device"], like["dtype"]
        )
        self.optimizer = torch.optim.Adam(params, lr=self.lr)
        per = self.updates_per_ais if buffer else 1
        schedule = WarmupCosine(self.steps * per, self.warmup * per, start=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.step = self.skipped_steps = 0
        self.history: dict[str, list[float]] = {"loss": [], "ess_ais": [], "rejected": []}
        self._rng: Tensor | None = None
        if self.checkpoint is not None and os.path.exists(self.checkpoint):
            state = read_checkpoint(self.checkpoint, _OWNER)
            self.load_state_dict(state, source=self.checkpoint)

    @property
    def target_evals(self) -> int:
        """Target log-density evaluations so far (points), AIS and buffer filling included."""
        return self.target.count

    @property
    def config(self) -> dict[str, Any]:
        """The options that shape the run, saved with each checkpoint and compared on resume."""
        keys = (
            "steps", "batch_size", "levels", "kernel", "n_leapfrog", "step_size",
            "target_accept", "use_buffer", "buffer_size", "min_buffer_size", "updates_per_ais",
            "max_weight_ratio", "clip_weights_frac", "lr", "warmup", "clip_grad", "seed",
        )  # fmt: skip
        guard = None if self.guard is None else self.guard.spec
        return {**{k: getattr(self, k) for k in keys}, "grad_guard": guard}

    # -- one iteration --------------------------------------------------------------
    def _ais_batch(self) -> tuple[Tensor, Tensor, Tensor, int]:
        self.flow.eval()
        x, log_w, log_q, infos = self.ais.run(self.batch_size)
        self.ais.adapt(self.target_accept, 0.1, infos)
        bad = torch.isnan(log_w)
        n_bad = int(bad.sum())
        keep = ~bad
        x, log_w, log_q = x[keep], log_w[keep], log_q[keep]
        k = int(self.clip_weights_frac * log_w.shape[0])
        if k >= 1:
            log_w = log_w.clamp(max=torch.topk(log_w, k + 1).values[-1])
        return x, log_w, log_q, n_bad

    def _apply(self, loss: Tensor) -> float:
        """One guarded optimizer step; return the loss (NaN if the step was skipped)."""
        ok = apply_loss(loss, self.optimizer, self.clip_grad, self.guard)
        self.skipped_steps += not ok
        self.scheduler.step()
        return float(loss.detach()) if ok else math.nan

    def _fill_buffer(self) -> None:
        rounds = 0
        while not self.buffer.ready:
            x, log_w, log_q, _ = self._ais_batch()
            self.buffer.add(x, log_w, log_q)
            rounds += 1
            if rounds > 100 * max(1, self.min_buffer_size // self.batch_size):
                raise ValueError(
                    f"FABTrainer: could not fill the buffer to {self.min_buffer_size} finite "
                    f"AIS samples (holds {len(self.buffer)}); the target is NaN or inf almost "
                    f"everywhere the flow samples"
                )

    def _buffer_update(self) -> float:
        n = min(self.batch_size, self.buffer.count_positive())  # w/sum w may underflow
        x, _, log_q_old, idx = self.buffer.sample(n)
        self.flow.train()
        log_q = self.flow.log_prob(x)
        value = self._apply(buffer_loss(log_q, log_q_old, self.max_weight_ratio))
        self.buffer.adjust(idx, log_q.detach())
        self.buffer.clip_top(self.clip_weights_frac)
        return value

    def _iteration(self) -> None:
        x, log_w, log_q, n_bad = self._ais_batch()
        ess = relative_ess(log_w, self.batch_size)
        if self.use_buffer:
            self.buffer.add(x, log_w, log_q)
            values = [self._buffer_update() for _ in range(self.updates_per_ais)]
            finite = [v for v in values if math.isfinite(v)]
            loss = sum(finite) / len(finite) if finite else math.nan
        else:  # one step on the batch
            self.flow.train()
            ok = x.shape[0] > 0 and bool(torch.isfinite(log_w).any())
            nan = log_w.new_tensor(math.nan)  # no finite weight: a NaN loss, a skipped step
            loss = self._apply(fab_loss(self.flow.log_prob(x), log_w) if ok else nan)
        self.history["loss"].append(loss)
        self.history["ess_ais"].append(ess)
        self.history["rejected"].append(float(n_bad))

    def run(self, until: int | None = None) -> dict[str, list[float]]:
        """Train up to iteration ``until`` (default: ``steps``); return the history.

        The history holds per iteration ``loss`` (NaN when the step was skipped),
        ``ess_ais`` (the relative ESS of the AIS batch towards ``p^2/q``) and
        ``rejected`` (AIS chains dropped for a non-finite target).
        """
        stop = self.steps if until is None else check_int(until, "until", _OWNER, 1)
        if stop > self.steps:
            raise ValueError(f"FABTrainer.run: expected until <= steps={self.steps}, got {until}")
        if self.step == 0 and self._rng is None:
            torch.manual_seed(self.seed)
        elif self._rng is not None:
            torch.set_rng_state(self._rng)
            self._rng = None
        if self.use_buffer:
            self._fill_buffer()
        bar = progress_bar(
            total=self.steps, initial=self.step, disable=not self.progress, desc="fab", leave=False
        )
        try:
            while self.step < stop:
                self._iteration()
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{self.history['loss'][-1]:.3f}", refresh=False)
                if self.step % self.checkpoint_every == 0 or self.step == stop:
                    self.save()
        finally:
            bar.close()
        return self.history

    # -- evaluation -------------------------------------------------------------------
    def annealed_sampler(
        self, levels: int | None = None, n_leapfrog: int | None = None, step_size: float = 0.3
    ) -> StochasticNormalizingFlow:
        """The flow with annealed HMC blocks towards ``p`` in its latent space (an SNF).

        Its :meth:`~pyro_relax.stochastic.snf.StochasticNormalizingFlow.sample_with_log_weights`
        gives unbiased weights for ``p``; tune its step sizes with
        :func:`~pyro_relax.stochastic.pullback.tune_step_sizes` first. The target
        it holds counts its evaluations into :attr:`target_evals`.
        """
        levels = self.levels if levels is None else check_int(levels, "levels", _OWNER, 1)
        leap = n_leapfrog if n_leapfrog is not None else self.n_leapfrog
        leap = check_int(leap, "n_leapfrog", _OWNER, 1)
        pulled = self.ais.pulled
        blocks = annealed_hmc_levels(pulled, levels, leap, step_size)
        snf = StochasticNormalizingFlow((self.dim,), [*blocks, *self.flow.layers], self.target)
        return snf.to(self.ais.blocks[0].log_step_size.device)

    # -- state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors, ints, floats, dicts, lists)."""
        return {
            "config": self.config,
            "model": self.flow.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "log_step_sizes": self.ais.step_sizes(log=True).cpu(),
            "buffer": self.buffer.state_dict(),
            "rng": torch.get_rng_state(),
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "target_evals": self.target.count,
            "history": self.history,
            "guard": None if self.guard is None else self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "the state dict") -> None:
        """Restore a :meth:`state_dict`; the RNG state applies when :meth:`run` continues.

        Raises:
            ValueError: if a part is missing, does not fit, or the configuration differs.
        """
        where = f"FABTrainer: checkpoint {source!r}"
        check_state_parts(state, set(self.state_dict()) - _ADDED_PARTS, where, _OWNER)
        saved = state["config"]
        if not isinstance(saved, dict):
            raise ValueError(f"{where}: expected a config dict, got {type(saved).__name__}")
        diffs = config_differences({**_ADDED_OPTIONS, **saved}, self.config)
        if diffs:
            raise ValueError(
                f"{where} was saved with another configuration: {'; '.join(diffs)} "
                f"(pass the saved values, or move the file away to start afresh)"
            )
        try:
            self.flow.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            old = "log_step_sizes" not in state  # saved before the logs were
            self.ais.set_step_sizes(state["step_sizes" if old else "log_step_sizes"], log=not old)
            self.buffer.load_state_dict(state["buffer"])
            if self.guard is not None:  # the configs agree, so the file has its state
                self.guard.load_state_dict(state["guard"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{where} does not fit this flow ({first})") from err
        self.step = int(state["step"])
        self.skipped_steps = int(state["skipped_steps"])
        self.target.count = int(state["target_evals"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self._rng = state["rng"]

    def save(self) -> None:
        """Write the checkpoint atomically (no-op without a ``checkpoint`` path)."""
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.state_dict(), _OWNER)
