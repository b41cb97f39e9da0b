"""Metropolis-adjusted Langevin (MALA) as a kernel for ``pyro.infer.MCMC``."""

from __future__ import annotations

__all__ = ["MALA"]

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro.infer.autoguide import init_to_uniform
from pyro.infer.mcmc.adaptation import WarmupAdapter
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad
from torch import Tensor

from pyro_relax.infer.kernels.adaptation import (
    check_initial_params,
    check_positive,
    check_probability,
    find_reasonable_step_size,
)
from pyro_relax.infer.kernels.ops import (
    acceptance_probability,
    flatten_params,
    mala_log_accept_ratio,
    mala_propose,
    metropolis_accept,
    unflatten_params,
)

PotentialFn = Callable[[dict[str, Tensor]], Tensor]


class MALA(MCMCKernel):
    r"""Metropolis-adjusted Langevin kernel in the unconstrained space of a Pyro model.

    One step proposes ``y = x - eps M^{-1} grad U(x) + sqrt(2 eps M^{-1}) xi``
    (``U`` the potential energy, ``M^{-1}`` a diagonal inverse mass matrix) and
    accepts it with the Metropolis-Hastings probability
    ``min(1, exp(U(x) - U(y)) q(x | y) / q(y | x))``. A proposal whose potential
    or gradient is NaN/inf is rejected. The math lives in
    :mod:`pyro_relax.infer.kernels.ops`; this class is the driver that
    :class:`pyro.infer.MCMC` calls (``setup``, ``sample``, ``logging``,
    ``diagnostics``, ``cleanup``).

    During warmup the step size is tuned by dual averaging towards
    ``target_accept_prob`` (0.574 is optimal for MALA in high dimension) and the
    diagonal mass matrix is estimated in Stan's windows, both by Pyro's
    :class:`~pyro.infer.mcmc.adaptation.WarmupAdapter`. Adaptation ends by
    itself after ``warmup_steps`` steps (or at :meth:`end_warmup`). Warmup steps
    read the acceptance probability on the host (the dual averaging is in
    Python floats); steps after warmup make no host synchronization.

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
        >>> def model():
        ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> mcmc = pyro.infer.MCMC(MALA(model), num_samples=20, warmup_steps=20,
        ...                        disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples()["x"].shape
        torch.Size([20, 2])
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
        if (model is None) == (potential_fn is None):
            raise ValueError(
                "MALA: expected exactly one of `model` and `potential_fn`, got "
                + ("neither" if model is None else "both")
            )
        for name, fn in (("model", model), ("potential_fn", potential_fn), ("init", init_strategy)):
            if fn is not None and not callable(fn):
                raise TypeError(f"MALA: expected {name} to be callable, got {type(fn).__name__}")
        step_size = check_positive("step_size", step_size, "MALA")
        target_accept_prob = check_probability("target_accept_prob", target_accept_prob, "MALA")
        self._min_step = check_positive("min_step_size", min_step_size, "MALA")
        self._max_step = check_positive("max_step_size", max_step_size, "MALA")
        if not self._min_step <= step_size <= self._max_step:
            raise ValueError(
                f"MALA: expected min_step_size <= step_size <= max_step_size, got "
                f"{self._min_step!r} <= {step_size!r} <= {self._max_step!r}"
            )
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = transforms
        self._max_plate_nesting = max_plate_nesting
        self._init_strategy = init_strategy
        self.target_accept_prob = target_accept_prob
        self._adapter = WarmupAdapter(
            step_size,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            target_accept_prob=target_accept_prob,
            dense_mass=False,
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
        self._initial_params: dict[str, Tensor] | None = None
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._t = 0
        self._warmup_steps = 0
        self._names: tuple[str, ...] = ()
        self._shapes: OrderedDict[str, torch.Size] = OrderedDict()
        self._z: Tensor | None = None
        self._u: Tensor | None = None
        self._grad: Tensor | None = None
        self._accept_count: Tensor | None = None
        self._mean_accept_prob: Tensor | None = None
        self._initial_params = None
        self.prototype_trace = None

    @property
    def initial_params(self) -> dict[str, Tensor] | None:
        """Unconstrained starting values, keyed by site name."""
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: Mapping[str, Tensor] | None) -> None:
        self._initial_params = check_initial_params(params, "MALA")

    @property
    def step_size(self) -> float:
        """The current step size (adapted during warmup)."""
        return self._adapter.step_size

    @property
    def inverse_mass_matrix(self) -> Tensor:
        """Diagonal of the inverse mass matrix, in the sorted site order."""
        if not self._names:
            raise ValueError("MALA: expected setup() before reading inverse_mass_matrix")
        return self._adapter.mass_matrix_adapter.inverse_mass_matrix[self._names]

    # ------------------------------------------------------------------ helpers
    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        return unflatten_params(flat, self._shapes)

    def _potential_and_grad(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        assert self.potential_fn is not None
        z = {k: v.detach().clone() for k, v in self._unflatten(flat).items()}
        grads, u = potential_grad(self.potential_fn, z)
        return u.detach(), flatten_params(grads, self._names).detach()

    def _trial_log_ratio(self, flat: Tensor, eps: float) -> float:
        """One MALA trial from ``flat`` with step ``eps`` (used by the step-size search)."""
        u, g = self._potential_and_grad(flat)
        inv_mass = self.inverse_mass_matrix
        y = mala_propose(flat, g, eps, inv_mass, torch.randn_like(flat))
        with pyro.validation_enabled(False):
            u_y, g_y = self._potential_and_grad(y)
        return float(mala_log_accept_ratio(flat, y, u, u_y, g, g_y, eps, inv_mass))

    def _find_reasonable_step_size(self, params: Mapping[str, Tensor]) -> float:
        flat = flatten_params(params, self._names).detach()
        return find_reasonable_step_size(
            lambda eps: self._trial_log_ratio(flat, eps),
            self.step_size,
            math.log(self.target_accept_prob),
            self._min_step,
            self._max_step,
        )

    # ------------------------------------------------------------------ MCMCKernel API
    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        """Find the potential, transforms and initial point; configure the adaptation.

        Arguments:
            warmup_steps: number of warmup (adaptation) steps.
            *args: model arguments.
            **kwargs: model keyword arguments.
        """
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"MALA.setup: expected warmup_steps >= 0, got {warmup_steps!r}")
        self._warmup_steps = warmup_steps
        self._t = 0
        if self.model is not None:
            params, potential_fn, transforms, trace = initialize_model(
                self.model,
                args,
                kwargs,
                transforms=self.transforms,
                max_plate_nesting=self._max_plate_nesting,
                init_strategy=self._init_strategy,
                initial_params=self._initial_params,
            )
            self.potential_fn = potential_fn
            self.transforms = transforms
            self.prototype_trace = trace
            self._initial_params = params
        elif self._initial_params is None:
            raise ValueError(
                "MALA: with potential_fn, expected initial_params (pass "
                "MCMC(..., initial_params=...) or set kernel.initial_params), got None"
            )
        elif self.transforms is None:
            self.transforms = {}
        params = self._initial_params
        assert params is not None
        if not params:
            raise ValueError("MALA: expected at least one continuous latent site, got none")
        self._names = tuple(sorted(params))
        self._shapes = OrderedDict((n, params[n].shape) for n in self._names)
        z = flatten_params(params, self._names).detach()
        u, grad = self._potential_and_grad(z)
        if not (math.isfinite(float(u)) and bool(torch.isfinite(grad).all())):
            raise ValueError(
                f"MALA: expected a finite potential and gradient at the initial point, got U={u}"
            )
        self._z, self._u, self._grad = z, u, grad
        self._accept_count = torch.zeros((), dtype=torch.long, device=z.device)
        self._mean_accept_prob = torch.zeros((), dtype=z.dtype, device=z.device)
        self._adapter.configure(
            warmup_steps,
            mass_matrix_shape={self._names: (z.shape[-1],)},
            find_reasonable_step_size_fn=self._find_reasonable_step_size,
            options={"dtype": z.dtype, "device": z.device},
        )
        if self._init_inverse_mass is not None:  # e.g. Pathfinder's variances: a preconditioner
            missing = set(self._names) - set(self._init_inverse_mass)
            if missing:
                raise ValueError(f"MALA: init_inverse_mass lacks the sites {sorted(missing)}")
            diag = flatten_params(self._init_inverse_mass, self._names).to(z)
            self._adapter.mass_matrix_adapter.inverse_mass_matrix = {self._names: diag}
        if self._adapter.adapt_step_size:
            self._adapter.reset_step_size_adaptation(self._unflatten(z))

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One MALA step from the cached state; returns the new unconstrained values.

        Arguments:
            params: the current values (the state is cached; used only after a reset).

        Returns:
            Dict of unconstrained values keyed by site name.
        """
        if self._z is None:
            raise ValueError("MALA.sample: expected setup() to be called first")
        z, u, grad = self._z, self._u, self._grad
        assert u is not None and grad is not None
        eps = self.step_size
        inv_mass = self.inverse_mass_matrix
        warmup = self._t < self._warmup_steps
        y = mala_propose(z, grad, eps, inv_mass, torch.randn_like(z))
        # Out-of-support values and NaNs are expected with large warmup steps.
        with pyro.validation_enabled(False) if warmup else contextlib.nullcontext():
            u_y, grad_y = self._potential_and_grad(y)
        log_r = mala_log_accept_ratio(z, y, u, u_y, grad, grad_y, eps, inv_mass)
        accept = metropolis_accept(log_r, torch.rand_like(log_r))
        self._z = torch.where(accept, y, z)
        self._u = torch.where(accept, u_y, u)
        self._grad = torch.where(accept, grad_y, grad)
        accept_prob = acceptance_probability(log_r)
        self._t += 1
        params_new = self._unflatten(self._z)
        if warmup:
            n = self._t
            grads_new = self._unflatten(self._grad)
            self._adapter.step(self._t - 1, params_new, accept_prob, grads_new)
        else:
            n = self._t - self._warmup_steps
            assert self._accept_count is not None
            self._accept_count = self._accept_count + accept.long()
        assert self._mean_accept_prob is not None
        self._mean_accept_prob = self._mean_accept_prob + (accept_prob - self._mean_accept_prob) / n
        return params_new

    def end_warmup(self) -> None:
        """Stop adapting now; the current step size and mass matrix are kept from here on."""
        if self._t < self._warmup_steps:
            self._warmup_steps = self._t

    def cleanup(self) -> None:
        """Forget the chain state (the next ``setup`` starts a new chain)."""
        self._reset()

    def logging(self) -> OrderedDict[str, str]:
        """Step size and mean acceptance probability, for the progress bar."""
        acc = float(self._mean_accept_prob) if self._mean_accept_prob is not None else 0.0
        return OrderedDict([("step size", f"{self.step_size:.2e}"), ("acc. prob", f"{acc:.3f}")])

    def diagnostics(self) -> dict[str, float]:
        """Acceptance rate over the sampling phase, final step size, mean acceptance probability."""
        n = self._t - self._warmup_steps
        count = float(self._accept_count) if self._accept_count is not None else 0.0
        acc = float(self._mean_accept_prob) if self._mean_accept_prob is not None else 0.0
        return {
            "acceptance rate": count / n if n > 0 else math.nan,
            "mean accept prob": acc,
            "step size": self.step_size,
        }
