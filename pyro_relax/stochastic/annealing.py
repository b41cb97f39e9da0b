r"""Intermediate (annealed) densities, annealing schedules, and the base class of SNF blocks.

Every stochastic block of a stochastic normalizing flow (Wu, Koehler and Noe
2020) targets an intermediate density

.. math::
    \log \pi_\lambda(x) = (1 - \lambda) \log p_{base}(x) + \lambda \log p_{target}(x),

with ``lambda`` in ``[0, 1]`` fixed, learnable (sigmoid-parametrized) or taken
from a shared :class:`LearnedSchedule`. :class:`AnnealedBlock` holds that
density and the loop over steps that all blocks share.

Sign conventions (``DESIGN.md``, ``surjections/base.py``): a block's
:meth:`~AnnealedBlock.decode` is a step in the sampling direction (base to
data) and returns ``(y, Delta S)`` with
``Delta S = log q_backward(x | y) - log q_forward(y | x)``: the base class's
``S``. Its :meth:`~AnnealedBlock.encode` runs the backward kernel from the data
side and returns ``(z, V)`` with ``V = log p(x | z) - log q(z | x) = -Delta S``
of the pair ``(z, x)``. The blocks here use the same kernel in both
directions (MH and HMC are reversible; the Langevin kernels are their own
backward kernels), so in both directions the contribution is
``log K(input | output) - log K(output | input)`` of the draw just made, and
``_encode`` and ``_decode`` are one function.
"""

from __future__ import annotations

__all__ = [
    "AnnealedBlock",
    "AnnealedDensity",
    "BlockState",
    "LearnedSchedule",
    "ScheduleEntry",
    "check_log_density_output",
    "geometric_schedule",
    "linear_schedule",
    "standard_normal_log_prob",
]

import math
import numbers
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from pyro_relax.core import RelaxedLayer, sum_event
from pyro_relax.core.switch import validation, validation_enabled

LogDensity = Callable[[Tensor], Tensor] | nn.Module | Distribution


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """``log N(x; 0, I)`` summed over the last dimension (a ready-made annealing base).

    Example:
        >>> import torch
        >>> round(float(standard_normal_log_prob(torch.zeros(2))), 4)
        -1.8379
    """
    return -0.5 * (x.square().sum(-1) + x.shape[-1] * math.log(2 * math.pi))


def check_log_density_output(
    lp: object, batch_shape: torch.Size | tuple[int, ...], name: str, what: str = "target"
) -> Tensor:
    """Return ``lp`` if it is a floating tensor of shape ``batch_shape``, else raise.

    A log density maps ``batch + event`` to ``batch``; one that sums over the
    batch (a scalar) or keeps the event dimensions would broadcast into wrong
    log weights without a word. The check reads shapes only (no synchronization).

    Arguments:
        lp: what the log density returned.
        batch_shape: the batch shape of its input.
        name: the entry point named in the message.
        what: which density (``"target"``, ``"base"``).

    Returns:
        ``lp`` unchanged.

    Raises:
        TypeError: if ``lp`` is not a floating-point tensor.
        ValueError: if its shape is not ``batch_shape``.

    Example:
        >>> import torch
        >>> check_log_density_output(torch.zeros(3), (3,), "f").shape
        torch.Size([3])
    """
    if not isinstance(lp, Tensor) or not (lp.is_floating_point() or lp.is_complex()):
        got = f"dtype {lp.dtype}" if isinstance(lp, Tensor) else type(lp).__name__
        raise TypeError(
            f"{name}: expected the {what} log density to return a floating-point tensor, got {got}"
        )
    if lp.shape != torch.Size(batch_shape):
        raise ValueError(
            f"{name}: expected the {what} log density to return the batch shape "
            f"{tuple(batch_shape)}, got {tuple(lp.shape)} (it must map batch + event to batch: "
            f"sum over the event dimensions only, never over the batch)"
        )
    return lp


