r"""The base class of the SNF blocks, their returned info, and the trace that collects it.

Sign conventions (``DESIGN.md``, :class:`~pyro_relax.core.RelaxedLayer`): a
block's :meth:`~AnnealedBlock.decode` is a step in the sampling direction (base
to data) and returns ``(y, Delta S)`` with
``Delta S = log q_backward(x | y) - log q_forward(y | x)``. Its
:meth:`~AnnealedBlock.encode` runs the backward kernel from the data side and
returns ``(z, V)`` with ``V = -Delta S`` of the pair ``(z, x)``. The blocks use
the same kernel in both directions (MH and HMC are reversible; the Langevin
kernels are their own backward kernels), so ``_encode`` and ``_decode`` are
one function.

Blocks keep no record of their runs. What a run has to tell (the acceptance,
the first step that went non-finite) is *returned* as a
:class:`~pyro_relax.stochastic.trace.BlockInfo` by
:meth:`~AnnealedBlock.decode_with_info` / :meth:`~AnnealedBlock.encode_with_info`;
a caller that runs blocks through code it does not control (a flow's sampling
loop) collects the infos with :func:`~pyro_relax.stochastic.trace.trace_blocks`.
"""

from __future__ import annotations

__all__ = ["AnnealedBlock", "BlockOptions", "BlockState"]

import numbers
from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar, NamedTuple, TypedDict

import torch
from torch import Tensor, nn

from pyro_relax.core import RelaxedLayer
from pyro_relax.core.switch import validation, validation_enabled
from pyro_relax.ops.metropolis import MetropolisInfo
from pyro_relax.stochastic.density import AnnealedDensity, LogDensity, check_count
from pyro_relax.stochastic.trace import BlockInfo, current_trace, trace_blocks


