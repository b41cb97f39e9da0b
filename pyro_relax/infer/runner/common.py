"""What every run shares: the options of a fit, its result, Pathfinder and the guides' draws.

Nothing here parses arguments or writes files (that is :mod:`pyro_relax.cli`);
each function returns tensors and numbers.
"""

from __future__ import annotations

__all__ = [
    "FitOptions",
    "FitResult",
    "McmcResult",
    "own_param_store",
    "PathfinderGuide",
    "guide_draws",
    "pathfinder_log_p",
    "potential_of",
    "run_pathfinder",
    "to_dtype",
    "with_annealing",
]

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pyro
import torch
from pyro.infer import MCMC
from torch import Tensor

from pyro_relax.infer.draws import elbo_stalled
from pyro_relax.infer.guides import AutoFlowGuide, AutoSNFGuide
from pyro_relax.infer.guides.base import RelaxedGuideMixin, check_num_samples
from pyro_relax.infer.model import Potential


@dataclass(frozen=True)
class FitOptions:
    """The options of one fit, checked by :func:`~pyro_relax.infer.runner.fit_guide`.

    Every guide's fit function takes the model and these; see
    :func:`~pyro_relax.infer.runner.fit_guide` for what each means.
    """

    steps: int = 2000
    lr: float = 1e-2
    seed: int = 0
    num_particles: int = 8
    progress: bool = True
    guide_kwargs: dict[str, Any] = field(default_factory=dict)
    ais_levels: int = 10
    dtype: torch.dtype = torch.float64
    init: str = "pathfinder"
    until_converged: bool = False
    budget: float = 600.0
    average: bool = False

    def but(self, **changes: Any) -> FitOptions:  # noqa: ANN401 - any of the fields
        """A copy with ``changes`` applied."""
        return replace(self, **changes)


@dataclass
class FitResult:
    """What :func:`~pyro_relax.infer.runner.fit_guide` returns.

    ``stages`` lists what ran (Pathfinder, the SVI fit, annealing, ...), each a
    dict with at least ``stage`` and ``seconds``; ``dtype`` is the dtype the
    fit ran in (draws are returned in the caller's default dtype).
    """

    guide: Any
    elbo: list[float]
    seconds: float
    name: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    dtype: torch.dtype = torch.float64
    pathfinder: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """Whether the fit converged: its convergence stop said so, else its ELBO had stalled.

        A stage that stopped on ``until_converged`` records ``converged``; a fit of
        a fixed number of steps is judged by :func:`~pyro_relax.infer.draws.elbo_stalled`.
        Pathfinder alone counts as converged (its L-BFGS paths stop on their own).
        """
        flags = [st["converged"] for st in self.stages if st.get("converged") is not None]
        if flags:
            return all(flags)
        if self.name == "pathfinder" or len(self.elbo) <= 1:
            return True
        return elbo_stalled(self.elbo)


@dataclass
class McmcResult:
    """What :func:`~pyro_relax.infer.runner.run_mcmc` returns."""

    samples: dict[str, Tensor]  # (chains, draws, ...)
    seconds: float
    kernel: str
    extra: dict[str, Any] = field(default_factory=dict)
    mcmc: MCMC | None = None


class PathfinderGuide:
    """Pathfinder's best Gaussian as a guide: draws with their log importance weights.

    Arguments:
        result: a :class:`~pyro_relax.infer.pathfinder.PathfinderResult` of
            :func:`~pyro_relax.infer.pathfinder.pathfinder_for_model`.
        log_p: the model's vectorized unconstrained log density.
    """

    def __init__(self, result: Any, log_p: Callable[[Tensor], Tensor]) -> None:  # noqa: ANN401
        if getattr(result, "constrain", None) is None:
            raise ValueError("PathfinderGuide: expected a result of pathfinder_for_model")
        self.result = result
        self._log_p = log_p

    def importance_weights(self, num_samples: int) -> tuple[dict[str, Tensor], Tensor]:
        """``num_samples`` draws from the Gaussian (constrained) and their log weights."""
        n = check_num_samples(num_samples, "PathfinderGuide.importance_weights")
        z, log_w = self.result.importance_weights(self._log_p, n)
        return self.result.constrain(z), log_w


