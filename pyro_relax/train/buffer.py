r"""The prioritized replay buffer of FAB: weighted samples, sampled in proportion to their weights.

FAB (Midgley et al. 2023) stores the AIS samples ``x`` with their log weights
``log w`` (AIS towards ``p^2 / q``) and ``log q(x)`` of the flow that made them.
Sampling is without replacement with probabilities proportional to ``w``, so a
batch is approximately drawn from ``p^2 / q``. When the flow changes from
``q_old`` to ``q_new`` the AIS target ``p^2 / q`` changes with it, and a stored
weight is corrected by the ratio

.. math::
    \log w \leftarrow \log w + \log q_{old}(x) - \log q_{new}(x),

(for alpha = 2: ``(1 - alpha) (log q_new - log q_old)``), with the stored
``log q`` set to ``log q_new``. The buffer has a fixed size; once full, the
oldest entries are evicted first (a ring).
"""

from __future__ import annotations

__all__ = ["PrioritizedBuffer"]

import math
from typing import Any

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int


def _check_size(value: object, name: str, minimum: int) -> int:
    return check_int(value, name, "PrioritizedBuffer", minimum)


class PrioritizedBuffer:
    """A bounded ring of ``(x, log w, log q)`` sampled without replacement in proportion to ``w``.

    Arguments:
        dim: the event size of the samples (``x`` has shape ``(n, dim)``).
        max_size: capacity ``>= 1``; when full, the oldest entries go first.
        min_size: the size below which :meth:`sample` refuses to draw
            (``1 <= min_size <= max_size``).
        device: where the storage lives.
        dtype: the storage's floating dtype.

    Raises:
        ValueError: for a ``max_size`` or ``min_size`` below 1, or ``min_size > max_size``.
        TypeError: for a non-integer size or a non-floating dtype.

    Example:
        >>> import torch
        >>> buf = PrioritizedBuffer(2, max_size=4, min_size=2)
        >>> buf.add(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3))
        3
        >>> x, log_w, log_q, idx = buf.sample(2)
        >>> x.shape, len(buf)
        (torch.Size([2, 2]), 3)
    """

    def __init__(
        self,
        dim: int,
        max_size: int,
        min_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.dim = _check_size(dim, "dim", 1)
        self.max_size = _check_size(max_size, "max_size", 1)
        self.min_size = _check_size(min_size, "min_size", 1)
        if self.min_size > self.max_size:
            raise ValueError(
                f"PrioritizedBuffer: expected min_size <= max_size={self.max_size}, "
                f"got {self.min_size}"
            )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"PrioritizedBuffer: expected a floating dtype, got {dtype!r}")
        self.x = torch.zeros((self.max_size, self.dim), device=device, dtype=dtype)
        self.log_w = torch.full((self.max_size,), -math.inf, device=device, dtype=dtype)
        self.log_q = torch.zeros((self.max_size,), device=device, dtype=dtype)
        self.size = 0
        self.head = 0  # the next slot to write: the oldest entry once full

    def __len__(self) -> int:
        """The number of stored samples."""
        return self.size

    @property
    def ready(self) -> bool:
        """Whether the buffer holds at least ``min_size`` entries."""
        return self.size >= self.min_size

    def add(self, x: Tensor, log_w: Tensor, log_q: Tensor) -> int:
        """Store a batch, skipping entries with non-finite ``x``, ``log q`` or NaN/+inf ``log w``.

        Arguments:
            x: samples ``(n, dim)``.
            log_w: their log weights ``(n,)`` (``-inf`` allowed: never drawn).
            log_q: ``log q(x)`` of the flow that produced them ``(n,)``.

        Returns:
            The number of entries stored.

        Raises:
            ValueError: for shapes other than ``(n, dim)``, ``(n,)``, ``(n,)``.
            TypeError: for non-floating tensors.
        """
        for name, t in (("x", x), ("log_w", log_w), ("log_q", log_q)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                got = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(
                    f"PrioritizedBuffer.add: expected a floating tensor {name}, got {got}"
                )
        n = x.shape[0] if x.dim() == 2 else -1
        if x.dim() != 2 or x.shape[1] != self.dim or log_w.shape != (n,) or log_q.shape != (n,):
            raise ValueError(
                f"PrioritizedBuffer.add: expected x (n, {self.dim}), log_w (n,), log_q (n,), got "
                f"{tuple(x.shape)}, {tuple(log_w.shape)}, {tuple(log_q.shape)}"
            )
        like = {"device": self.x.device, "dtype": self.x.dtype}
        x, log_w, log_q = (t.detach().to(**like) for t in (x, log_w, log_q))
        keep = torch.isfinite(x).all(-1) & torch.isfinite(log_q) & ~torch.isnan(log_w)
        keep &= log_w < math.inf
        x, log_w, log_q = x[keep], log_w[keep], log_q[keep]
        m = x.shape[0]
        if m > self.max_size:  # only the newest max_size survive anyway
            x, log_w, log_q = x[-self.max_size :], log_w[-self.max_size :], log_q[-self.max_size :]
            m = self.max_size
        slots = (self.head + torch.arange(m, device=self.x.device)) % self.max_size
        self.x[slots] = x
        self.log_w[slots] = log_w
        self.log_q[slots] = log_q
        self.head = (self.head + m) % self.max_size
        self.size = min(self.size + m, self.max_size)
        return m

    def probabilities(self) -> Tensor:
        """The drawing probabilities ``w_i / sum w`` of the stored entries (``(len(self),)``).

        Raises:
            ValueError: if the buffer is empty or every stored weight is zero.
        """
        if self.size == 0:
            raise ValueError("PrioritizedBuffer: the buffer is empty (add AIS samples first)")
        log_w = self.log_w[: self.size]
        if not bool(torch.isfinite(log_w).any()):
            raise ValueError("PrioritizedBuffer: every stored weight is zero (all log w = -inf)")
        return torch.softmax(log_w, 0)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Draw ``n`` distinct entries, each pick with probability proportional to its weight.

        Successive sampling without replacement by the Gumbel top-``k`` trick (as FAB's
        reference code): the first pick follows ``w / sum w`` exactly, later picks
        renormalize over what is left. It works on the log weights, so entries whose
        ``w / sum w`` underflows to 0 in floating point are still drawn (after the heavier
        ones) instead of shrinking the batch.

        Arguments:
            n: the batch size, at most the number of entries with positive weight.
            generator: an optional torch generator (on the buffer's device).

        Returns:
            ``(x, log_w, log_q, indices)`` of shapes ``(n, dim)``, ``(n,)``, ``(n,)``, ``(n,)``.

        Raises:
            ValueError: if the buffer holds fewer than ``min_size`` entries, or fewer
                entries of positive weight than ``n``.
        """
        n = _check_size(n, "n", 1)
        if self.size < self.min_size:
            raise ValueError(
                f"PrioritizedBuffer.sample: the buffer holds {self.size} entries, fewer than "
                f"min_size={self.min_size} (fill it with AIS samples before the first step)"
            )
        positive = self.count_positive()
        if n > positive:
            raise ValueError(
                f"PrioritizedBuffer.sample: expected n <= {positive} (entries of positive weight), "
                f"got {n}"
            )
        log_w = self.log_w[: self.size]
        u = torch.rand(log_w.shape, generator=generator, device=log_w.device, dtype=log_w.dtype)
        gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))
        idx = torch.topk(log_w + gumbel, n).indices
        return self.x[idx], self.log_w[idx], self.log_q[idx], idx

    def count_positive(self) -> int:
        """The number of stored entries of positive weight (finite ``log w``)."""
        return int(torch.isfinite(self.log_w[: self.size]).sum())

    def adjust(self, indices: Tensor, log_q_new: Tensor) -> Tensor:
        """Correct stored weights for a changed flow: ``log w += log q_old - log q_new``.

        Arguments:
            indices: entries returned by :meth:`sample`.
            log_q_new: ``log q_new(x)`` at those entries (same shape).

        Returns:
            The log ratios ``log q_old - log q_new`` that were added.

        Raises:
            ValueError: for indices out of range or mismatched shapes.
        """
        if not isinstance(indices, Tensor) or indices.dtype != torch.long or indices.dim() != 1:
            raise ValueError("PrioritizedBuffer.adjust: expected 1-D long indices from sample()")
        if not isinstance(log_q_new, Tensor) or log_q_new.shape != indices.shape:
            got = tuple(log_q_new.shape) if isinstance(log_q_new, Tensor) else type(log_q_new)
            raise ValueError(
                f"PrioritizedBuffer.adjust: expected log_q_new of shape {tuple(indices.shape)}, "
                f"got {got}"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.size):
            raise ValueError(
                f"PrioritizedBuffer.adjust: expected indices in [0, {self.size}), got "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        new = log_q_new.detach().to(self.log_q)
        # a non-finite new log q (the flow broke there) makes the entry weightless
        delta = torch.where(torch.isfinite(new), self.log_q[indices] - new, -math.inf)
        self.log_w[indices] = self.log_w[indices] + delta
        self.log_q[indices] = torch.where(torch.isfinite(new), new, self.log_q[indices])
        return delta

    def clip_top(self, frac: float) -> None:
        """Cap the stored log weights at the largest ``frac`` fraction's smallest value.

        A defence against a few chains that escaped to where ``q`` is far lighter-tailed
        than ``p^2`` (there ``p^2/q`` is not normalizable and a weight is astronomic).
        Not in FAB's reference buffers (fab-torch and fab-jax clip only the loss's
        ratio ``q_old / q``; fab-torch's many-well config sets ``log_w_clip_frac: null``).
        ``frac=0`` does nothing.
        """
        k = int(frac * self.size)
        if k < 1:
            return
        log_w = self.log_w[: self.size]
        cap = torch.topk(log_w, k + 1).values[-1]
        log_w.clamp_(max=cap)

    def state_dict(self) -> dict[str, Any]:
        """The storage, size and write position (tensors and ints: ``weights_only`` loadable)."""
        return {
            "x": self.x.clone(),
            "log_w": self.log_w.clone(),
            "log_q": self.log_q.clone(),
            "size": self.size,
            "head": self.head,
            "max_size": self.max_size,
            "min_size": self.min_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a buffer of the same dimension and capacity.

        Raises:
            ValueError: if a part is missing or the sizes differ.
        """
        parts = {"x", "log_w", "log_q", "size", "head", "max_size", "min_size"}
        if not isinstance(state, dict) or parts - set(state):
            missing = sorted(parts - set(state)) if isinstance(state, dict) else sorted(parts)
            raise ValueError(f"PrioritizedBuffer.load_state_dict: missing {missing}")
        if state["max_size"] != self.max_size or tuple(state["x"].shape) != tuple(self.x.shape):
            raise ValueError(
                f"PrioritizedBuffer.load_state_dict: expected a buffer of shape "
                f"{tuple(self.x.shape)}, got {tuple(state['x'].shape)}"
            )
        size, head = state["size"], state["head"]
        if not (0 <= size <= self.max_size and 0 <= head < self.max_size):
            raise ValueError(
                f"PrioritizedBuffer.load_state_dict: expected 0 <= size <= {self.max_size} and "
                f"0 <= head < {self.max_size}, got size={size}, head={head}"
            )
        self.x.copy_(state["x"])
        self.log_w.copy_(state["log_w"])
        self.log_q.copy_(state["log_q"])
        self.size, self.head = int(size), int(head)
