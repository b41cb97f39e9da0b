r"""The guides' view of the model's density: a :class:`~pyro_relax.infer.model.Potential` they hold.

:class:`PotentialMixin` gives a guide the model's unconstrained log density
(``log p(x, T(z)) + log|det dT/dz|``, vectorized over rows: a particle plate,
else :func:`torch.func.vmap`, else a loop) and the map from its flat latent to
constrained site values. It delegates to the guide's
:class:`~pyro_relax.infer.model.Potential`, built when the guide first traces
the model, so the guide, Pathfinder, the kernels and the diagnostics evaluate
one and the same density.
"""

from __future__ import annotations

__all__ = ["PotentialMixin"]

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pyro_relax.core.checks import check_event_shape, check_finite
from pyro_relax.infer.model import Potential


class PotentialMixin:
    """``log_joint_unconstrained`` and the map from unconstrained to constrained values.

    Needs ``self._raw_model`` (a 1-tuple holding the model), ``self._model_args``
    and ``self._potential`` (a :class:`~pyro_relax.infer.model.Potential`, or
    ``None`` before the first trace), set by
    :class:`~pyro_relax.infer.guides.base.RelaxedGuideMixin`.
    """

    latent_dim: int
    prototype_trace: Any
    _raw_model: tuple[Callable[..., Any] | None]
    _model_args: tuple[tuple[Any, ...], dict[str, Any]]
    _potential: Potential | None

    @property
    def raw_model(self) -> Callable[..., Any] | None:
        """The model as given, whose density this evaluates (``None`` for an unpickled guide)."""
        return self._raw_model[0]

    @property
    def model_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` of the model's last call (those :meth:`log_joint` uses by default)."""
        return self._model_args

    @property
    def potential(self) -> Potential:
        """The model's :class:`~pyro_relax.infer.model.Potential` (the guide must have run once)."""
        pot = getattr(self, "_potential", None)
        if pot is None:
            raise RuntimeError(f"{type(self).__name__}: run the guide once (or setup) first")
        return pot

    def unpack_latent(self, latent: Tensor) -> dict[str, Tensor]:
        """Split a flat unconstrained latent ``batch + (latent_dim,)`` into per-site values."""
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__}.unpack_latent: run the guide once first")
        check_event_shape(latent, (self.latent_dim,), f"{type(self).__name__}.unpack_latent")
        return self.potential.unpack(latent)

    def latent_shapes(self) -> dict[str, torch.Size]:
        """The unconstrained shape of each latent site, in the packing order of the latent."""
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__}.latent_shapes: run the guide once first")
        return {s.name: s.unconstrained_shape for s in self.potential.sites}

    def log_joint(self, z: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # noqa: ANN401
        """:meth:`log_joint_unconstrained` without the checks of ``z`` (for sampler proposals).

        A proposal may leave the finite range; its log density is then NaN or
        ``-inf`` instead of an exception. ``args`` and ``kwargs`` default to
        :attr:`model_args`.
        """
        self._ensure_setup(args, kwargs)
        return self._log_joint(z, *self._args(args, kwargs)).to(z.dtype)

    def _ensure_setup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)  # type: ignore[attr-defined]

    def _args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        return (args, kwargs) if args or kwargs else self._model_args

    def log_joint_unconstrained(self, z: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # noqa: ANN401
        """``log p(x, T(z)) + log|det dT/dz|``: minus the potential energy at ``z``.

        Differentiable in ``z``; vectorized over any batch shape.

        Arguments:
            z: unconstrained latents, shape ``batch_shape + (latent_dim,)``.
            *args: the model's arguments; by default those of the last guide call.
            **kwargs: the model's keyword arguments (same default).

        Returns:
            A tensor of shape ``batch_shape``, in ``z``'s dtype (computed in the
            potential's, float64 by default).
        """
        name = f"{type(self).__name__}.log_joint_unconstrained"
        self._ensure_setup(args, kwargs)
        check_event_shape(z, (self.latent_dim,), name)
        check_finite(z, name)
        return self._log_joint(z, *self._args(args, kwargs)).to(z.dtype)

    @property
    def vectorization(self) -> str | None:
        """How rows are evaluated: ``"plate"``, ``"vmap"``, ``"loop"`` or ``None`` (unknown)."""
        pot = getattr(self, "_potential", None)
        return None if pot is None else pot.vectorization

    def _log_joint(self, z: Tensor, args: tuple, kwargs: dict) -> Tensor:
        if self._raw_model[0] is None:
            raise RuntimeError(
                f"{type(self).__name__}: this guide was unpickled without its model; "
                f"call guide.attach_model(model) first"
            )
        return self.potential.bind(tuple(args), kwargs).log_density(z)

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
        return self.potential.constrain(z)
