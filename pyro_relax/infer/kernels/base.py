"""What the package's MCMC kernels share: site packing, argument checks and chain bookkeeping.

:class:`ChainKernel` is the base of :class:`~pyro_relax.infer.kernels.MALA` and
:class:`~pyro_relax.infer.kernels.FlowIMH`. It owns what every
``pyro.infer.MCMC`` kernel repeats: the ``model`` / ``potential_fn`` choice,
``initial_params``, the model setup (``initialize_model``), the warmup
counter and :meth:`~ChainKernel.end_warmup`, the acceptance statistics and
:meth:`~ChainKernel.logging` / :meth:`~ChainKernel.diagnostics`. A subclass
implements :meth:`~ChainKernel.setup` (calling :meth:`~ChainKernel.setup_model`)
and :meth:`~ChainKernel.sample` (calling :meth:`~ChainKernel.record_step`);
the math of a step is in :mod:`pyro_relax.ops`.
"""

from __future__ import annotations

__all__ = [
    "ChainKernel",
    "check_initial_params",
    "check_kernel_float",
    "flatten_params",
    "unflatten_params",
]

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from pyro.infer.autoguide import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from torch import Tensor

PotentialFn = Callable[[dict[str, Tensor]], Tensor]


def check_initial_params(params: object, where: str) -> dict[str, Tensor] | None:
    """Return ``params`` as a dict after checking it maps site names to tensors (or is None).

    Example:
        >>> check_initial_params(None, "MALA") is None
        True
    """
    if params is None:
        return None
    if not isinstance(params, Mapping) or not all(isinstance(v, Tensor) for v in params.values()):
        raise TypeError(f"{where}: expected initial_params to be a dict of tensors, got {params!r}")
    return dict(params)