class BlockState(NamedTuple):
    """The state carried between the steps of a block.

    Holds the position, the log density and gradient at it (``None`` until
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


class BlockOptions(TypedDict, total=False):
    """The keyword arguments every block passes on to :class:`AnnealedBlock`.

    Attributes:
        lam: the annealing parameter (float in ``[0, 1]`` or a schedule entry).
        learn_step_size: learn the step size.
        learn_lam: learn ``lam``.
        n_steps: number of kernel steps in the block.
        event_dim: event dimensions of the data side.
    """

    lam: float | nn.Module
    learn_step_size: bool
    learn_lam: bool
    n_steps: int
    event_dim: int


class AnnealedBlock(RelaxedLayer):
    r"""Base class of the SNF blocks: ``n_steps`` steps of a kernel targeting ``pi_lambda``.

    A subclass implements :meth:`_step` (one step from a :class:`BlockState`,
    returning the new state, the step's ``Delta S`` of shape ``batch`` and the
    :class:`~pyro_relax.ops.metropolis.MetropolisInfo` of its accept step or
    ``None``); the math of the steps lives in :mod:`pyro_relax.ops`. It may
    override :meth:`_start` and :meth:`_finish` (augmented variables). The
    loop never synchronizes with the host: it returns the first step that
    produced a non-finite value and the mean acceptance in a :class:`BlockInfo`
    (:meth:`decode_with_info`); the public :meth:`encode`/:meth:`decode` (with
    validation on) raise a ``ValueError`` naming the block and the step. An
    exception raised by the log density inside a step is re-raised naming the
    block and the step: a ``ValueError`` or ``TypeError`` (a wrong output shape,
    an input check) as the same type, anything else as a ``RuntimeError``.

    Positive hyperparameters (step sizes, masses, frictions) are stored as logs
    (learnable or buffers) and read with :meth:`positive`; every block has a
    step size (``log_step_size``).

    Arguments:
        target: the target log density (see
            :class:`~pyro_relax.stochastic.density.AnnealedDensity`).
        base: the base log density of the annealing path (needed unless ``lam`` is 1).
        step_size: the step size ``> 0`` (float or tensor broadcasting to the
            event); ``None`` for the class's ``default_step_size``.
        lam: the annealing parameter (float in ``[0, 1]`` or a schedule entry).
        learn_step_size: learn the step size (log-parametrized).
        learn_lam: learn ``lam``.
        n_steps: number of kernel steps in the block.
        event_dim: event dimensions of the data side.
    """

    stochastic_forward = True
    stochastic_inverse = True
    exact = False
    reparametrized = True
    default_step_size: ClassVar[float] = 0.1

    def __init__(
        self,
        target: LogDensity,
        base: LogDensity | None = None,
        step_size: float | Tensor | None = None,
        lam: float | nn.Module = 1.0,
        learn_step_size: bool = False,
        learn_lam: bool = False,
        n_steps: int = 1,
        event_dim: int = 1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.n_steps = check_count(n_steps, "n_steps", owner, 1)
        self.event_dim = check_count(event_dim, "event_dim", owner, 1)
        try:
            self.density = AnnealedDensity(target, base, lam, learn_lam, event_dim)
        except (ValueError, TypeError) as err:  # name the block the user made
            raise type(err)(f"{owner}: {err}") from None
        step = self.default_step_size if step_size is None else step_size
        self._register_positive("step_size", step, learn_step_size)

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

    def with_gradient(self, state: BlockState) -> BlockState:
        """``state`` with the log density and gradient at its position filled in."""
        if state.grad is not None and state.lp is not None:
            return state
        lp, grad = self.log_pi_and_grad(state.x)
        return BlockState(state.x, lp, grad, state.v)

    # -- the loop -------------------------------------------------------------
    def _start(self, x: Tensor) -> BlockState:
        return BlockState(x)

    @abstractmethod
    def _step(self, state: BlockState) -> tuple[BlockState, Tensor, MetropolisInfo | None]:
        """One kernel step: ``(new state, Delta S of shape batch, accept info or None)``."""

    def _finish(self, state: BlockState) -> Tensor:
        return state.x

    def _run(self, x: Tensor, label: str) -> tuple[Tensor, Tensor, BlockInfo]:
        batch = x.shape[: x.dim() - self.event_dim]
        delta = x.new_zeros(batch)
        first_bad = torch.zeros((), dtype=torch.long, device=x.device)
        rate = prob = x.new_zeros(())
        n_acc = 0
        state = self._start(x)
        for k in range(1, self.n_steps + 1):
            try:
                state, d, mh = self._step(state)
            except Exception as err:  # the log density failed: name the block and the step
                # input errors keep their type (a clean ValueError stays one); others wrap
                kind = type(err) if type(err) in (ValueError, TypeError) else RuntimeError
                raise kind(
                    f"{label}: step {k} of {self.n_steps}: the log density raised "
                    f"{type(err).__name__}: {err}"
                ) from err
            delta = delta + d
            finite = torch.isfinite(state.x).all() & torch.isfinite(delta).all()
            first_bad = torch.where((first_bad == 0) & ~finite, k, first_bad)
            if mh is not None:
                rate = rate + mh.accepted.to(x.dtype).mean()
                prob = prob + mh.acceptance_probability.to(x.dtype).mean()
                n_acc += 1
        info = BlockInfo(
            (rate / n_acc).detach() if n_acc else None,
            (prob / n_acc).detach() if n_acc else None,
            first_bad.detach(),
        )
        return self._finish(state), delta, info

    def _traced_run(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run under the active trace: take a label from it and record the info there."""
        trace = current_trace()
        label = type(self).__name__ if trace is None else trace.label(self)
        y, delta, info = self._run(x, label)
        if trace is not None:
            trace.record(self, label, info)
        return y, delta

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._traced_run(x)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._traced_run(z)

    # -- checked entry points ---------------------------------------------------
    def raise_if_nonfinite(self, info: BlockInfo | None = None, label: str | None = None) -> None:
        """Raise ``ValueError`` if ``info`` reports a non-finite step (one host synchronization).

        Arguments:
            info: the :class:`BlockInfo` of a run; ``None`` checks nothing (blocks
                keep no record of their runs).
            label: the block's display name in the message (default: its class name).
        """
        if info is None or info.bad_step.device.type == "meta":
            return
        step = int(info.bad_step)
        if step:
            raise ValueError(
                f"{label or type(self).__name__}: step {step} of {self.n_steps} produced NaN "
                f"or inf (expected a finite log density and gradient along the path; "
                f"lower the step size or check the target)"
            )

    def _with_info(
        self, call: Callable[[], tuple[Tensor, Tensor]], like: Tensor
    ) -> tuple[Tensor, Tensor, BlockInfo]:
        """Run the base class's checked call in a trace; the block's own message comes first."""
        with trace_blocks() as trace:
            try:
                out, contribution = call()
            except ValueError:
                if validation_enabled():
                    trace.raise_if_nonfinite()
                raise
        if trace.entries:
            _, label, info = trace.entries[-1]
        else:  # an empty batch: nothing ran
            label = type(self).__name__
            info = BlockInfo(None, None, torch.zeros((), dtype=torch.long, device=like.device))
        if validation_enabled():
            self.raise_if_nonfinite(info, label)
        return out, contribution, info

    def encode_with_info(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, BlockInfo]:
        """:meth:`encode` that also returns the run's :class:`BlockInfo`."""
        return self._with_info(lambda: RelaxedLayer.encode(self, x, context), x)

    def decode_with_info(
        self, z: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, BlockInfo]:
        """:meth:`decode` that also returns the run's :class:`BlockInfo`.

        Example:
            >>> import torch
            >>> from pyro_relax.stochastic import RandomWalkMH
            >>> from pyro_relax.stochastic.density import standard_normal_log_prob
            >>> y, delta_s, info = RandomWalkMH(standard_normal_log_prob).decode_with_info(
            ...     torch.randn(8, 2))
            >>> 0.0 <= float(info.acceptance_rate) <= 1.0, int(info.bad_step)
            (True, 0)
        """
        return self._with_info(lambda: RelaxedLayer.decode(self, z, context), z)

    def encode(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to the latent side: ``(z, V)`` (see :class:`~pyro_relax.core.RelaxedLayer`)."""
        return self.encode_with_info(x, context)[:2]

    def decode(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent to the data side: ``(x, S)`` (see :class:`~pyro_relax.core.RelaxedLayer`)."""
        return self.decode_with_info(z, context)[:2]

    def extra_repr(self) -> str:
        """The module's settings, for ``repr``."""
        return f"n_steps={self.n_steps}"
