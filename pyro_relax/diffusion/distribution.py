"""A trained diffusion model as a Pyro distribution."""

from __future__ import annotations

__all__ = ["DiffusionDistribution"]

from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

from pyro_relax.core.checks import check_finite, check_int
from pyro_relax.diffusion.ddpm import DDPM
from pyro_relax.diffusion.ddpm_samplers import ddim, ddpm_ancestral
from pyro_relax.diffusion.diffflow import DiffFlow
from pyro_relax.diffusion.guard import check_model_dtype, model_dtype
from pyro_relax.diffusion.likelihood import ode_log_prob
from pyro_relax.diffusion.samplers import (
    euler_maruyama,
    predictor_corrector,
    probability_flow,
)
from pyro_relax.diffusion.score_model import ScoreModel, ScoreProcess

_SDE_SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "em": euler_maruyama,
    "pc": predictor_corrector,
    "ode": probability_flow,
}
_DDPM_SAMPLERS: dict[str, Callable[..., Tensor]] = {"ancestral": ddpm_ancestral, "ddim": ddim}


class DiffusionDistribution(TorchDistribution):
    r"""A score model, DiffFlow or DDPM as a ``TorchDistribution`` with event shape ``(dim,)``.

    ``sample``/``rsample`` run the chosen sampler (``rsample`` keeps the graph:
    every sampler here is a differentiable function of its noise), and
    ``log_prob`` is the probability-flow ODE likelihood (``"ode"``, the default
    for score models and DiffFlow) or a variational bound (``"elbo"``: the
    continuous bound of a score model, the path ELBO of DiffFlow, the ELBO of a
    DDPM, which has no ODE here). ``batch_shape`` is ``()``; Pyro's
    ``expand`` and plates broadcast it. The model's parameters are not
    registered with Pyro by the distribution: call ``pyro.module(name, model)``
    in the Pyro model that trains it.

    Arguments:
        model: a :class:`ScoreModel`, :class:`DiffFlow` or :class:`DDPM`.
        sampler: ``"em"``, ``"pc"``, ``"ode"`` (score models; DiffFlow adds
            ``"diffflow"``, its own backward chain, the default) or
            ``"ancestral"``, ``"ddim"`` (DDPM). Default: ``"em"``, ``"diffflow"``,
            ``"ancestral"``.
        steps: the sampler's step count (its default when None).
        log_prob: ``"ode"`` or ``"elbo"`` (default ``"ode"``, ``"elbo"`` for a DDPM).
        sampler_kwargs: more keyword arguments of the sampler.
        log_prob_kwargs: more keyword arguments of ``ode_log_prob`` or the ``elbo`` method.

    Example:
        >>> import torch, pyro
        >>> from pyro_relax.diffusion import GaussianScore, ScoreModel, VPSDE
        >>> sde = VPSDE()
        >>> m = ScoreModel(sde, GaussianScore(sde, torch.zeros(2), torch.eye(2)), 2, "score")
        >>> d = DiffusionDistribution(m, steps=20)
        >>> pyro.sample("x", d, sample_shape=(3,)).shape, d.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        model: ScoreProcess | DDPM,
        sampler: str | None = None,
        steps: int | None = None,
        log_prob: str | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        log_prob_kwargs: dict[str, Any] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(model, ScoreProcess | DDPM):
            raise TypeError(
                "DiffusionDistribution: expected a ScoreModel, DiffFlow or DDPM, "
                f"got {type(model).__name__}"
            )
        is_ddpm = isinstance(model, DDPM)
        if is_ddpm:
            choices = tuple(_DDPM_SAMPLERS)
        else:
            choices = tuple(_SDE_SAMPLERS) + (("diffflow",) if isinstance(model, DiffFlow) else ())
        default = "ancestral" if is_ddpm else ("diffflow" if isinstance(model, DiffFlow) else "em")
        sampler = default if sampler is None else sampler
        if sampler not in choices:
            raise ValueError(
                f"DiffusionDistribution: expected sampler in {choices}, got {sampler!r}"
            )
        log_prob = ("elbo" if is_ddpm else "ode") if log_prob is None else log_prob
        lp_choices = ("elbo",) if is_ddpm else ("ode", "elbo")
        if log_prob not in lp_choices:
            raise ValueError(
                f"DiffusionDistribution: expected log_prob in {lp_choices}, got {log_prob!r}"
            )
        if steps is not None:
            check_int(steps, "steps", "DiffusionDistribution", minimum=1)
        if sampler == "diffflow" and steps is not None:
            raise ValueError(
                "DiffusionDistribution: DiffFlow's sampler runs on its own grid; "
                "expected steps=None"
            )
        self.model, self.sampler, self.steps, self.log_prob_method = model, sampler, steps, log_prob
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.log_prob_kwargs = dict(log_prob_kwargs or {})
        super().__init__(torch.Size(), torch.Size((model.dim,)), validate_args=validate_args)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draw ``sample_shape + (dim,)`` samples, differentiable in the model's parameters."""
        kwargs = dict(self.sampler_kwargs)
        if self.steps is not None:
            kwargs["steps"] = self.steps
        if self.sampler == "diffflow":
            assert isinstance(self.model, DiffFlow)
            return self.model.sample(sample_shape, **kwargs)
        table = _DDPM_SAMPLERS if isinstance(self.model, DDPM) else _SDE_SAMPLERS
        return table[self.sampler](self.model, sample_shape, **kwargs)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draw samples without a graph."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(value)`` by the ODE, or its variational bound (shape ``value.shape[:-1]``)."""
        if not isinstance(value, Tensor):
            raise TypeError(
                f"DiffusionDistribution.log_prob: expected a tensor, got {type(value).__name__}"
            )
        if value.dim() < 1 or value.shape[-1] != self.model.dim:
            raise ValueError(
                f"DiffusionDistribution.log_prob: expected event shape ({self.model.dim},), "
                f"got {tuple(value.shape[-1:])}"
            )
        name = "DiffusionDistribution.log_prob"
        net = self.model.network
        check_model_dtype(value, model_dtype(net), name)
        check_finite(value, name)
        if self.log_prob_method == "ode":
            assert isinstance(self.model, ScoreProcess)
            return ode_log_prob(self.model, value, **self.log_prob_kwargs)
        if isinstance(self.model, ScoreModel | DiffFlow | DDPM):
            return self.model.elbo(value, **self.log_prob_kwargs)
        raise ValueError(f"DiffusionDistribution: {type(self.model).__name__} has no elbo")

    def __repr__(self) -> str:
        """The model's class and size, the sampler and the log density method."""
        return (
            f"DiffusionDistribution({type(self.model).__name__}, dim={self.model.dim}, "
            f"sampler={self.sampler!r}, log_prob={self.log_prob_method!r})"
        )
