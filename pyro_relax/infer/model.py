r"""A Pyro model as a potential: its flat unconstrained layout and batched log density.

:class:`Potential` is built once per fit from ``(model, args, kwargs)``. It
traces the model once and reads the layout of its latent sites (name, shape,
``biject_to`` transform, the plates each sits in, the dtype its prior gives
it), in the order Pyro's ``AutoContinuous`` packs them, so a flat latent
``z`` means the same to the potential, our guides and Pyro's own guides.
:meth:`Potential.log_density` evaluates
``log p(x, T(z)) + log|det dT/dz|`` for any batch of points: in one pass with
a particle plate left of the model's plates, else with :func:`torch.func.vmap`,
else in a Python loop over the rows; the path is chosen on the first call with
two rows or more (checked against row-by-row runs) and reported in
:attr:`Potential.vectorization`.

The dtype rule. The latent values reach the model in the potential's
``dtype`` (float64 by default), and while the model runs the tensors it makes
itself take that dtype too (torch's default dtype is set for the model's run
only and restored when it returns or raises: nothing outside changes), so a
badly conditioned model computes in float64. Tensors the model holds from
outside (module-level data) keep their dtype; torch promotes mixed
elementwise arithmetic. A model whose float32 tensors meet the latents in an
operation torch refuses to mix (a matrix product ``X @ beta``) is detected in
the first evaluation: the latent values are then cast to the dtype the
model's own prior gives each site and the default dtype is left alone
(:attr:`Potential.evaluation` becomes ``"site dtype"``, with one warning);
the log-density sums stay in ``dtype``.

Algorithms (Pathfinder, the kernels, AIS, the diagnostics) take a
``Potential``; guides hold one.
"""

from __future__ import annotations

__all__ = ["LatentSite", "Potential", "is_dtype_mismatch"]  # the first and last from sites.py

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.runtime import get_plates
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyro_relax.core.checks import check_event_shape
from pyro_relax.infer.sites import (
    EvaluationMode,
    LatentSite,
    is_dtype_mismatch,
    read_layout,
    sum_rows,
)

_PARTICLE_PLATE = "_pyro_relax_particles"


