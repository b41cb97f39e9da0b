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

The model's density in unconstrained space is in
:mod:`pyro_relax.infer.guides.potential`.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_DTYPE",
    "DTYPES",
    "RelaxedGuideMixin",
    "check_dtype",
    "check_flow_config",
    "check_init_gaussian",
    "check_init_scale",
    "check_model",
    "check_num_samples",
    "pathfinder_start",
]

import math
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.runtime import get_plates
from torch import Tensor

from pyro_relax.core.checks import check_finite
from pyro_relax.diagnostics.psis import importance_ess, khat_verdict, psis_khat
from pyro_relax.infer.guides.options import (
    DEFAULT_DTYPE,
    DTYPES,
    check_dtype,
    check_flow_config,
    check_init_gaussian,
    check_init_scale,
    check_model,
    check_num_samples,
)
from pyro_relax.infer.guides.potential import PotentialMixin
from pyro_relax.infer.model import Potential
from pyro_relax.stochastic.snf import log_Z_from_log_weights

_QUANTILE_SAMPLES = 1000



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


def pathfinder_start(potential: Potential, owner: str) -> Any:  # noqa: ANN401 - a Gaussian
    """Pathfinder's best Gaussian for a guide's start (4 paths), or ``None`` with a warning.

    Runs blocked from any enclosing Pyro trace (a guide set up inside ``SVI``).
    """
    from pyro_relax.infer.pathfinder import pathfinder_for_model

    if potential.subsampled:  # a noisy log density: L-BFGS cannot use it
        return None
    try:
        with warnings.catch_warnings(), poutine.block():
            warnings.simplefilter("ignore", RuntimeWarning)
            pf = pathfinder_for_model(potential, num_paths=4, num_draws=200, dtype=potential.dtype,
                                      device=potential.device)
    except ValueError as err:
        warnings.warn(f"{owner}: Pathfinder found no start ({str(err)[:120]}); starting at the "
                      "model's feasible point instead", RuntimeWarning, stacklevel=4)
        return None
    return pf.gaussian


