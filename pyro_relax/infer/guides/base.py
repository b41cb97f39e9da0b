r"""Shared machinery of the relaxed autoguides: path-weight guides inside Pyro's ``Trace_ELBO``.

Every guide here is a Pyro :class:`~pyro.infer.autoguide.AutoContinuous`: the
latent sites of the model are mapped to one unconstrained vector ``z`` of size
``latent_dim`` with ``biject_to(site.support)``, and the guide is a
distribution over ``z``. What is new is how that distribution is sampled.

**Why no custom ELBO is needed.** A stochastic guide (a flow with
surjections, an SNF with Langevin/MCMC blocks, a controlled diffusion)
has no tractable density ``q(z)``; it has a *path* ``(z_0, ..., z_K = z)``
and a path estimate

.. math::
    \log \hat q(z) = \log q_{\mathrm{fwd}}(\text{path}) - \log b(\text{path}_{<K} \mid z)

(the forward path density over a normalized backward kernel ``b``). In
:meth:`RelaxedGuideMixin.get_posterior` the guide draws the path itself and
returns ``pyro.distributions.Delta(z, log_density=log q_hat, event_dim=1)``.
``AutoContinuous`` samples this Delta as its auxiliary latent site, so
``Trace_ELBO`` scores the guide with ``log q_hat`` and its estimate becomes

.. math::
    \mathbb{E}[\log w] = \mathbb{E}[\log p(x, z) - \log \hat q(z)] \le \log p(x),

the auxiliary-variable bound: ``w = p(x, z) b(\text{path} | z) / q_{fwd}(\text{path})``
is an importance weight on path space, ``E[w] = p(x)`` (integrate the backward
kernel out), and Jensen gives the inequality. For an exact bijective flow
``log q_hat = log q`` and this is the usual ELBO. Gradients flow through the
reparametrized sample ``z`` and through ``log_density``. Pyro's
``Trace_ELBO`` is used unchanged; vectorized particles work because the
guide draws one path per element of the enclosing plates.

**The model's density in unconstrained space.**
:meth:`RelaxedGuideMixin.log_joint_unconstrained` returns
``log p(x, T(z)) + log|det dT/dz|`` (minus the potential energy), with ``T``
the sites' ``biject_to`` transforms. It runs the (unwrapped) model under
``poutine.condition`` with the constrained values, blocked from any outer
trace, and sums the sites' ``log_prob`` (with their scales and masks, as
``Trace_ELBO`` does). It is vectorized: the rows of ``z`` run in one pass
inside a ``pyro.plate`` left of the model's plates. On the first call the
vectorized result is compared with a one-row run of the model; if the model
cannot be vectorized (it raises, or the results disagree) the method falls
back to a loop over the rows for good and warns once.
"""

from __future__ import annotations

__all__ = ["RelaxedGuideMixin", "check_num_samples"]

import math
import numbers
import warnings
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.poutine.runtime import get_plates
from torch import Tensor

from pyro_relax.diagnostics.psis import importance_ess, khat_verdict, psis_khat
from pyro_relax.stochastic.snf import log_Z_from_log_weights
from pyro_relax.surjections.base import check_event_shape, check_finite

_PARTICLE_PLATE = "_pyro_relax_log_joint_particles"
_QUANTILE_SAMPLES = 1000