def _check_lambda(value: object, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: expected lam as a float in [0, 1], got {type(value).__name__}")
    lam = float(value)
    if not 0.0 <= lam <= 1.0:  # also rejects NaN
        raise ValueError(f"{owner}: expected lam in [0, 1], got {value!r}")
    return lam


def linear_schedule(n: int) -> list[float]:
    """``lambda_k = k / n`` for ``k = 1..n`` (the last block targets the target).

    Example:
        >>> linear_schedule(4)
        [0.25, 0.5, 0.75, 1.0]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"linear_schedule: expected an int n >= 1, got {n!r}")
    return [k / n for k in range(1, n + 1)]


def geometric_schedule(n: int, start: float = 1e-3) -> list[float]:
    """``lambda_k = start^((n - k) / (n - 1))``: geometric from ``start`` up to 1.

    Example:
        >>> [round(v, 3) for v in geometric_schedule(3, start=0.01)]
        [0.01, 0.1, 1.0]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"geometric_schedule: expected an int n >= 1, got {n!r}")
    if not isinstance(start, numbers.Real) or not 0.0 < float(start) <= 1.0:
        raise ValueError(f"geometric_schedule: expected start in (0, 1], got {start!r}")
    if n == 1:
        return [1.0]
    return [float(start) ** ((n - k) / (n - 1)) for k in range(1, n + 1)]


class LearnedSchedule(nn.Module):
    r"""``n`` increasing lambdas in ``(0, 1]`` learned through a softmax of increments.

    ``lambda_k = sum_{j <= k} softmax(a)_j``; with ``end_at_one`` the last one is
    exactly 1 (the last block targets the target), otherwise there is one
    slack increment and all ``n`` lambdas lie in ``(0, 1)``. Give block ``k``
    the module :meth:`entry` ``(k)``: all entries share these parameters.

    Arguments:
        n: number of lambdas.
        end_at_one: whether ``lambda_n = 1``.
        init: initial lambdas (increasing, in ``(0, 1]``); evenly spaced by default.

    Example:
        >>> s = LearnedSchedule(4)
        >>> [round(v, 2) for v in s().tolist()]
        [0.25, 0.5, 0.75, 1.0]
    """

    def __init__(self, n: int, end_at_one: bool = True, init: list[float] | None = None) -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"LearnedSchedule: expected an int n >= 1, got {n!r}")
        if init is None:
            init = linear_schedule(n) if end_at_one else linear_schedule(n + 1)[:n]
        lams = [float(v) for v in init]
        if len(lams) != n:
            raise ValueError(f"LearnedSchedule: expected {n} initial lambdas, got {len(lams)}")
        if end_at_one and lams[-1] != 1.0:
            raise ValueError(f"LearnedSchedule: end_at_one needs init ending at 1, got {lams[-1]}")
        if not end_at_one:
            lams = lams + [1.0]
        inc = torch.tensor(lams, dtype=torch.float64).diff(
            prepend=torch.zeros(1, dtype=torch.float64)
        )
        if not bool((inc > 0).all()) or lams[-1] > 1.0:
            raise ValueError(f"LearnedSchedule: expected increasing lambdas in (0, 1], got {lams}")
        self.n = n
        self.end_at_one = end_at_one
        self.logits = nn.Parameter(inc.log().to(torch.get_default_dtype()))

    def forward(self) -> Tensor:
        """The ``n`` lambdas as a tensor (device and dtype of the parameters)."""
        return self.logits.softmax(-1).cumsum(-1)[: self.n]

    def entry(self, k: int) -> ScheduleEntry:
        """A module returning ``lambda_k`` (0-based), to hand to block ``k``."""
        if not isinstance(k, int) or not 0 <= k < self.n:
            raise ValueError(f"LearnedSchedule.entry: expected 0 <= k < {self.n}, got {k!r}")
        return ScheduleEntry(self, k)


