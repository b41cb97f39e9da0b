r"""The model's log density in unconstrained space, vectorized over particles.

:meth:`PotentialMixin.log_joint_unconstrained` returns
``log p(x, T(z)) + log|det dT/dz|`` (minus the potential energy), with ``T``
the sites' ``biject_to`` transforms. It runs the (unwrapped) model under
``poutine.condition`` with the constrained values, blocked from any outer
trace, and sums the sites' ``log_prob`` (with their scales and masks, as
``Trace_ELBO`` does). It is vectorized: the rows of ``z`` run in one pass
inside a ``pyro.plate`` left of the model's plates. On the first call with
two rows or more, the vectorized result of the first and last row is compared
with row-by-row runs of the model; if the model cannot be vectorized (it
raises, or the results disagree) the method falls back to a loop over the
rows with :func:`torch.func.vmap` (one batched pass, as fast as the plate for
most models that compute with ``x @ b``-style code a particle plate breaks), and
only if that also fails or disagrees to a Python loop over the rows; it warns
once, naming the path taken. :attr:`PotentialMixin.vectorization` says which
(``"plate"``, ``"vmap"`` or ``"loop"``).
"""

from __future__ import annotations

__all__ = ["ModelPotential", "PotentialMixin", "plate_nesting"]

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoContinuous
from pyro.poutine.runtime import get_plates
from torch import Tensor

from pyro_relax.core.checks import check_event_shape, check_finite
from pyro_relax.infer.guides.layout import shapes_of_trace, unpack_trace

_PARTICLE_PLATE = "_pyro_relax_log_joint_particles"


def _per_particle(t: Tensor | float, p: int, m: int, like: Tensor) -> Tensor:
    """Sum a site's log-prob tensor (batch dims only, particle dim at ``-p``) to shape ``(m,)``."""
    if not isinstance(t, Tensor):
        return like.new_full((m,), float(t))
    if t.dim() < p:
        t = t.reshape((1,) * (p - t.dim()) + t.shape)
    t = t.reshape(t.shape[: t.dim() - p + 1] + (-1,)).sum(-1)
    return t.expand(m)


def plate_nesting(model: Callable[..., Any], args: tuple, kwargs: dict) -> int:
    """How many batch dimensions the model's sites use (plates and batched distributions)."""
    nesting = 0
    full = poutine.block(poutine.trace(model).get_trace)(*args, **kwargs)
    for site in full.nodes.values():
        if site["type"] != "sample":
            continue
        nesting = max(nesting, len(getattr(site["fn"], "batch_shape", ())))
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
    return nesting