def check_num_samples(n: object, name: str, minimum: int = 1) -> int:
    """Return ``n`` as an int, or raise ``TypeError`` (not an int) / ``ValueError`` (too small).

    Example:
        >>> check_num_samples(5, "f")
        5
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name}: expected an int num_samples, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{name}: expected num_samples >= {minimum}, got {n}")
    return int(n)


def check_model(model: object, owner: str) -> None:
    """Raise ``TypeError`` unless ``model`` is callable."""
    if not callable(model):
        raise TypeError(f"{owner}: expected a callable Pyro model, got {type(model).__name__}")


def check_init_scale(init_scale: object, owner: str) -> float:
    """Return ``init_scale`` as a positive finite float or raise ``ValueError``."""
    if isinstance(init_scale, bool) or not isinstance(init_scale, numbers.Real):
        raise TypeError(f"{owner}: expected a float init_scale, got {type(init_scale).__name__}")
    value = float(init_scale)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{owner}: expected init_scale > 0 (finite), got {init_scale!r}")
    return value


def _plate_batch_shape() -> torch.Size:
    """The batch shape the enclosing vectorized plates ask of a sample (as Pyro broadcasts)."""
    shape: list[int] = []
    for frame in get_plates():
        if not frame.vectorized or frame.dim is None:
            continue
        if len(shape) < -frame.dim:
            shape = [1] * (-frame.dim - len(shape)) + shape
        shape[frame.dim] = frame.size
    return torch.Size(shape)


def _per_particle(t: Tensor | float, p: int, m: int, like: Tensor) -> Tensor:
    """Sum a site's log-prob tensor (batch dims only, particle dim at ``-p``) to shape ``(m,)``."""
    if not isinstance(t, Tensor):
        return like.new_full((m,), float(t))
    if t.dim() < p:
        t = t.reshape((1,) * (p - t.dim()) + t.shape)
    t = t.reshape(t.shape[: t.dim() - p + 1] + (-1,)).sum(-1)
    return t.expand(m)