class RelaxedGuideMixin(PotentialMixin):
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
    _init_loc: Callable[[], Tensor]

    def _init_relaxed(
        self,
        model: Callable[..., Any],
        init_gaussian: tuple[Tensor, Tensor] | None = None,
        dtype: torch.dtype | str | None = None,
        pathfinder: bool = False,
    ) -> None:
        owner = type(self).__name__
        self._init_gaussian = check_init_gaussian(init_gaussian, owner)
        self._pathfinder_start = pathfinder and self._init_gaussian is None
        self._fit_dtype = DEFAULT_DTYPE if dtype is None else check_dtype(dtype, owner)
        self._raw_model = (model,)  # a tuple: never registered as a submodule
        self._model_args: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})
        self._potential: Potential | None = None

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state, without the model and its arguments."""
        # like AutoGuide: the model (often a local function) and its data are not pickled
        state = dict(super().__getstate__())  # type: ignore[misc]
        state["_raw_model"] = (None,)
        state["_model_args"] = ((), {})
        return state

    def attach_model(self, model: Callable[..., Any]) -> None:
        """Give an unpickled guide its model back (needed for the model's log density)."""
        check_model(model, f"{type(self).__name__}.attach_model")
        self._raw_model = (model,)
        if self._potential is not None:
            self._potential.model = model
            self._potential.args, self._potential.kwargs = self._model_args

    def _initial_gaussian(self, init_loc: Tensor) -> tuple[Tensor, Any]:  # noqa: ANN401
        """``(loc, whitening)`` to start from: ``init_gaussian``'s, else ``(init_loc, None)``.

        ``whitening`` is a dense ``scale_tril`` or a Pathfinder Gaussian (see
        :func:`~pyro_relax.infer.guides.whitening.make_whitening`).
        """
        if self._init_gaussian is None:
            return init_loc, None
        like = {"device": init_loc.device, "dtype": init_loc.dtype}
        if isinstance(self._init_gaussian, tuple):
            loc, spec = self._init_gaussian
            spec = spec.to(**like)
        else:
            loc, spec = self._init_gaussian.loc, self._init_gaussian
        if tuple(loc.shape) != (self.latent_dim,):
            raise ValueError(
                f"{type(self).__name__}: expected init_gaussian for {self.latent_dim} "
                f"unconstrained latents, got a loc of shape {tuple(loc.shape)}"
            )
        return loc.to(**like), spec

    # -- hooks ----------------------------------------------------------------
    @abstractmethod
    def _build(self, init_loc: Tensor) -> None:
        """Create the guide's modules for ``latent_dim = init_loc.shape[-1]``."""

    @abstractmethod
    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """Draw ``(z, log_q)`` of shapes ``sample_shape + (latent_dim,)`` and ``sample_shape``."""

    # -- Pyro plumbing -------------------------------------------------------
    def setup(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - the model's arguments
        """Trace the model with these arguments and build the guide's modules, without drawing.

        What the guide's first call does: the model becomes a
        :class:`~pyro_relax.infer.model.Potential` (evaluated once at the start,
        which settles the dtype rule), and the modules are made in the guide's
        ``dtype`` (float64 by default), on the model's device.
        """
        self._setup_prototype(*args, **kwargs)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super()._setup_prototype(*args, **kwargs)  # type: ignore[misc]
        self._model_args = (args, kwargs)
        pot = Potential(self._raw_model[0], tuple(args), kwargs, dtype=self._fit_dtype)
        if pot.latent_dim != self.latent_dim:
            raise ValueError(
                f"{type(self).__name__}: the model's layout changed between two traces "
                f"({self.latent_dim} then {pot.latent_dim} unconstrained latents)"
            )
        self._potential = pot
        init = self._init_loc().detach().to(self._fit_dtype)
        pot.settle(init)  # the first evaluation settles the dtype rule
        if getattr(self, "_pathfinder_start", False):
            self._init_gaussian = pathfinder_start(pot, type(self).__name__)
            self._pathfinder_start = False
        self._build(init)

    def _unpack_latent(self, latent: Tensor) -> Iterator[tuple[dict[str, Any], Tensor]]:
        """Pyro's unpacking, with each value in its site's dtype when the model needs it."""
        cast = self._potential is not None and self._potential.evaluation == "site dtype"
        for site, u in super()._unpack_latent(latent):  # type: ignore[misc]
            yield site, (u.to(site["value"].dtype) if cast else u)

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.Delta:  # noqa: ANN401
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
        self, num_samples: int, *args: Any, **kwargs: Any  # noqa: ANN401 - the model's arguments
    ) -> tuple[Tensor, Tensor]:
        """Draw unconstrained latents and their path log-density estimates (no gradients).

        Arguments:
            num_samples: number of draws ``n >= 1``.
            *args: the model's arguments (needed only if the guide never ran).
            **kwargs: the model's keyword arguments (same).

        Returns:
            ``(z, log_q)`` of shapes ``(n, latent_dim)`` and ``(n,)``.
        """
        with torch.no_grad():
            z, log_q = self._draw_for(num_samples, "sample_unconstrained", args, kwargs)
        return z.detach(), log_q.detach()

    def rsample_unconstrained(
        self, num_samples: int, *args: Any, **kwargs: Any  # noqa: ANN401 - the model's arguments
    ) -> tuple[Tensor, Tensor]:
        """Reparametrized draws and their path log-density estimates (with gradients).

        The building block of a hand-written ELBO:
        ``log_joint_unconstrained(z) - log_q`` averages to the guide's ELBO.

        Returns:
            ``(z, log_q)`` of shapes ``(n, latent_dim)`` and ``(n,)``.
        """
        return self._draw_for(num_samples, "rsample_unconstrained", args, kwargs)

    def _draw_for(
        self, num_samples: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Tensor, Tensor]:
        """Check ``num_samples``, set up with (and remember) the model's arguments, draw."""
        n = check_num_samples(num_samples, f"{type(self).__name__}.{method}")
        self._ensure_setup(args, kwargs)
        if args or kwargs:
            self._model_args = (args, kwargs)
        return self._draw(torch.Size([n]))

    def importance_weights(
        self, num_samples: int, *args: Any, **kwargs: Any  # noqa: ANN401 - the model's arguments
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
        self, num_samples: int = 1000, *args: Any, **kwargs: Any  # noqa: ANN401
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
        self, quantiles: Sequence[float] | Tensor, *args: Any, **kwargs: Any  # noqa: ANN401
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
    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # noqa: ANN401
        """Posterior median of each latent site, estimated from 1000 guide draws."""
        return {k: v[0] for k, v in self.quantiles([0.5], *args, **kwargs).items()}