def check_kernel_float(name: str, value: object, where: str, kind: str = "positive") -> float:
    """Return ``value`` as a float: a finite number ``> 0`` (``kind="positive"``) or in ``(0, 1)``.

    Arguments:
        name: the argument's name, for the message.
        value: the value to check.
        where: the caller, for the message.
        kind: ``"positive"`` or ``"probability"``.

    Returns:
        ``float(value)``.

    Example:
        >>> check_kernel_float("step_size", 0.1, "MALA"), check_kernel_float("p", 0.5, "MALA",
        ...                                                                  "probability")
        (0.1, 0.5)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: expected {name} to be a float, got {type(value).__name__}")
    if kind == "probability":
        if not 0.0 < value < 1.0:
            raise ValueError(f"{where}: expected {name} in (0, 1), got {value!r}")
    elif not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: expected a finite {name} > 0, got {value!r}")
    return float(value)


def flatten_params(params: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    """Concatenate the sites ``names`` of ``params`` (each flattened) into one vector.

    Example:
        >>> flatten_params({"a": torch.zeros(2, 2), "b": torch.ones(())}, ["a", "b"]).shape
        torch.Size([5])
    """
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"flatten_params: expected sites {list(names)}, missing {missing}")
    if not names:
        raise ValueError("flatten_params: expected at least one site, got none")
    return torch.cat([params[n].reshape(-1) for n in names])


def unflatten_params(flat: Tensor, shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """Split a flat vector (last dimension) into sites of the given shapes, in the given order.

    Leading batch dimensions of ``flat`` are kept in front of each site's shape.

    Example:
        >>> out = unflatten_params(torch.zeros(4, 5), {"a": torch.Size([2, 2]), "b": torch.Size()})
        >>> out["a"].shape, out["b"].shape
        (torch.Size([4, 2, 2]), torch.Size([4]))
    """
    total = sum(math.prod(s) for s in shapes.values())
    if flat.dim() < 1 or flat.shape[-1] != total:
        raise ValueError(
            f"unflatten_params: expected a last dimension of size {total}, "
            f"got shape {tuple(flat.shape)}"
        )
    batch = flat.shape[:-1]
    out: dict[str, Tensor] = {}
    pos = 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = flat[..., pos : pos + size].reshape(batch + tuple(shape))
        pos += size
    return out


class ChainKernel(MCMCKernel):
    """Base of the package's kernels for ``pyro.infer.MCMC`` (see the module docstring).

    Arguments:
        model: a Pyro model (exactly one of ``model`` and ``potential_fn``).
        potential_fn: maps a dict of unconstrained values to the potential energy.
        transforms: site transforms to the unconstrained space (as in Pyro's HMC).
        max_plate_nesting: passed to ``initialize_model``.
        init_strategy: passed to ``initialize_model``.
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        potential_fn: PotentialFn | None = None,
        transforms: dict[str, Any] | None = None,
        max_plate_nesting: int | None = None,
        init_strategy: Callable[..., Any] = init_to_uniform,
    ) -> None:
        name = type(self).__name__
        if (model is None) == (potential_fn is None):
            raise ValueError(
                f"{name}: expected exactly one of `model` and `potential_fn`, got "
                + ("neither" if model is None else "both")
            )
        for what, fn in (("model", model), ("potential_fn", potential_fn), ("init", init_strategy)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected {what} to be callable, got {type(fn).__name__}")
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = transforms
        self.max_plate_nesting = max_plate_nesting
        self.init_strategy = init_strategy
        self._initial_params: dict[str, Tensor] | None = None
        self.prototype_trace = None
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        """Forget the chain: counters, statistics, initial parameters (extend, call super)."""
        self._t = 0
        self._warmup_steps = 0
        self._accept_count: Tensor | None = None
        self._mean_accept_prob: Tensor | None = None
        self._initial_params = None

    @property
    def initial_params(self) -> dict[str, Tensor] | None:
        """Unconstrained starting values, keyed by site name."""
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: Mapping[str, Tensor] | None) -> None:
        self._initial_params = check_initial_params(params, type(self).__name__)

    @property
    def in_warmup(self) -> bool:
        """Whether the next step is a warmup step."""
        return self._t < self._warmup_steps

    def setup_model(
        self, warmup_steps: int, args: tuple, kwargs: dict
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor] | None]:
        """Check ``warmup_steps``, reset the counters, find the potential and the transforms.

        With a model, runs ``initialize_model`` (Pyro) and sets ``potential_fn``,
        ``transforms`` and ``prototype_trace``.

        Returns:
            ``(model's initial params or None, user's initial params or None)``.
        """
        name = type(self).__name__
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"{name}.setup: expected warmup_steps >= 0, got {warmup_steps!r}")
        self._warmup_steps = warmup_steps
        self._t = 0
        user = self._initial_params
        if self.model is None:
            if self.transforms is None:
                self.transforms = {}
            return None, user
        params, potential_fn, transforms, trace = initialize_model(
            self.model,
            args,
            kwargs,
            transforms=self.transforms,
            max_plate_nesting=self.max_plate_nesting,
            init_strategy=self.init_strategy,
            initial_params=user,
        )
        self.potential_fn = potential_fn
        self.transforms = transforms
        self.prototype_trace = trace
        return params, user

    def start_statistics(self, like: Tensor) -> None:
        """Zero the acceptance statistics, on the device and in the dtype of ``like``."""
        self._accept_count = torch.zeros((), dtype=torch.long, device=like.device)
        self._mean_accept_prob = torch.zeros((), dtype=like.dtype, device=like.device)

    def record_step(self, accepted: Tensor, accept_prob: Tensor) -> bool:
        """Count one step (no host synchronization); return whether it was a warmup step."""
        warmup = self.in_warmup
        self._t += 1
        if warmup:
            n = self._t
        else:
            n = self._t - self._warmup_steps
            assert self._accept_count is not None
            self._accept_count = self._accept_count + accepted.long()
        assert self._mean_accept_prob is not None
        self._mean_accept_prob = self._mean_accept_prob + (accept_prob - self._mean_accept_prob) / n
        return warmup

    # ------------------------------------------------------------------ MCMCKernel API
    def end_warmup(self) -> None:
        """Count the following steps as samples (adaptation, if any, stops here)."""
        if self._t < self._warmup_steps:
            self._warmup_steps = self._t

    def cleanup(self) -> None:
        """Forget the chain state (the next ``setup`` starts a new chain)."""
        self._reset()

    def extra_statistics(self) -> dict[str, float]:
        """Statistics a subclass adds to the progress bar and the diagnostics (none here)."""
        return {}

    def _mean_prob(self) -> float:
        return float(self._mean_accept_prob) if self._mean_accept_prob is not None else 0.0

    def logging(self) -> OrderedDict[str, str]:
        """The extra statistics and the mean acceptance probability, for the progress bar."""
        items = [(k, f"{v:.2e}") for k, v in self.extra_statistics().items()]
        return OrderedDict([*items, ("acc. prob", f"{self._mean_prob():.3f}")])

    def diagnostics(self) -> dict[str, float]:
        """Acceptance rate over the sampling phase, mean acceptance probability, extras."""
        n = self._t - self._warmup_steps
        count = float(self._accept_count) if self._accept_count is not None else 0.0
        return {
            "acceptance rate": count / n if n > 0 else math.nan,
            "mean accept prob": self._mean_prob(),
            **self.extra_statistics(),
        }