class RelaxedGuideMixin:
    """The common API of the relaxed autoguides (mixed into ``AutoContinuous``).

    A subclass lists this mixin before ``AutoContinuous`` and implements

    * ``_build(init_loc)``: create the guide's modules once ``latent_dim`` is
      known (``init_loc`` is the unconstrained initial point, on the model's
      device and dtype);
    * ``_draw(sample_shape) -> (z, log_q)``: a reparametrized draw of
      ``sample_shape + (latent_dim,)`` unconstrained latents and their path
      log-density estimates (``sample_shape``); it may read the model's
      arguments from ``self._model_args``.

    It provides :meth:`get_posterior` (the Delta trick of the module
    docstring), :meth:`sample_unconstrained`, :meth:`log_joint_unconstrained`,
    :meth:`importance_weights`, :meth:`importance_diagnostics` and
    sample-based :meth:`median` / :meth:`quantiles`.
    """

    latent_dim: int
    prototype_trace: Any
    _unpack_latent: Callable[[Tensor], Any]
    _init_loc: Callable[[], Tensor]

    def _init_relaxed(self, model: Callable[..., Any]) -> None:
        self._raw_model = (model,)  # a tuple: never registered as a submodule
        self._model_args: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})
        self._max_plate_nesting = 0
        self._vectorize: bool | None = None

    # -- hooks ----------------------------------------------------------------
    @abstractmethod
    def _build(self, init_loc: Tensor) -> None:
        """Create the guide's modules for ``latent_dim = init_loc.shape[-1]``."""

    @abstractmethod
    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """Draw ``(z, log_q)`` of shapes ``sample_shape + (latent_dim,)`` and ``sample_shape``."""

    # -- Pyro plumbing -------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)  # type: ignore[misc]
        self._model_args = (args, kwargs)
        full = poutine.block(poutine.trace(self._raw_model[0]).get_trace)(*args, **kwargs)
        nesting = 0
        for site in full.nodes.values():
            if site["type"] != "sample":
                continue
            nesting = max(nesting, len(getattr(site["fn"], "batch_shape", ())))
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    nesting = max(nesting, -frame.dim)
        self._max_plate_nesting = nesting
        self._vectorize = None
        self._build(self._init_loc())

    def _ensure_setup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)

    def _args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        return (args, kwargs) if args or kwargs else self._model_args

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.Delta:
        """Draw a path sample and return it as a Delta carrying its log-density estimate.

        The sample has one draw per element of the enclosing vectorized plates
        (e.g. ``Trace_ELBO(vectorize_particles=True)`` or a parallel
        ``Predictive``), so particles are independent.
        """
        self._model_args = (args, kwargs)
        z, log_q = self._draw(_plate_batch_shape())
        return dist.Delta(z, log_density=log_q, event_dim=1)

    # -- the common API --------------------------------------------------------
    def sample_unconstrained(
        self, num_samples: int, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Draw unconstrained latents and their path log-density estimates (no gradients).

        Arguments:
            num_samples: number of draws ``n >= 1``.
            *args: the model's arguments (needed only if the guide never ran).
            **kwargs: the model's keyword arguments (same).

        Returns:
            ``(z, log_q)`` of shapes ``(n, latent_dim)`` and ``(n,)``.
        """
        n = check_num_samples(num_samples, f"{type(self).__name__}.sample_unconstrained")
        self._ensure_setup(args, kwargs)
        if args or kwargs:
            self._model_args = (args, kwargs)
        with torch.no_grad():
            z, log_q = self._draw(torch.Size([n]))
        return z.detach(), log_q.detach()

    def log_joint_unconstrained(self, z: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """``log p(x, T(z)) + log|det dT/dz|``: minus the potential energy at ``z``.

        Differentiable in ``z``. Vectorized over any batch shape (see the
        module docstring for the fallback loop).

        Arguments:
            z: unconstrained latents, shape ``batch_shape + (latent_dim,)``.
            *args: the model's arguments; by default those of the last guide call.
            **kwargs: the model's keyword arguments (same default).

        Returns:
            A tensor of shape ``batch_shape``.
        """
        name = f"{type(self).__name__}.log_joint_unconstrained"
        self._ensure_setup(args, kwargs)
        check_event_shape(z, (self.latent_dim,), name)
        check_finite(z, name)
        return self._log_joint(z, *self._args(args, kwargs))

    def _log_joint(self, z: Tensor, args: tuple, kwargs: dict) -> Tensor:
        batch = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim)
        if flat.shape[0] == 0:
            return z.new_zeros(batch)
        if self._vectorize is not False:
            try:
                out = self._log_joint_vectorized(flat, args, kwargs)
            except Exception as err:  # the model cannot take a particle plate
                self._fall_back(f"it raised {type(err).__name__}: {err}")
            else:
                if self._vectorize is None:
                    with torch.no_grad():
                        ref = self._log_joint_loop(flat[:1].detach(), args, kwargs)
                    if torch.allclose(out[:1].detach(), ref, rtol=1e-4, atol=1e-4):
                        self._vectorize = True
                    else:
                        self._fall_back("its result differs from a one-row run")
                if self._vectorize:
                    return out.reshape(batch)
        return self._log_joint_loop(flat, args, kwargs).reshape(batch)

    def _fall_back(self, why: str) -> None:
        self._vectorize = False
        warnings.warn(
            f"{type(self).__name__}: the model does not vectorize over a particle plate "
            f"({why}); log_joint_unconstrained loops over the rows instead",
            RuntimeWarning,
            stacklevel=3,
        )

    def _constrain(self, latent: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained values per site and ``log|det dT/dz|`` summed to ``latent.shape[:1]``."""
        values: dict[str, Tensor] = {}
        lead = latent.shape[0] if latent.dim() > 1 else 1
        ladj = latent.new_zeros(lead)
        for site, u in self._unpack_latent(latent):
            t = biject_to(site["fn"].support)
            x = t(u)
            values[site["name"]] = x
            j = t.log_abs_det_jacobian(u, x)
            if latent.dim() > 1:
                ladj = ladj + j.reshape(lead, -1).sum(-1)
            else:
                ladj = ladj + j.sum()
        return values, ladj

    def _log_joint_vectorized(self, flat: Tensor, args: tuple, kwargs: dict) -> Tensor:
        m = flat.shape[0]
        outer = [-f.dim for f in get_plates() if f.vectorized and f.dim is not None]
        p = max([self._max_plate_nesting, *outer]) + 1
        latent = flat.reshape((m,) + (1,) * (p - 1) + (self.latent_dim,))
        values, total = self._constrain(latent)
        model = poutine.condition(self._raw_model[0], data=values)
        with poutine.block(), pyro.plate(_PARTICLE_PLATE, m, dim=-p):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and "log_prob" in site:
                total = total + _per_particle(site["log_prob"], p, m, flat)
        return total

    def _log_joint_loop(self, flat: Tensor, args: tuple, kwargs: dict) -> Tensor:
        out = []
        for row in flat:
            values, ladj = self._constrain(row)
            model = poutine.condition(self._raw_model[0], data=values)
            with poutine.block():
                trace = poutine.trace(model).get_trace(*args, **kwargs)
            out.append(trace.log_prob_sum() + ladj.sum())
        return torch.stack(out)

    def unconstrained_to_samples(self, z: Tensor) -> dict[str, Tensor]:
        """Map unconstrained latents ``(n, latent_dim)`` to constrained site values ``(n, ...)``."""
        name = f"{type(self).__name__}.unconstrained_to_samples"
        if self.prototype_trace is None:
            raise RuntimeError(f"{name}: run the guide once (or sample_unconstrained) first")
        check_event_shape(z, (self.latent_dim,), name)
        if z.dim() != 2:
            raise ValueError(f"{name}: expected z of shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        n = z.shape[0]
        latent = z.reshape((n,) + (1,) * self._max_plate_nesting + (self.latent_dim,))
        values, _ = self._constrain(latent)
        return {
            k: v.reshape((n,) + self.prototype_trace.nodes[k]["value"].shape)
            for k, v in values.items()
        }

    def importance_weights(
        self, num_samples: int, *args: Any, **kwargs: Any
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Draws from the guide and their log importance weights (no gradients).

        ``log_w = log_joint_unconstrained(z) - log_q`` with the path estimate
        ``log_q``, so ``E[exp(log_w)] = p(x)`` (the model's evidence).

        Returns:
            ``(samples, log_w)``: constrained values per latent site, each of
            shape ``(n,) + site_shape``, and ``log_w`` of shape ``(n,)``.
        """
        z, log_q = self.sample_unconstrained(num_samples, *args, **kwargs)
        with torch.no_grad():
            log_w = self._log_joint(z, *self._args(args, kwargs)) - log_q
            samples = self.unconstrained_to_samples(z)
        return samples, log_w

    def importance_diagnostics(
        self, num_samples: int = 1000, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """PSIS k-hat, its verdict, IS effective sample size, ``log Z`` and ELBO estimates.

        Arguments:
            num_samples: number of draws (at least 25 for the Pareto fit).
            *args: the model's arguments (default: those of the last guide call).
            **kwargs: the model's keyword arguments.

        Returns:
            A dict with ``khat``, ``verdict`` (``"good"``, ``"acceptable"``,
            ``"unreliable"``), ``ess``, ``ess_fraction``, ``log_Z`` and
            ``log_Z_se`` (``log mean w`` and its delta-method standard error),
            ``elbo`` and ``elbo_se`` (``mean log w``), ``num_samples``.
        """
        n = check_num_samples(num_samples, f"{type(self).__name__}.importance_diagnostics", 25)
        _, log_w = self.importance_weights(n, *args, **kwargs)
        check_finite(log_w, f"{type(self).__name__}.importance_diagnostics (log weights)")
        _, khat = psis_khat(log_w)
        ess = float(importance_ess(log_w))
        log_z, log_z_se = log_Z_from_log_weights(log_w)
        return {
            "khat": float(khat),
            "verdict": khat_verdict(float(khat)),
            "ess": ess,
            "ess_fraction": ess / n,
            "log_Z": float(log_z),
            "log_Z_se": float(log_z_se),
            "elbo": float(log_w.mean()),
            "elbo_se": float(log_w.std() / math.sqrt(n)),
            "num_samples": n,
        }

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, Tensor]:
        """Posterior quantiles of each latent site, estimated from 1000 guide draws.

        Returns:
            A dict mapping site names to tensors of shape ``(len(quantiles),) + site_shape``.
        """
        z, _ = self.sample_unconstrained(_QUANTILE_SAMPLES, *args, **kwargs)
        q = torch.as_tensor(quantiles, dtype=z.dtype, device=z.device).reshape(-1)
        if not bool(((q >= 0) & (q <= 1)).all()):
            raise ValueError(f"quantiles: expected values in [0, 1], got {q.tolist()}")
        samples = self.unconstrained_to_samples(z)
        return {k: torch.quantile(v, q, dim=0) for k, v in samples.items()}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Posterior median of each latent site, estimated from 1000 guide draws."""
        return {k: v[0] for k, v in self.quantiles([0.5], *args, **kwargs).items()}