class PotentialMixin:
    """``log_joint_unconstrained`` and the map from unconstrained to constrained values.

    Needs ``self._raw_model`` (a 1-tuple holding the unwrapped model),
    ``self._model_args``, ``self._max_plate_nesting`` and ``self._vectorize``
    (set by :class:`~pyro_relax.infer.guides.base.RelaxedGuideMixin`), and
    ``self._unpack_latent`` (``AutoContinuous``'s own, or the layout's).
    Other modules use the public :attr:`raw_model`, :attr:`model_args`,
    :meth:`unpack_latent`, :meth:`latent_shapes` and :meth:`log_joint`.
    """

    latent_dim: int
    prototype_trace: Any
    _raw_model: tuple[Callable[..., Any]]
    _model_args: tuple[tuple[Any, ...], dict[str, Any]]
    _max_plate_nesting: int
    _vectorize: bool | None
    _unpack_latent: Callable[[Tensor], Any]

    @property
    def raw_model(self) -> Callable[..., Any] | None:
        """The model as given, whose density this evaluates (``None`` for an unpickled guide).

        (Pyro's ``AutoContinuous.model`` is this model wrapped for its ``init_loc_fn``.)
        """
        return self._raw_model[0]

    @property
    def model_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` of the model's last call (those :meth:`log_joint` uses by default)."""
        return self._model_args

    def unpack_latent(self, latent: Tensor) -> dict[str, Tensor]:
        """Split a flat unconstrained latent ``batch + (latent_dim,)`` into per-site values."""
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__}.unpack_latent: run the guide once first")
        check_event_shape(latent, (self.latent_dim,), f"{type(self).__name__}.unpack_latent")
        return {site["name"]: u for site, u in self._unpack_latent(latent)}

    def latent_shapes(self) -> dict[str, torch.Size]:
        """The unconstrained shape of each latent site, in the packing order of the latent."""
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__}.latent_shapes: run the guide once first")
        return shapes_of_trace(self.prototype_trace)

    def log_joint(self, z: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # noqa: ANN401
        """:meth:`log_joint_unconstrained` without the checks of ``z`` (for sampler proposals).

        A proposal may leave the finite range; its log density is then NaN or
        ``-inf`` instead of an exception. ``args`` and ``kwargs`` default to
        :attr:`model_args`.
        """
        self._ensure_setup(args, kwargs)
        return self._log_joint(z, *self._args(args, kwargs))

    def _ensure_setup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)  # type: ignore[attr-defined]

    def _args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        return (args, kwargs) if args or kwargs else self._model_args

    def log_joint_unconstrained(self, z: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # noqa: ANN401
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

    @property
    def vectorization(self) -> str | None:
        """How rows are evaluated: ``"plate"``, ``"vmap"``, ``"loop"`` or ``None`` (unknown)."""
        mode = getattr(self, "_vectorize", None)
        if mode is None:
            return None
        if mode is True:
            return "plate"
        return "vmap" if getattr(self, "_use_vmap", False) else "loop"

    def _log_joint(self, z: Tensor, args: tuple, kwargs: dict) -> Tensor:
        if self._raw_model[0] is None:
            raise RuntimeError(
                f"{type(self).__name__}: this guide was unpickled without its model; "
                f"call guide.attach_model(model) first"
            )
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
                if self._vectorize is None and flat.shape[0] > 1:  # one check, two rows
                    rows = flat[[0, -1]].detach()
                    with torch.no_grad():
                        ref = self._log_joint_loop(rows, args, kwargs)
                    got = out[[0, -1]].detach()
                    if torch.allclose(got, ref, rtol=1e-4, atol=1e-4, equal_nan=True):
                        self._vectorize = True
                    else:
                        self._fall_back("its result differs from row-by-row runs")
                if self._vectorize is not False:
                    return out.reshape(batch)
        return self._log_joint_rows(flat, args, kwargs).reshape(batch)

    def _log_joint_rows(self, flat: Tensor, args: tuple, kwargs: dict) -> Tensor:
        """Row by row: one ``torch.func.vmap`` pass where the model allows it, else a loop."""
        use = getattr(self, "_use_vmap", None)
        if use is not False and flat.shape[0] > 1:
            try:
                out = torch.func.vmap(
                    lambda row: self._log_joint_row(row, args, kwargs), randomness="different"
                )(flat)
            except Exception as err:  # data-dependent control flow, .item(), ...
                self._use_vmap = False
                self._warn(f"torch.func.vmap failed too ({type(err).__name__}); looping over rows")
            else:
                if use is None:
                    rows = flat[[0, -1]].detach()
                    with torch.no_grad():
                        ref = self._log_joint_loop(rows, args, kwargs)
                    if torch.allclose(out[[0, -1]].detach(), ref, rtol=1e-4, atol=1e-3,
                                      equal_nan=True):
                        self._use_vmap = True
                        self._warn("evaluating rows with torch.func.vmap instead (one pass)")
                    else:
                        self._use_vmap = False
                        self._warn("torch.func.vmap disagrees with row-by-row runs; looping")
                if self._use_vmap:
                    return out
        return self._log_joint_loop(flat, args, kwargs)

    def _fall_back(self, why: str) -> None:
        self._vectorize = False
        self._plate_failure = why

    def _warn(self, what: str) -> None:
        why = getattr(self, "_plate_failure", "")
        warnings.warn(
            f"{type(self).__name__}: the model does not vectorize over a particle plate "
            f"({why[:160]}); {what}",
            RuntimeWarning,
            stacklevel=4,
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
        # Pyro's argument validation off: a proposal outside the model's domain gets a
        # NaN/-inf log density (rejected by MH-type blocks) instead of an exception.
        with (
            poutine.block(),
            pyro.plate(_PARTICLE_PLATE, m, dim=-p),
            pyro.validation_enabled(False),
        ):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
            trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and "log_prob" in site:
                total = total + _per_particle(site["log_prob"], p, m, flat)
        return total

    def _log_joint_row(self, row: Tensor, args: tuple, kwargs: dict) -> Tensor:
        values, ladj = self._constrain(row)
        model = poutine.condition(self._raw_model[0], data=values)
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
            return trace.log_prob_sum() + ladj.sum()

    def _log_joint_loop(self, flat: Tensor, args: tuple, kwargs: dict) -> Tensor:
        return torch.stack([self._log_joint_row(row, args, kwargs) for row in flat])

    def unconstrained_to_samples(self, z: Tensor) -> dict[str, Tensor]:
        """Map unconstrained latents ``(n, latent_dim)`` to constrained site values ``(n, ...)``."""
        name = f"{type(self).__name__}.unconstrained_to_samples"
        if self.prototype_trace is None:
            raise RuntimeError(f"{name}: run the guide once (or sample_unconstrained) first")
        check_event_shape(z, (self.latent_dim,), name)
        if z.dim() != 2:
            raise ValueError(
                f"{name}: expected z of shape (n, {self.latent_dim}), got {tuple(z.shape)}"
            )
        n = z.shape[0]
        latent = z.reshape((n,) + (1,) * self._max_plate_nesting + (self.latent_dim,))
        values, _ = self._constrain(latent)
        return {
            k: v.reshape((n,) + self.prototype_trace.nodes[k]["value"].shape)
            for k, v in values.items()
        }


class ModelPotential(PotentialMixin):
    """The unconstrained log density of a model, laid out as an ``AutoContinuous`` guide's latent.

    Gives any set-up ``AutoContinuous`` guide (Pyro's own ``AutoIAFNormal``,
    ``AutoMultivariateNormal``, ... or ours) the same vectorized
    :meth:`log_joint_unconstrained` (plate, then ``torch.func.vmap``, then a
    loop) and :meth:`unconstrained_to_samples` that the relaxed guides have.

    Arguments:
        guide: an ``AutoContinuous`` guide that has run once (``guide()``).
        model: the model it approximates.
        args: the model's arguments.
        kwargs: the model's keyword arguments.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoDiagonalNormal
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoDiagonalNormal(model); _ = guide()
        >>> ModelPotential(guide, model).log_joint_unconstrained(torch.zeros(2, 1)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        guide: AutoContinuous,
        model: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        if getattr(guide, "prototype_trace", None) is None or not hasattr(guide, "latent_dim"):
            raise ValueError(
                "ModelPotential: expected an AutoContinuous guide that has run once, "
                f"got {type(guide).__name__}"
            )
        if not callable(model):
            raise TypeError(f"ModelPotential: expected a callable model, got {type(model)}")
        self.latent_dim = guide.latent_dim
        self.prototype_trace = guide.prototype_trace
        self._shapes = shapes_of_trace(self.prototype_trace)
        self._raw_model = (model,)
        self._model_args = (tuple(args), dict(kwargs or {}))
        mode = guide.vectorization if isinstance(guide, PotentialMixin) else None
        self._vectorize = None if mode is None else mode == "plate"
        if mode in ("vmap", "loop"):
            self._use_vmap = mode == "vmap"
        self._max_plate_nesting = plate_nesting(model, tuple(args), dict(kwargs or {}))

    def _unpack_latent(self, latent: Tensor) -> Iterator[tuple[dict[str, Any], Tensor]]:
        return unpack_trace(self.prototype_trace, self._shapes, latent)

    def log_joint_rows(self, z: Tensor) -> Tensor:
        """Like :meth:`log_joint_unconstrained` but without the finiteness check on ``z``."""
        check_event_shape(z, (self.latent_dim,), "ModelPotential.log_joint_rows")
        return self._log_joint(z, *self._model_args)
