"""Metropolis-adjusted Langevin (MALA) as a kernel for ``pyro.infer.MCMC``."""

from __future__ import annotations

__all__ = ["MALA"]

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer.autoguide import init_to_uniform
from pyro.ops.integrator import potential_grad
from torch import Tensor

from pyro_relax.infer.kernels.adaptation import WindowedAdapter
from pyro_relax.infer.kernels.base import (
    ChainKernel,
    PotentialFn,
    check_kernel_float,
    flatten_params,
    unflatten_params,
)
from pyro_relax.ops.adaptation import find_reasonable_step_size
from pyro_relax.ops.langevin import LangevinState, langevin_proposal, mala_log_accept_ratio
from pyro_relax.ops.metropolis import metropolis_accept, select


class MALA(ChainKernel):
    r"""Metropolis-adjusted Langevin kernel in the unconstrained space of a Pyro model.

    One step proposes ``y = x - eps M^{-1} grad U(x) + sqrt(2 eps M^{-1}) xi``
    (``U`` the potential energy, ``M^{-1}`` a diagonal inverse mass matrix) and
    accepts it with the Metropolis-Hastings probability
    ``min(1, exp(U(x) - U(y)) q(x | y) / q(y | x))``. A proposal whose potential
    or gradient is NaN/inf is rejected. The math is the package's one Langevin
    move and Metropolis accept (:mod:`pyro_relax.ops.langevin`,
    :mod:`pyro_relax.ops.metropolis`, in the log density ``-U``); this class is
    the driver that :class:`pyro.infer.MCMC` calls, its bookkeeping in
    :class:`~pyro_relax.infer.kernels.base.ChainKernel`.

    During warmup the step size is tuned by dual averaging towards
    ``target_accept_prob`` (0.574 is optimal for MALA in high dimension) and the
    diagonal mass matrix is estimated in Stan's windows, both by
    :class:`~pyro_relax.infer.kernels.adaptation.WindowedAdapter` (over
    :mod:`pyro_relax.ops.adaptation`). Adaptation ends by
    itself after ``warmup_steps`` steps (or at :meth:`end_warmup`). Warmup steps
    read the adapted step size on the host once (the proposal takes a float);
    steps after warmup make no host synchronization.

    Sites are packed into one vector in the sorted order of their names (as
    Pyro's HMC orders its mass matrix).

    Arguments:
        model: a Pyro model with continuous latent sites (exactly one of
            ``model`` and ``potential_fn``).
        potential_fn: a callable mapping a dict of unconstrained values to the
            potential energy (then initial parameters must be given, through
            :class:`~pyro.infer.MCMC` or :attr:`initial_params`).
        step_size: initial step size ``eps > 0``.
        adapt_step_size: tune the step size during warmup.
        target_accept_prob: acceptance probability that the adaptation aims at.
        transforms: site transforms to the unconstrained space (as in Pyro's HMC).
        init_strategy: per-site initialization (a Pyro ``init_to_*`` function).
        adapt_mass_matrix: estimate a diagonal inverse mass matrix during warmup.
        max_plate_nesting: passed to ``initialize_model``.
        min_step_size: lower bound of the step-size search.
        max_step_size: upper bound of the step-size search.
        init_inverse_mass: an initial diagonal inverse mass matrix per site (unconstrained
            shapes), e.g. the variances of a Pathfinder fit; adaptation starts from it.

    References:
        Roberts and Tweedie. Exponential convergence of Langevin distributions
        and their discrete approximations. Bernoulli, 1996.
        Roberts and Rosenthal. Optimal scaling of discrete approximations to
        Langevin diffusions. JRSS B, 1998.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> kernel = MALA(lambda: pyro.sample("rate", dist.Gamma(2.0, 1.0)), step_size=0.5)
        >>> chain = pyro.infer.MCMC(kernel, num_samples=30, warmup_steps=10, disable_progbar=True)
        >>> chain.run()
        >>> rate = chain.get_samples()["rate"]
        >>> rate.shape, bool((rate > 0).all())
        (torch.Size([30]), True)
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        potential_fn: PotentialFn | None = None,
        step_size: float = 0.1,
        adapt_step_size: bool = True,
        target_accept_prob: float = 0.574,
        transforms: dict[str, Any] | None = None,
        init_strategy: Callable[..., Any] = init_to_uniform,
        *,
        adapt_mass_matrix: bool = True,
        max_plate_nesting: int | None = None,
        min_step_size: float = 1e-10,
        max_step_size: float = 1e10,
        init_inverse_mass: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__(model, potential_fn, transforms, max_plate_nesting, init_strategy)
        step_size = check_kernel_float("step_size", step_size, "MALA")
        target_accept_prob = check_kernel_float(
            "target_accept_prob", target_accept_prob, "MALA", "probability"
        )
        self._min_step = check_kernel_float("min_step_size", min_step_size, "MALA")
        self._max_step = check_kernel_float("max_step_size", max_step_size, "MALA")
        if not self._min_step <= step_size <= self._max_step:
            raise ValueError(
                f"MALA: expected min_step_size <= step_size <= max_step_size, got "
                f"{self._min_step!r} <= {step_size!r} <= {self._max_step!r}"
            )
        self.target_accept_prob = target_accept_prob
        self._adapter = WindowedAdapter(
            step_size,
            target_accept_prob,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            min_step_size=self._min_step,
            max_step_size=self._max_step,
        )
        if init_inverse_mass is not None:
            if not isinstance(init_inverse_mass, dict) or not all(
                isinstance(v, Tensor) and bool((v > 0).all()) and bool(torch.isfinite(v).all())
                for v in init_inverse_mass.values()
            ):
                raise ValueError(
                    "MALA: expected init_inverse_mass as a dict of site name -> positive finite "
                    f"tensor (a diagonal), got {type(init_inverse_mass).__name__}"
                )
        self._init_inverse_mass = init_inverse_mass

    def _reset(self) -> None:
        super()._reset()
        self._names: tuple[str, ...] = ()
        self._shapes: OrderedDict[str, torch.Size] = OrderedDict()
        self._state: LangevinState | None = None
        self.prototype_trace = None

    @property
    def step_size(self) -> float:
        """The current step size (adapted during warmup)."""
        return self._adapter.step_size

    @property
    def inverse_mass_matrix(self) -> Tensor:
        """Diagonal of the inverse mass matrix, in the sorted site order."""
        if not self._names:
            raise ValueError("MALA: expected setup() before reading inverse_mass_matrix")
        assert self._adapter.inverse_mass is not None
        return self._adapter.inverse_mass

    # ------------------------------------------------------------------ helpers
    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        return unflatten_params(flat, self._shapes)

    def _state_at(self, flat: Tensor) -> LangevinState:
        """The Langevin state at ``flat``: log density ``-U`` and its gradient."""
        assert self.potential_fn is not None
        z = {k: v.detach().clone() for k, v in self._unflatten(flat).items()}
        grads, u = potential_grad(self.potential_fn, z)
        return LangevinState(flat, -u.detach(), -flatten_params(grads, self._names).detach())

    def _move(self, state: LangevinState, eps: float, quiet: bool) -> tuple[LangevinState, Tensor]:
        """One Langevin proposal from ``state`` and its log acceptance ratio."""
        inv_mass = self.inverse_mass_matrix
        noise = torch.randn_like(state.position)
        y = langevin_proposal(state.position, state.grad, eps, noise, inv_mass)
        # Out-of-support values and NaNs are expected with large warmup steps.
        with pyro.validation_enabled(False) if quiet else contextlib.nullcontext():
            proposal = self._state_at(y)
        return proposal, mala_log_accept_ratio(state, proposal, eps, inv_mass)

    def _find_reasonable_step_size(self) -> float:
        assert self._state is not None
        start = self._state
        return find_reasonable_step_size(
            lambda eps: float(self._move(start, eps, quiet=True)[1]),
            self.step_size,
            math.log(self.target_accept_prob),
            self._min_step,
            self._max_step,
        )

    # ------------------------------------------------------------------ MCMCKernel API
    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Find the potential, transforms and initial point; configure the adaptation.

        Arguments:
            warmup_steps: number of warmup (adaptation) steps.
            *args: model arguments.
            **kwargs: model keyword arguments.
        """
        from_model, _ = self.setup_model(warmup_steps, args, kwargs)
        if from_model is not None:
            self._initial_params = from_model
        elif self._initial_params is None:
            raise ValueError(
                "MALA: with potential_fn, expected initial_params (pass "
                "MCMC(..., initial_params=...) or set kernel.initial_params), got None"
            )
        params = self._initial_params
        assert params is not None
        if not params:
            raise ValueError("MALA: expected at least one continuous latent site, got none")
        self._names = tuple(sorted(params))
        self._shapes = OrderedDict((n, params[n].shape) for n in self._names)
        z = flatten_params(params, self._names).detach()
        state = self._state_at(z)
        if not (math.isfinite(float(state.log_density)) and bool(torch.isfinite(state.grad).all())):
            raise ValueError(
                f"MALA: expected a finite potential and gradient at the initial point, "
                f"got U={-state.log_density}"
            )
        self._state = state
        self.start_statistics(z)
        inverse_mass = torch.ones_like(z)
        if self._init_inverse_mass is not None:  # e.g. Pathfinder's variances: a preconditioner
            missing = set(self._names) - set(self._init_inverse_mass)
            if missing:
                raise ValueError(f"MALA: init_inverse_mass lacks the sites {sorted(missing)}")
            inverse_mass = flatten_params(self._init_inverse_mass, self._names).to(z)
        self._adapter.configure(warmup_steps, inverse_mass, self._find_reasonable_step_size)

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One MALA step from the cached state; returns the new unconstrained values.

        Arguments:
            params: the current values (the state is cached; used only after a reset).

        Returns:
            Dict of unconstrained values keyed by site name.
        """
        if self._state is None:
            raise ValueError("MALA.sample: expected setup() to be called first")
        state, warmup = self._state, self.in_warmup
        proposal, log_r = self._move(state, self.step_size, quiet=warmup)
        mh = metropolis_accept(log_r)
        ok = mh.accepted
        self._state = LangevinState(
            select(ok, proposal.position, state.position, 1),
            torch.where(ok, proposal.log_density, state.log_density),
            select(ok, proposal.grad, state.grad, 1),
        )
        self.record_step(ok, mh.acceptance_probability)
        if warmup:
            self._adapter.update(self._t - 1, self._state.position, mh.acceptance_probability)
        return self._unflatten(self._state.position)

    def extra_statistics(self) -> dict[str, float]:
        """The current step size."""
        return {"step size": self.step_size}