def run_pathfinder(
    model: Callable[[], Any], seed: int, dtype: torch.dtype, **kwargs: Any  # noqa: ANN401
) -> Any:  # noqa: ANN401 - a PathfinderResult
    """Multi-path Pathfinder on the model or its Potential (4 paths), seeded.

    Raises ``ValueError`` if no path starts at a finite point.
    """
    from pyro_relax.infer.pathfinder import pathfinder_for_model

    device = torch.get_default_device()
    generator = torch.Generator(device=device).manual_seed(seed)
    options = {"num_paths": 4, "num_draws": 200, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the vectorization note: said once below
        return pathfinder_for_model(model, dtype=dtype, generator=generator, **options)


def pathfinder_log_p(model: Callable[[], Any], dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """The model's unconstrained log density, laid out as Pathfinder's (and our guides') latent."""
    return Potential(model, dtype=dtype).log_density


@contextmanager
def own_param_store() -> Iterator[None]:
    """Run a fit in a parameter store of its own: the user's ``pyro.param`` values are untouched.

    The fitted guides keep their parameters as module attributes, so they work
    after the block too.

    Example:
        >>> _ = pyro.param("mine", torch.tensor(1.0))
        >>> with own_param_store():
        ...     _ = pyro.param("theirs", torch.tensor(2.0))
        >>> "mine" in pyro.get_param_store(), "theirs" in pyro.get_param_store()
        (True, False)
    """
    with pyro.get_param_store().scope():
        yield


def potential_of(guide: Any, model: Callable[..., Any], args: tuple = ()) -> Potential:  # noqa: ANN401
    """The potential of a set-up guide: its own (ours), else one built in its parameters' dtype."""
    if isinstance(guide, RelaxedGuideMixin):
        return guide.potential.bind(tuple(args), {}) if args else guide.potential
    params = [p for p in guide.parameters() if p.is_floating_point()]
    dtype = params[0].dtype if params else torch.get_default_dtype()
    return Potential(model, tuple(args), dtype=dtype)


def with_annealing(fit: FitResult, levels: int, owner: str) -> FitResult:
    """A fitted flow guide followed by ``levels`` annealed HMC levels (its time added).

    The guide is :meth:`~pyro_relax.infer.guides.AutoSNFGuide.from_flow_guide`
    of the fit's flow guide; the result is named ``"flow-ais"``.

    Raises:
        ValueError: if the fit's guide is not an :class:`~pyro_relax.infer.guides.AutoFlowGuide`.
    """
    if not isinstance(fit.guide, AutoFlowGuide):
        raise ValueError(f"{owner} needs a flow guide, got {fit.name!r}")
    start = time.perf_counter()
    ais = AutoSNFGuide.from_flow_guide(fit.guide, levels=levels)
    seconds = time.perf_counter() - start
    stages = fit.stages + [{"stage": f"ais ({levels} levels)", "seconds": seconds}]
    return FitResult(ais, fit.elbo, fit.seconds + seconds, "flow-ais", stages, fit.dtype,
                     fit.pathfinder)


@torch.no_grad()
def guide_draws(
    fit: FitResult, model: Callable[..., Any], num_samples: int, model_args: tuple[Any, ...] = ()
) -> tuple[dict[str, Tensor], Tensor]:
    """Posterior draws of the latent sites and their log importance weights.

    ``model_args`` are the model's arguments (none for a zero-argument model),
    e.g. all indices and the data of a model fitted on subsamples.

    Runs in the fit's dtype, in one batched pass of the model (plate, ``vmap``
    or loop, as in fitting); the draws come back in the caller's default dtype,
    the log weights in float64. Every guide's weights are
    ``log p(x, z) - log q(z)`` (path weights for the stochastic guides), so
    ``E[exp(log_w)] = p(x)``.

    Example (a short fit through the runner, then 5 weighted draws):
        >>> import pyro, pyro.distributions as dist
        >>> from pyro_relax.infer.runner import fit_guide
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> fit = fit_guide(model, "normal", steps=3, progress=False)
        >>> samples, log_w = guide_draws(fit, model, 5)
        >>> samples["x"].shape, log_w.dtype
        (torch.Size([5]), torch.float64)
    """
    n = check_num_samples(num_samples, "guide_draws")
    out_dtype = torch.get_default_dtype()
    guide = fit.guide
    if hasattr(guide, "importance_weights"):
        samples, log_w = guide.importance_weights(n, *model_args)
    else:
        post = guide.get_posterior()
        z = post.sample(torch.Size([n]))
        potential = potential_of(guide, model, tuple(model_args))
        log_w = potential.log_density(z) - post.log_prob(z).to(potential.dtype)
        samples = potential.constrain(z)
    return to_dtype(samples, out_dtype), log_w.to(torch.float64)


def to_dtype(samples: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """The floating tensors of ``samples`` converted to ``dtype`` (the others as they are)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in samples.items()}
