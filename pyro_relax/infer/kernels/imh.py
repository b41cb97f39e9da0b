"""Independence Metropolis-Hastings with a trained guide as the proposal."""

from __future__ import annotations

__all__ = ["FlowIMH"]

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.infer.autoguide import AutoContinuous, init_to_uniform
from torch import Tensor

from pyro_relax.infer.kernels.base import ChainKernel, PotentialFn, unflatten_params
from pyro_relax.infer.kernels.proposal import (
    AutoContinuousProposal,
    Proposal,
    unconstrained_layout,
)
from pyro_relax.ops.metropolis import imh_log_accept_ratio, metropolis_accept


class FlowIMH(ChainKernel):
    r"""Independence Metropolis-Hastings whose proposal is a trained guide.

    Each step draws ``(z', log q')`` from the guide, computes the log weight
    ``log w' = -U(z') - log q'`` (``U`` the model's potential energy in the
    unconstrained space) and accepts with probability ``min(1, w' / w)``.
    The current state's ``log w`` is stored with it and never recomputed.

    That makes the chain exact also for stochastic guides (SNF, diffusion),
    whose ``log q'`` is the log density of the whole sampling path rather than
    of ``z'`` alone: on the extended space of paths ``u = (z_0, ..., z_K = z)``
    take the target ``pi(z) r(z_0, ..., z_{K-1} | z)`` (``r`` the backward
    kernels whose ratio to the forward ones the guide's path weight carries)
    and the proposal ``q(u)``. Their ratio is exactly ``w``, so IMH on paths
    leaves the extended target invariant and its ``z``-marginal is ``pi``;
    equivalently ``w`` is an unbiased estimate of ``pi(z) / q(z)``, the
    pseudo-marginal setting of Andrieu and Roberts (2009), where the estimate
    attached to the current state must be kept, not redrawn.

    Flat latents map to per-site values in the guide's own layout
    (:func:`~pyro_relax.infer.kernels.proposal.unconstrained_layout`) when the
    guide (or the guide wrapped by :class:`AutoContinuousProposal`) is a Pyro
    ``AutoContinuous`` (model order of sites, Pyro's default ``biject_to``
    transforms: leave ``transforms`` as ``None``); otherwise by
    the sorted site names of the initial parameters, each site flattened in
    row-major order (then ``initial_params`` are required).

    The chain starts at a guide draw with its exact pair ``(z, log q)``. If
    initial parameters are given, the chain starts there with ``log w = -inf``,
    so the first finite proposal is accepted and the start is forgotten.
    Proposals are drawn ``batch_size`` at a time and used one per step. The
    accept step is :func:`~pyro_relax.ops.metropolis.imh_log_accept_ratio` and
    :func:`~pyro_relax.ops.metropolis.metropolis_accept`.

    Arguments:
        guide: a proposal with ``sample_unconstrained(n) -> (z, log_q)`` and
            ``latent_dim`` (e.g. pyro-relax autoguides), or a set-up Pyro
            ``AutoContinuous`` guide (wrapped in :class:`AutoContinuousProposal`).
        model: a Pyro model (exactly one of ``model`` and ``potential_fn``).
        potential_fn: maps a dict of unconstrained values to the potential energy.
        transforms: site transforms to the unconstrained space (as in Pyro's HMC).
        batch_size: proposals drawn per guide call.
        max_plate_nesting: passed to ``initialize_model``.
        init_strategy: passed to ``initialize_model``.

    References:
        Andrieu and Roberts. The pseudo-marginal approach for efficient Monte
        Carlo computations. Annals of Statistics, 2009.
        Wu, Koehler and Noe. Stochastic Normalizing Flows. NeurIPS 2020.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoMultivariateNormal
        >>> pyro.clear_param_store()
        >>> def model():
        ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoMultivariateNormal(model, init_scale=1.0)
        >>> _ = guide()
        >>> mcmc = pyro.infer.MCMC(FlowIMH(guide, model), num_samples=20, warmup_steps=5,
        ...                        disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples()["x"].shape
        torch.Size([20, 2])
    """

    def __init__(
        self,
        guide: Proposal | AutoContinuous,
        model: Callable[..., Any] | None = None,
        potential_fn: PotentialFn | None = None,
        transforms: dict[str, Any] | None = None,
        batch_size: int = 256,
        max_plate_nesting: int | None = None,
        init_strategy: Callable[..., Any] = init_to_uniform,
    ) -> None:
        super().__init__(model, potential_fn, transforms, max_plate_nesting, init_strategy)
        if isinstance(guide, AutoContinuous) and not hasattr(guide, "sample_unconstrained"):
            guide = AutoContinuousProposal(guide)
        if not callable(getattr(guide, "sample_unconstrained", None)) or not hasattr(
            guide, "latent_dim"
        ):
            raise TypeError(
                "FlowIMH: expected a guide with sample_unconstrained(n) and latent_dim, got "
                f"{type(guide).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"FlowIMH: expected batch_size >= 1, got {batch_size!r}")
        self.guide = guide
        self.batch_size = batch_size

    def _reset(self) -> None:
        super()._reset()
        self._state: dict[str, Tensor] | None = None
        self._shapes: OrderedDict[str, torch.Size] = OrderedDict()
        self._log_w: Tensor | None = None
        self._buffer: tuple[Tensor, Tensor] | None = None
        self._pos = 0

    # ------------------------------------------------------------------ layout and proposals
    def _auto_continuous(self) -> AutoContinuous | None:
        if isinstance(self.guide, AutoContinuous):
            return self.guide
        if isinstance(self.guide, AutoContinuousProposal):
            return self.guide.guide
        return None

    def _unpack(self, z: Tensor) -> dict[str, Tensor]:
        """Flat unconstrained latent ``(D,)`` to the per-site dict of the potential."""
        return unflatten_params(z, self._shapes)

    def _check_layout(self, params: Mapping[str, Tensor] | None) -> None:
        dim = int(self.guide.latent_dim)
        auto = self._auto_continuous()
        if auto is not None:
            if auto.prototype_trace is None:
                raise ValueError("FlowIMH: expected a guide that has been run (trained), got none")
            self._shapes = unconstrained_layout(auto)
            names = set(self._shapes)
            if params is not None and set(params) != names:
                raise ValueError(
                    f"FlowIMH: expected the guide's sites {sorted(names)}, got {sorted(params)}"
                )
            return
        if params is None:
            raise ValueError(
                "FlowIMH: with a guide that is not an AutoContinuous, expected initial_params "
                "to fix the site layout (sorted names), got None"
            )
        self._shapes = OrderedDict((n, params[n].shape) for n in sorted(params))
        total = sum(math.prod(s) for s in self._shapes.values())
        if total != dim:
            raise ValueError(
                f"FlowIMH: expected a guide latent_dim equal to the model's {total}, got {dim}"
            )

    def _next_proposal(self) -> tuple[Tensor, Tensor]:
        if self._buffer is None or self._pos >= self.batch_size:
            z, log_q = self.guide.sample_unconstrained(self.batch_size)
            dim = int(self.guide.latent_dim)
            if not isinstance(z, Tensor) or z.shape != (self.batch_size, dim):
                raise ValueError(
                    f"FlowIMH: expected proposals of shape ({self.batch_size}, {dim}), got "
                    f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}"
                )
            if not isinstance(log_q, Tensor) or log_q.shape != (self.batch_size,):
                raise ValueError(
                    f"FlowIMH: expected log_q of shape ({self.batch_size},), got "
                    f"{tuple(log_q.shape) if isinstance(log_q, Tensor) else type(log_q).__name__}"
                )
            self._buffer = (z.detach(), log_q.detach())
            self._pos = 0
        z, log_q = self._buffer
        i = self._pos
        self._pos += 1
        return z[i], log_q[i]

    def _log_weight(self, params: dict[str, Tensor], log_q: Tensor) -> Tensor:
        assert self.potential_fn is not None
        with torch.no_grad():
            u = self.potential_fn(params)
        return torch.as_tensor(-u - log_q).reshape(())

    # ------------------------------------------------------------------ MCMCKernel API
    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Find the potential and transforms, check the layout and pick the start.

        Arguments:
            warmup_steps: number of warmup steps (no adaptation: they are burn-in).
            *args: model arguments.
            **kwargs: model keyword arguments.
        """
        from_model, user_params = self.setup_model(warmup_steps, args, kwargs)
        self._buffer = None
        self._check_layout(from_model if self.model is not None else user_params)
        if user_params is not None:
            self._state = {k: v.detach() for k, v in user_params.items()}
            ref = next(iter(self._state.values()))
            self._log_w = torch.full((), -math.inf, dtype=ref.dtype, device=ref.device)
        else:
            z, log_q = self._next_proposal()
            self._state = self._unpack(z)
            log_w = self._log_weight(self._state, log_q)
            self._log_w = torch.nan_to_num(log_w, nan=-math.inf)
        self._initial_params = dict(self._state)
        self.start_statistics(self._log_w)

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One independence MH step; returns the new unconstrained values.

        Arguments:
            params: the current values (the state and its log weight are cached).

        Returns:
            Dict of unconstrained values keyed by site name.
        """
        if self._state is None or self._log_w is None:
            raise ValueError("FlowIMH.sample: expected setup() to be called first")
        z, log_q = self._next_proposal()
        proposal = self._unpack(z)
        log_w_new = self._log_weight(proposal, log_q)
        mh = metropolis_accept(imh_log_accept_ratio(log_w_new, self._log_w))
        ok = mh.accepted
        self._state = {
            k: torch.where(ok, proposal[k].to(v.dtype), v) for k, v in self._state.items()
        }
        self._log_w = torch.where(ok, log_w_new, self._log_w)
        self.record_step(ok, mh.acceptance_probability)
        return dict(self._state)
