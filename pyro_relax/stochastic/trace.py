"""What a run of an SNF block returns besides its output, and the trace that collects it.

Blocks keep no record of their runs: a run's acceptance and first non-finite
step are a :class:`BlockInfo`, returned by
:meth:`~pyro_relax.stochastic.block.AnnealedBlock.decode_with_info`. Code
that runs blocks through a loop it does not control (a flow's sampling)
collects the infos, and hands the blocks their display names, with
:func:`trace_blocks`: the trace lives with the caller, not on the modules.
"""

from __future__ import annotations

__all__ = ["BlockInfo", "BlockTrace", "current_trace", "trace_blocks"]

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from pyro_relax.stochastic.block import AnnealedBlock


class BlockInfo(NamedTuple):
    """What one run of a block returns besides its output and path weight.

    Attributes:
        acceptance_rate: mean of the accept indicators over the steps and the
            batch (0-dim), ``None`` for an unadjusted block.
        acceptance_probability: mean of ``min(1, exp(log r))`` (0-dim, lower
            variance than the rate), ``None`` for an unadjusted block.
        bad_step: the first step (1-based) whose output or weight was NaN or
            inf, 0 if none (0-dim long tensor; reading it synchronizes).
    """

    acceptance_rate: Tensor | None
    acceptance_probability: Tensor | None
    bad_step: Tensor


class BlockTrace:
    """Collects the :class:`BlockInfo` of every block run while it is active.

    Made by :func:`trace_blocks`. It also hands the blocks their display names
    (``labels``, in the order the blocks run; by default the class name), used
    in their error messages. A trace opened inside another one forwards its
    records to it.

    Attributes:
        entries: ``(block, label, info)`` for each run, in order.
    """

    def __init__(
        self, labels: Sequence[str] | None = None, parent: BlockTrace | None = None
    ) -> None:
        self.labels = list(labels or ())
        self.parent = parent
        self.entries: list[tuple[AnnealedBlock, str, BlockInfo]] = []
        self.started = 0

    def label(self, block: AnnealedBlock) -> str:
        """The display name of the next block to run (consumes one label)."""
        if self.parent is not None and not self.labels:
            return self.parent.label(block)
        i = self.started
        self.started += 1
        return self.labels[i] if i < len(self.labels) else type(block).__name__

    def record(self, block: AnnealedBlock, label: str, info: BlockInfo) -> None:
        """Add one run (and forward it to the enclosing trace)."""
        self.entries.append((block, label, info))
        if self.parent is not None:
            self.parent.record(block, label, info)

    def infos_of(self, block: AnnealedBlock) -> list[BlockInfo]:
        """The infos of the runs of ``block`` (by identity)."""
        return [info for b, _, info in self.entries if b is block]

    def raise_if_nonfinite(self) -> None:
        """Raise the first recorded non-finite step (one host synchronization for all)."""
        if not self.entries:
            return
        device = self.entries[0][2].bad_step.device
        if device.type == "meta":
            return
        flags = torch.stack([info.bad_step.reshape(()).to(device) for _, _, info in self.entries])
        for (block, label, info), bad in zip(self.entries, flags.tolist(), strict=True):
            if bad:
                block.raise_if_nonfinite(info, label)


_ACTIVE: ContextVar[BlockTrace | None] = ContextVar("pyro_relax_block_trace", default=None)


def current_trace() -> BlockTrace | None:
    """The innermost active :class:`BlockTrace`, or ``None`` outside :func:`trace_blocks`.

    Example:
        >>> current_trace() is None
        True
    """
    return _ACTIVE.get()


@contextmanager
def trace_blocks(labels: Sequence[str] | None = None) -> Iterator[BlockTrace]:
    """Collect the infos of the blocks run inside the ``with`` body.

    Arguments:
        labels: display names of the blocks in the order they run (optional).

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.langevin import MALABlock
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> block = MALABlock(standard_normal_log_prob, step_size=0.5)
        >>> with trace_blocks(["first"]) as trace:
        ...     _ = block.decode(torch.randn(4, 2))
        >>> [(label, info.bad_step.item()) for _, label, info in trace.entries]
        [('first', 0)]
    """
    trace = BlockTrace(labels, parent=_ACTIVE.get())
    token = _ACTIVE.set(trace)
    try:
        yield trace
    finally:
        _ACTIVE.reset(token)
