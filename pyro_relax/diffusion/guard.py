"""Cheap NaN/inf guards for the diffusion samplers, likelihoods and losses.

A sampler loop calls :meth:`StepGuard.watch` once per step on the network's
output (one ``torch.isfinite(...).all()``, kept on the device) and
:meth:`StepGuard.check` once at the end: a single host synchronization that
raises a ``FloatingPointError`` naming the first bad step and its time. With
:func:`pyro_relax.validation` off, nothing is recorded or checked.
"""

from __future__ import annotations

__all__ = [
    "StepGuard",
    "check_finite_result",
    "check_model_dtype",
    "check_network",
    "model_dtype",
    "module_anchor",
    "network_output",
]

import itertools

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_size
from pyro_relax.core.switch import validation_enabled


class StepGuard:
    """Record per-step finiteness flags on the device; raise once, at the end, naming the step.

    Arguments:
        name: the entry point the user called (starts every message).

    Example:
        >>> import torch
        >>> guard = StepGuard("my_sampler")
        >>> guard.watch(torch.ones(3), 1, 0.5, "the score")
        >>> guard.watch(torch.tensor([float("nan")]), 2, 0.25, "the score")
        >>> try:
        ...     guard.check()
        ... except FloatingPointError as err:
        ...     print(str(err).split(" (expected")[0])
        my_sampler: the score became NaN or inf at step 2 (t=0.25)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = validation_enabled()
        self._flags: list[Tensor] = []
        self._labels: list[tuple[int, float | Tensor, str]] = []

    def watch(self, value: Tensor, step: int, t: float | Tensor, what: str) -> None:
        """Record whether ``value`` is finite at ``step`` (time ``t``); no synchronization.

        Arguments:
            value: the tensor to watch (a score, a drift, a sample).
            step: the step number shown in the message (counted from 1).
            t: the time of the step (a float or a 0-dim tensor, read only on failure).
            what: what ``value`` is, e.g. ``"the score"``.
        """
        if not self.enabled or value.device.type == "meta":
            return
        self._flags.append(torch.isfinite(value).all())
        self._labels.append((step, t, what))

    def first_bad(self) -> int | None:
        """The index of the first non-finite record, or ``None`` (one synchronization)."""
        if not self._flags:
            return None
        flags = torch.stack([f.to(self._flags[0].device) for f in self._flags])
        bad = (~flags).nonzero()
        return int(bad[0, 0]) if bad.numel() else None

    def check(self, hint: str = "") -> None:
        """Raise ``FloatingPointError`` if a watched value was NaN or inf.

        Arguments:
            hint: appended to the message (what the user may change).

        Raises:
            FloatingPointError: naming the entry point, the first bad step and its time.
        """
        i = self.first_bad()
        self._flags, labels = [], self._labels
        self._labels = []
        if i is None:
            return
        step, t, what = labels[i]
        t_val = float(t.detach().reshape(-1)[0]) if isinstance(t, Tensor) else float(t)
        raise FloatingPointError(
            f"{self.name}: {what} became NaN or inf at step {step} (t={t_val:.4g}) "
            f"(expected finite network outputs along the path"
            f"{'; ' + hint if hint else ''})"
        )


def check_finite_result(value: Tensor, name: str, what: str) -> Tensor:
    """Return ``value``, or raise ``FloatingPointError`` if it holds NaN or inf (validation on).

    Arguments:
        value: a loss, bound or log density.
        name: the entry point.
        what: what ``value`` is, e.g. ``"the loss"``.

    Returns:
        ``value`` unchanged.

    Raises:
        FloatingPointError: if ``value`` is not finite.

    Example:
        >>> import torch
        >>> float(check_finite_result(torch.tensor(1.0), "f", "the loss"))
        1.0
    """
    if validation_enabled() and value.device.type != "meta" and value.numel():
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            n_bad = int((~finite).sum())
            raise FloatingPointError(
                f"{name}: {what} is NaN or inf ({n_bad} of {value.numel()} entries; expected "
                f"finite network outputs: check the network and its inputs)"
            )
    return value


def check_model_dtype(x: object, dtype: torch.dtype | None, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` is a floating tensor in the model's ``dtype``.

    Arguments:
        x: the input.
        dtype: the dtype of the model's parameters (``None``: any floating dtype).
        name: the entry point.

    Raises:
        TypeError: for a non-tensor, an integer, bool or complex tensor, or another float dtype.

    Example:
        >>> import torch
        >>> check_model_dtype(torch.zeros(2), torch.float32, "f")
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype} (convert with .float())"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name}: expected {dtype} input (the dtype of the model), got {x.dtype}; "
            f"convert the input or the model with .to(dtype)"
        )


def model_dtype(module: nn.Module) -> torch.dtype | None:
    """The floating dtype of a module's first floating parameter or buffer (``None`` if none).

    Example:
        >>> import torch
        >>> model_dtype(torch.nn.Linear(2, 2).double())
        torch.float64
    """
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def module_anchor(module: nn.Module) -> Tensor:
    """A tensor with the device and dtype of ``module`` (its first parameter or buffer).

    A module without any gives an empty float tensor of the default dtype on the CPU.

    Example:
        >>> import torch
        >>> module_anchor(torch.nn.Linear(2, 2).double()).dtype
        torch.float64
    """
    ref = next(itertools.chain(module.parameters(), module.buffers()), None)
    return ref if ref is not None else torch.empty(())


def network_output(network: nn.Module, x: Tensor, t: Tensor, name: str) -> Tensor:
    """``network(x, t)``, checked to have the shape of ``x``.

    Arguments:
        network: a network ``(x, t) -> tensor shaped like x``.
        x: the input of shape ``batch_shape + (dim,)``.
        t: the time (or scaled step) argument.
        name: the model, for the message.

    Raises:
        ValueError: the output has another shape.

    Example:
        >>> import torch
        >>> from pyro_relax.nn.score import ScoreMLP
        >>> network_output(ScoreMLP(2, hidden=(4,)), torch.zeros(3, 2), torch.zeros(3), "f").shape
        torch.Size([3, 2])
    """
    out = network(x, t)
    if out.shape != x.shape:
        raise ValueError(
            f"{name}: expected the network to return shape {tuple(x.shape)}, got {tuple(out.shape)}"
        )
    return out


def check_network(network: object, dim: int | None, name: str) -> int:
    """Check a model's ``network`` and return its event size ``dim`` (default ``network.dim``).

    Arguments:
        network: the model's network, an ``nn.Module``.
        dim: the event size, or ``None`` to take the network's ``dim`` attribute.
        name: the model, for the messages.

    Returns:
        the event size.

    Raises:
        TypeError: ``network`` is not an ``nn.Module``.
        ValueError: no positive int ``dim``, or one that disagrees with ``network.dim``.

    Example:
        >>> from pyro_relax.nn.score import ScoreMLP
        >>> check_network(ScoreMLP(3, hidden=(4,)), None, "demo")
        3
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"{name}: expected an nn.Module network, got {type(network).__name__}")
    net_dim = getattr(network, "dim", None)
    dim = net_dim if dim is None else dim
    dim = check_size(dim, "dim", name)
    if isinstance(net_dim, int) and net_dim != dim:
        raise ValueError(
            f"{name}: expected a network of dimension {dim}, got one of dimension {net_dim}"
        )
    return dim