class ScheduleEntry(nn.Module):
    """One lambda of a :class:`LearnedSchedule` (shares its parameters).

    Example:
        >>> entry = LearnedSchedule(2).entry(0)
        >>> round(float(entry().detach()), 2)
        0.5
    """

    def __init__(self, schedule: LearnedSchedule, k: int) -> None:
        super().__init__()
        self.schedule = schedule
        self.k = k

    def forward(self) -> Tensor:
        """``lambda_k`` as a 0-dim tensor."""
        return self.schedule()[self.k]

    def extra_repr(self) -> str:
        return f"k={self.k}"


class AnnealedDensity(nn.Module):
    r"""``log pi_lambda(x) = (1 - lambda) log p_base(x) + lambda log p_target(x)``.

    Log densities may be modules with ``log_prob`` (a
    :class:`~pyro_relax.targets.Target`), other modules (called), torch
    distributions (``log_prob``, not moved by ``.to``) or plain callables; each
    maps ``batch + event`` to ``batch``. Modules are registered as submodules,
    so they follow ``.to(device)`` and ``.double()``.

    Arguments:
        target: the target log density (unnormalized is fine).
        base: the base log density; needed unless ``lam`` is 1.
        lam: a float in ``[0, 1]`` or a module returning a 0-dim tensor
            (a :class:`ScheduleEntry`).
        learn_lam: learn a float ``lam`` (sigmoid-parametrized; start in ``(0, 1)``).
        event_dim: the event dimensions of ``x``; each density must return the
            batch shape ``x.shape[:-event_dim]`` (a ``ValueError`` otherwise).

    Example:
        >>> import torch
        >>> d = AnnealedDensity(lambda x: -x.sum(-1), standard_normal_log_prob, lam=0.5)
        >>> d(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        lam: float | nn.Module = 1.0,
        learn_lam: bool = False,
        event_dim: int = 1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(event_dim, bool) or not isinstance(event_dim, int) or event_dim < 0:
            raise ValueError(f"{owner}: expected an int event_dim >= 0, got {event_dim!r}")
        self.event_dim = event_dim
        self._target_fn = self._attach("target", target, owner)
        self._base_fn = None if base is None else self._attach("base", base, owner)
        self.learn_lam = bool(learn_lam)
        if isinstance(lam, nn.Module):
            self.lam_module = lam
            fixed = None
        else:
            fixed = _check_lambda(lam, owner)
            if learn_lam:
                if not 0.0 < fixed < 1.0:
                    raise ValueError(f"{owner}: a learnable lam must start in (0, 1), got {fixed}")
                self.lam_logit = nn.Parameter(torch.tensor(math.log(fixed / (1.0 - fixed))))
            else:
                self.register_buffer("lam_value", torch.tensor(fixed))
        # With a fixed lambda of 1 the base is never evaluated.
        self._target_only = fixed == 1.0 and not learn_lam
        if base is None and not self._target_only:
            raise ValueError(
                f"{owner}: lam other than a fixed 1.0 needs a base log density, got none"
            )

    def _attach(self, name: str, fn: object, owner: str) -> Callable[[Tensor], Tensor]:
        if isinstance(fn, nn.Module):
            self.add_module(name, fn)
            return getattr(fn, "log_prob", fn)
        if isinstance(fn, Distribution):
            return fn.log_prob
        if callable(fn):
            return fn  # type: ignore[return-value]
        raise TypeError(
            f"{owner}: expected a callable log density for {name}, got {type(fn).__name__}"
        )

    def lam(self) -> Tensor:
        """The current lambda as a 0-dim tensor."""
        if "lam_module" in self._modules:
            return self.lam_module()
        if self.learn_lam:
            return torch.sigmoid(self.lam_logit)
        return self.lam_value

    def forward(self, x: Tensor) -> Tensor:
        """``log pi_lambda(x)`` of shape ``batch`` (no value checks: used inside steps).

        The shapes of the densities' outputs are checked (free: no synchronization).
        """
        batch = x.shape[: x.dim() - self.event_dim]
        owner = type(self).__name__
        lp_target = check_log_density_output(self._target_fn(x), batch, owner)
        if self._base_fn is None or self._target_only:
            return lp_target
        lam = self.lam().to(dtype=lp_target.dtype)
        lp_base = check_log_density_output(self._base_fn(x), batch, owner, "base")
        return lam * lp_target + (1.0 - lam) * lp_base

    def extra_repr(self) -> str:
        kind = (
            "module" if "lam_module" in self._modules else "learned" if self.learn_lam else "fixed"
        )
        return f"lam={kind}, base={'none' if self._base_fn is None else 'given'}"


@dataclass
class BlockState:
    """The state carried between the steps of a block.

    Holds the position, the cached log density and gradient at it (``None`` until
    computed), and, for underdamped Langevin, the velocity.

    Example:
        >>> import torch
        >>> BlockState(torch.zeros(2)).lp is None
        True
    """

    x: Tensor
    lp: Tensor | None = None
    grad: Tensor | None = None
    v: Tensor | None = None


class AnnealedBlock(RelaxedLayer):
    r"""Base class of the SNF blocks: ``n_steps`` steps of a kernel targeting ``pi_lambda``.

    A subclass implements :meth:`_step` (one step from a :class:`BlockState`,
    returning the new state, the step's ``Delta S`` of shape ``batch`` and the
    acceptance indicator or ``None``); it may override :meth:`_start` and
    :meth:`_finish` (augmented variables). The loop never synchronizes with the
    host: it records the first step that produced a non-finite value in
    :attr:`last_bad_step` (a tensor, 0 if none) and the mean acceptance in
    :attr:`last_acceptance`; the public :meth:`encode`/:meth:`decode` (with
    validation on) and :class:`~pyro_relax.stochastic.snf.StochasticNormalizingFlow`
    check them once per call and raise a ``ValueError`` naming the block and the
    step. An exception raised by the log density inside a step is re-raised
    naming the block and the step: a ``ValueError`` or ``TypeError`` (a wrong
    output shape, an input check) as the same type, anything else as a
    ``RuntimeError``.

    Positive hyperparameters (step sizes, masses, frictions) are stored as logs
    (learnable or buffers) and read with :meth:`positive`.

    Arguments:
        target: the target log density (see :class:`AnnealedDensity`).
        base: the base log density of the annealing path (needed unless ``lam`` is 1).
        lam: the annealing parameter (float in ``[0, 1]`` or a schedule entry).
        learn_lam: learn ``lam``.
        n_steps: number of kernel steps in the block.
        event_dim: event dimensions of the data side.
    """

    stochastic_forward = True
    stochastic_inverse = True
    exact = False
    reparametrized = True

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        lam: float | nn.Module = 1.0,
        learn_lam: bool = False,
        n_steps: int = 1,
        event_dim: int = 1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"{owner}: expected an int n_steps >= 1, got {n_steps!r}")
        if isinstance(event_dim, bool) or not isinstance(event_dim, int) or event_dim < 1:
            raise ValueError(f"{owner}: expected an int event_dim >= 1, got {event_dim!r}")
        try:
            self.density = AnnealedDensity(target, base, lam, learn_lam, event_dim)
        except (ValueError, TypeError) as err:  # name the block the user made
            raise type(err)(f"{owner}: {err}") from None
        self.n_steps = n_steps
        self.event_dim = event_dim
        self.name: str | None = None
        self.last_bad_step: Tensor | None = None
        self.last_acceptance: Tensor | None = None

    # -- parameters ---------------------------------------------------------
    def _register_positive(self, name: str, value: float | Tensor, learnable: bool) -> None:
        owner = type(self).__name__
        if isinstance(value, bool) or not isinstance(value, numbers.Real | Tensor):
            raise TypeError(
                f"{owner}: expected {name} as a float or tensor, got {type(value).__name__}"
            )
        t = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone()
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            shown = float(value) if isinstance(value, numbers.Real) else t.tolist()
            raise ValueError(f"{owner}: expected {name} > 0 (finite), got {shown}")
        if learnable:
            self.register_parameter(f"log_{name}", nn.Parameter(t.log()))
        else:
            self.register_buffer(f"log_{name}", t.log())

    def positive(self, name: str, like: Tensor) -> Tensor:
        """The positive hyperparameter ``name`` in the dtype of ``like``."""
        return getattr(self, f"log_{name}").exp().to(dtype=like.dtype)

    # -- the intermediate density ------------------------------------------
    def log_pi(self, x: Tensor) -> Tensor:
        """``log pi_lambda(x)`` without input checks (none sync inside a step)."""
        with validation(False):
            return self.density(x)

    def log_pi_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``log pi_lambda(x)`` and its gradient in ``x``; differentiable when grad is enabled."""
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            lp = self.log_pi(xg)
            create = outer and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
            if not lp.requires_grad:  # a log density that ignores x
                return lp, torch.zeros_like(x)
            (grad,) = torch.autograd.grad(lp.sum(), xg, create_graph=create, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(x)
        if not create:
            lp = lp.detach()
        return lp, grad

    # -- the loop -------------------------------------------------------------
    def _start(self, x: Tensor) -> BlockState:
        return BlockState(x)

    @abstractmethod
    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, Tensor | None]:
        """One kernel step: ``(new state, Delta S of shape batch, accepted or None)``."""

    def _finish(self, state: BlockState) -> Tensor:
        return state.x

    def _label(self) -> str:
        return type(self).__name__ + (f" ({self.name})" if self.name else "")

    def _run(self, x: Tensor) -> tuple[Tensor, Tensor]:
        batch = x.shape[: x.dim() - self.event_dim]
        delta = x.new_zeros(batch)
        first_bad = torch.zeros((), dtype=torch.long, device=x.device)
        accepted = x.new_zeros(())
        n_acc = 0
        state = self._start(x)
        for k in range(1, self.n_steps + 1):
            try:
                state, d, acc = self._step(state)
            except Exception as err:  # the log density failed: name the block and the step
                # input errors keep their type (a clean ValueError stays one); others wrap
                kind = type(err) if type(err) in (ValueError, TypeError) else RuntimeError
                raise kind(
                    f"{self._label()}: step {k} of {self.n_steps}: the log density raised "
                    f"{type(err).__name__}: {err}"
                ) from err
            delta = delta + d
            finite = torch.isfinite(state.x).all() & torch.isfinite(delta).all()
            first_bad = torch.where((first_bad == 0) & ~finite, k, first_bad)
            if acc is not None:
                accepted = accepted + acc.to(x.dtype).mean()
                n_acc += 1
        y = self._finish(state)
        self.last_bad_step = first_bad.detach()
        self.last_acceptance = (accepted / n_acc).detach() if n_acc else None
        return y, delta

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(x)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(z)

    # -- checked entry points ---------------------------------------------------
    def raise_if_nonfinite(self) -> None:
        """Raise ``ValueError`` if the last call met NaN or inf (one host synchronization)."""
        bad = self.last_bad_step
        if bad is None or bad.device.type == "meta":
            return
        step = int(bad)
        if step:
            raise ValueError(
                f"{self._label()}: step {step} of {self.n_steps} produced NaN or inf "
                f"(expected a finite log density and gradient along the path; "
                f"lower the step size or check the target)"
            )

    def _checked(self, call: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """Run the base class's checked call; the block's own message (step named) comes first."""
        self.last_bad_step = None
        try:
            out = call()
        except ValueError:
            if validation_enabled():
                self.raise_if_nonfinite()
            raise
        if validation_enabled():
            self.raise_if_nonfinite()
        return out

    def encode(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._checked(lambda: super(AnnealedBlock, self).encode(x, context))

    def decode(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._checked(lambda: super(AnnealedBlock, self).decode(z, context))

    def _half_sq_norm(self, t: Tensor, inv_mass: Tensor | float = 1.0) -> Tensor:
        """``sum_event(inv_mass * t^2) / 2`` (a kinetic energy or a squared noise norm)."""
        return 0.5 * sum_event(inv_mass * t.square(), self.event_dim)

    def extra_repr(self) -> str:
        return f"n_steps={self.n_steps}"