class Potential:
    r"""The unconstrained log density of a Pyro model, for batches of flat latents.

    Arguments:
        model: a Pyro model with continuous latent sites.
        args: the model's arguments.
        kwargs: the model's keyword arguments.
        dtype: the dtype of the latents and of the log-density sums (float64
            by default; see the module docstring for the rule).
        device: the device of the latents (``None``: that of the model's sites).

    Raises:
        TypeError: when ``model`` is not callable or ``dtype`` not a floating dtype.
        ValueError: when the model has no latent site, a discrete latent site or
            a ``pyro.param`` (see :attr:`param_sites`; the check is made by
            :meth:`check_inferable`).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        ...     pyro.sample("y", dist.Normal(0.0, s), obs=torch.tensor(0.5))
        >>> pot = Potential(model)
        >>> pot.latent_dim, [site.name for site in pot.sites]
        (1, ['s'])
        >>> pot.log_density(torch.zeros(3, 1)).shape, pot.constrain(torch.zeros(1))["s"].item()
        (torch.Size([3]), 1.0)
    """

    def __init__(
        self,
        model: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if not callable(model):
            got = type(model).__name__
            raise TypeError(f"Potential: expected a callable Pyro model, got {got}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"Potential: expected a floating torch.dtype, got {dtype!r}")
        if not isinstance(args, tuple):
            raise TypeError(f"Potential: expected args as a tuple, got {type(args).__name__}")
        self.model = model
        self.args = args
        self.kwargs = dict(kwargs or {})
        self.dtype = dtype
        self.prototype = poutine.block(poutine.trace(model).get_trace)(*args, **self.kwargs)
        self.sites, self.max_plate_nesting = read_layout(self.prototype)
        self.subsampled = {n: (int(v["fn"].size), int(v["fn"].subsample_size))
                           for n, v in self.prototype.nodes.items()
                           if site_is_subsample(v)
                           and (v["fn"].subsample_size or v["fn"].size) < v["fn"].size}
        self.latent_dim = sum(site.size for site in self.sites)
        first = next((s for s in self.prototype.nodes.values() if s["type"] == "sample"), None)
        guess = first["value"].device if first is not None else torch.get_default_device()
        self.device = torch.device(device) if device is not None else guess
        # decided on the first evaluations and shared with every bind() of this potential
        self._mode = EvaluationMode()

    @property
    def evaluation(self) -> str:
        """``"fit dtype"`` (latents passed in :attr:`dtype`) or ``"site dtype"`` (see above)."""
        return self._mode.evaluation

    @property
    def vectorization(self) -> str | None:
        """How rows are evaluated: ``"plate"``, ``"vmap"``, ``"loop"``, or ``None`` (unknown)."""
        return self._mode.vectorization

    @property
    def notes(self) -> list[str]:
        """What the potential decided and why (the dtype rule, the vectorization fallback)."""
        return self._mode.notes

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state: layout and decisions, without the model, its arguments and trace."""
        state = dict(self.__dict__)
        state.update(model=None, args=(), kwargs={}, prototype=None)
        return state

    # -- layout ---------------------------------------------------------------
    @property
    def param_sites(self) -> list[str]:
        """The names of the model's ``pyro.param`` sites (see :meth:`check_inferable`)."""
        return [n for n, s in self.prototype.nodes.items() if s["type"] == "param"]

    def check_inferable(self, owner: str) -> None:
        """Raise ``ValueError`` unless the model has continuous latents only and no ``pyro.param``.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> def model():
            ...     pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
            >>> Potential(model).check_inferable("fit")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: fit: the model has pyro.param site(s) ['m'], ...
        """
        if not self.sites:
            raise ValueError(f"{owner}: the model has no latent sample site to infer")
        for site in self.sites:
            node = self.prototype.nodes[site.name]
            if node["fn"].support.is_discrete:
                raise ValueError(
                    f"{owner}: the model has a discrete latent site {site.name!r}; pyro-relax "
                    "fits continuous latents only (marginalize it out or observe it)"
                )
        for site in self.sites:
            inside = [name for name, _, _ in site.plates if name in self.subsampled]
            if inside:
                raise ValueError(
                    f"{owner}: the latent site {site.name!r} sits in the subsampled plate "
                    f"{inside[0]!r}; a flat guide needs every member of it at once: subsample "
                    "only the observations (or give the plate no subsample_size)"
                )
        if self.param_sites:
            raise ValueError(
                f"{owner}: the model has pyro.param site(s) {self.param_sites}, which this fit "
                "would hold at their start values; make each a pyro.sample site with a prior, "
                "or a constant"
            )

    # -- maps -----------------------------------------------------------------
    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Potential:
        """The same potential with other model arguments (e.g. a new data subsample).

        The layout, the evaluation dtype and the vectorization path are shared
        (they are assumed not to depend on the arguments' values).
        """
        if args is self.args and (kwargs or {}) == self.kwargs:
            return self
        if not isinstance(args, tuple):
            raise TypeError(f"Potential.bind: expected args as a tuple, got {type(args).__name__}")
        other = object.__new__(Potential)  # not copy.copy: __getstate__ drops the model
        other.__dict__.update(self.__dict__)
        other.args, other.kwargs = args, dict(kwargs or {})
        return other

    def unpack(self, z: Tensor) -> dict[str, Tensor]:
        """Split flat latents ``batch + (latent_dim,)`` into unconstrained site values.

        Each value has the shape ``batch + unconstrained shape`` (batch dims are
        put left of the site's own dims).
        """
        check_event_shape(z, (self.latent_dim,), "Potential.unpack")
        batch = z.shape[:-1]
        return {s.name: z[..., s.offset : s.offset + s.size].reshape(batch + s.unconstrained_shape)
                for s in self.sites}

    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        """Constrained site values ``batch + site shape`` of latents ``batch + (latent_dim,)``."""
        return {s.name: s.transform(u) for s, u in zip(self.sites, self.unpack(z).values(),
                                                        strict=True)}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        """Flat unconstrained latents from constrained site values (each ``batch + site shape``)."""
        if not isinstance(values, dict):
            raise TypeError(f"Potential.unconstrain: expected a dict, got {type(values).__name__}")
        parts, batch = [], None
        for s in self.sites:
            if s.name not in values:
                raise ValueError(f"Potential.unconstrain: expected a value for {s.name!r}")
            u = s.transform.inv(torch.as_tensor(values[s.name], dtype=self.dtype,
                                                device=self.device))
            lead = u.shape[: u.dim() - len(s.unconstrained_shape)]
            batch = lead if batch is None else batch
            parts.append(u.reshape(lead + (s.size,)))
        return torch.cat(parts, dim=-1)

    def initial_point(self, init_loc_fn: Callable[[dict], Tensor] | None = None) -> Tensor:
        """A flat unconstrained start: ``init_loc_fn`` (Pyro's ``init_to_*``) at every site.

        ``None`` uses ``init_to_feasible`` (zero in the unconstrained space).
        """
        if init_loc_fn is None:
            return torch.zeros(self.latent_dim, dtype=self.dtype, device=self.device)
        values = {s.name: init_loc_fn(self.prototype.nodes[s.name]).detach() for s in self.sites}
        return self.unconstrain(values)

    def _site_values(self, latent: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained values per site and the summed log-Jacobian (``latent.shape[:1]``)."""
        values: dict[str, Tensor] = {}
        lead = latent.shape[0] if latent.dim() > 1 else 1
        ladj = latent.new_zeros(lead)
        for s in self.sites:
            full = torch.broadcast_shapes(s.unconstrained_shape,
                                          latent.shape[:-1] + (1,) * s.event_dim)
            u = latent[..., s.offset : s.offset + s.size].reshape(full)
            x = s.transform(u)
            j = s.transform.log_abs_det_jacobian(u, x)
            ladj = ladj + (j.reshape(lead, -1).sum(-1) if latent.dim() > 1 else j.sum())
            values[s.name] = x.to(s.dtype) if self.evaluation == "site dtype" else x
        return values, ladj

    # -- the log density ------------------------------------------------------
    def log_density(self, z: Tensor) -> Tensor:
        """``log p(x, T(z)) + log|det dT/dz|`` for ``z`` of shape ``batch + (latent_dim,)``.

        Differentiable in ``z``; a point outside the model's domain gives NaN or
        ``-inf`` (Pyro's argument checks are off), never an exception.
        """
        check_event_shape(z, (self.latent_dim,), "Potential.log_density")
        batch = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim).to(self.dtype)
        if flat.shape[0] == 0:
            return flat.new_zeros(batch)
        if not self._mode.checked:
            self._first_evaluation(flat)
        if self.vectorization in (None, "plate"):
            try:
                out = self._plate(flat)
            except Exception as err:  # the model cannot take a particle plate
                self._give_up_plate(f"it raised {type(err).__name__}: {err}", flat)
            else:
                if self.vectorization is None and flat.shape[0] > 1:
                    self._confirm("plate", out, flat)
                if self.vectorization in (None, "plate"):
                    return out.reshape(batch)
        if self.vectorization == "vmap":
            return self._vmap(flat).reshape(batch)
        return self._loop(flat).reshape(batch)

    def settle(self, z: Tensor) -> None:
        """Evaluate one point ``(latent_dim,)`` to settle the dtype rule (once; no vectorization).

        A model that fails on it for another reason than a dtype clash raises here.
        """
        check_event_shape(z, (self.latent_dim,), "Potential.settle")
        if not self._mode.checked:
            self._first_evaluation(z.reshape(1, self.latent_dim).to(self.dtype))

    def _first_evaluation(self, flat: Tensor) -> None:
        """One row through the model; on a dtype clash, evaluate in the sites' own dtypes."""
        row = flat[:1].detach()
        try:
            with torch.no_grad():
                self._loop(row)
        except Exception as err:  # noqa: BLE001 - only a dtype clash is handled
            if not is_dtype_mismatch(err) or self.evaluation == "site dtype":
                raise
            self._mode.evaluation = "site dtype"
            note = (f"the model mixes its own tensors with {self.dtype} latents where torch "
                    f"refuses ({str(err).splitlines()[0][:80]}); its latents are passed in the "
                    "dtype its prior gives each site, the log-density sums stay in "
                    f"{str(self.dtype).replace('torch.', '')}")
            self.notes.append(note)
            warnings.warn(f"Potential: {note}", RuntimeWarning, stacklevel=4)
        self._mode.checked = True

    def _confirm(self, mode: str, out: Tensor, flat: Tensor) -> None:
        rows = flat[[0, -1]].detach()
        with torch.no_grad():
            ref = self._loop(rows)
        if torch.allclose(out[[0, -1]].detach(), ref, rtol=1e-4, atol=1e-3, equal_nan=True):
            self._mode.vectorization = mode
        elif mode == "plate":
            self._give_up_plate("its result differs from row-by-row runs", flat)
        else:
            self._note("torch.func.vmap disagrees with row-by-row runs; looping over rows")
            self._mode.vectorization = "loop"

    def _give_up_plate(self, why: str, flat: Tensor) -> None:
        self._mode.plate_failure = why
        self._mode.vectorization = "vmap"
        try:
            out = self._vmap(flat)
        except Exception as err:  # data-dependent control flow, .item(), ...
            self._note(f"torch.func.vmap failed too ({type(err).__name__}); looping over rows")
            self._mode.vectorization = "loop"
            return
        if flat.shape[0] > 1:
            self._confirm("vmap", out, flat)
        if self.vectorization == "vmap":
            self._note("evaluating rows with torch.func.vmap instead (one pass)")

    def _note(self, what: str) -> None:
        why = self._mode.plate_failure[:160]
        note = f"the model does not vectorize over a particle plate ({why}); {what}"
        self.notes.append(note)
        warnings.warn(f"Potential: {note}", RuntimeWarning, stacklevel=5)

    @contextmanager
    def _model_dtype(self) -> Iterator[None]:
        """While the model runs in ``"fit dtype"``: the tensors it makes take :attr:`dtype`.

        Set for the model's own run only, restored when it returns or raises.
        """
        if self._mode.evaluation != "fit dtype":
            yield
            return
        old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(old)

    def _trace(self, values: dict[str, Tensor]) -> Any:  # noqa: ANN401 - a Pyro trace
        model = poutine.condition(self.model, data=values)
        with poutine.block(), pyro.validation_enabled(False), self._model_dtype():
            trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
            trace.compute_log_prob()
        return trace

    def _plate(self, flat: Tensor) -> Tensor:
        m = flat.shape[0]
        outer = [-f.dim for f in get_plates() if f.vectorized and f.dim is not None]
        p = max([self.max_plate_nesting, *outer]) + 1
        latent = flat.reshape((m,) + (1,) * (p - 1) + (self.latent_dim,))
        values, total = self._site_values(latent)
        model = poutine.condition(self.model, data=values)
        with (poutine.block(), pyro.plate(_PARTICLE_PLATE, m, dim=-p),
              pyro.validation_enabled(False), self._model_dtype()):
            trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
            trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and "log_prob" in site:
                total = total + sum_rows(site["log_prob"], p, m, flat)
        return total

    def _row(self, row: Tensor) -> Tensor:
        values, ladj = self._site_values(row)
        trace = self._trace(values)
        total = ladj.sum()
        for site in trace.nodes.values():
            if site["type"] == "sample" and "log_prob" in site:
                total = total + site["log_prob"].sum().to(self.dtype)
        return total

    def _vmap(self, flat: Tensor) -> Tensor:
        return torch.func.vmap(self._row, randomness="different")(flat)

    def _loop(self, flat: Tensor) -> Tensor:
        return torch.stack([self._row(row) for row in flat])
