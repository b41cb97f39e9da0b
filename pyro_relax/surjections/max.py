"""The max of a vector: an inference surjection with a learned decoder for the argmax."""

from __future__ import annotations

__all__ = [
    "MaxSurjection",
    "decode_max",
    "max_contribution",
    "merge_max",
    "sample_index",
    "split_max",
]

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pyro_relax.core.checks import check_size
from pyro_relax.core.layer import VectorLayer, append_context
from pyro_relax.nn.mlp import MLP


def split_max(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split the last dimension into ``(max, log gaps of the others, argmax)``.

    Returns ``m`` of shape ``batch + (1,)``, ``g = log(m - r)`` of shape
    ``batch + (D - 1,)`` for the other entries ``r`` in their original relative
    order, and the argmax ``k`` of shape ``batch + (1,)``.

    Example:
        >>> import torch
        >>> m, g, k = split_max(torch.tensor([0.0, 2.0, 1.0]))
        >>> m, g.exp(), k
        (tensor([2.]), tensor([2., 1.]), tensor([1]))
    """
    d = x.shape[-1]
    m, k = torch.max(x, dim=-1, keepdim=True)
    j = torch.arange(d - 1, device=x.device)
    others = j + (j >= k).long()  # the indices of x without k, in order
    r = torch.gather(x, -1, others)
    return m, torch.log(m - r), k


def merge_max(m: Tensor, g: Tensor, k: Tensor) -> Tensor:
    """Inverse of :func:`split_max` for a given argmax ``k``: put ``m`` back at ``k``.

    Example:
        >>> import torch
        >>> x = torch.tensor([0.0, 2.0, 1.0])
        >>> merge_max(*split_max(x))
        tensor([0., 2., 1.])
    """
    d = g.shape[-1] + 1
    src = torch.cat([m, m - torch.exp(g)], dim=-1)  # (m, r_0, ..., r_{D-2})
    i = torch.arange(d, device=g.device)
    # position i < k holds r_i (src index i + 1), i == k holds m (src index 0),
    # i > k holds r_{i-1} (src index i).
    index = torch.where(i == k, 0, torch.where(i < k, i + 1, i))
    return torch.gather(src, -1, index)


def sample_index(log_probs: Tensor) -> Tensor:
    """One draw of a categorical per row by the Gumbel-max trick (keeps the last dim as 1).

    Example:
        >>> import torch
        >>> sample_index(torch.tensor([[0.0, -float("inf")]]))
        tensor([[0]])
    """
    u = torch.rand_like(log_probs).clamp_min(torch.finfo(log_probs.dtype).tiny)
    return torch.argmax(log_probs - torch.log(-torch.log(u)), dim=-1, keepdim=True)


def max_contribution(log_probs: Tensor, k: Tensor, g: Tensor) -> Tensor:
    """``log p(k | z) - sum_j g_j``: the contribution of the max surjection, per row.

    Arguments:
        log_probs: ``log p(position | z)``, shape ``batch + (D,)``.
        k: the position of the maximum, ``batch + (1,)`` (broadcast to ``log_probs``).
        g: the log gaps, ``batch + (D - 1,)``.

    Example:
        >>> import math, torch
        >>> lp = torch.full((3,), -math.log(3))
        >>> round(float(max_contribution(lp, torch.tensor([1]), torch.zeros(2))), 4)
        -1.0986
    """
    k = k.expand(log_probs.shape[:-1] + (1,))
    return torch.gather(log_probs, -1, k).squeeze(-1) - g.sum(-1)


def decode_max(log_probs: Tensor, m: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Draw the position of the maximum and rebuild the rows; return ``(x, V)``.

    Arguments:
        log_probs: ``log p(position | z)``, shape ``batch + (D,)``.
        m: the maxima, ``batch + (1,)``.
        g: the log gaps, ``batch + (D - 1,)``.

    Returns:
        the rows ``x`` (``batch + (D,)``) and the contribution ``V`` of the
        pair (``batch``); the decoder's path weight is ``-V``.

    Example:
        >>> import torch
        >>> x, v = decode_max(torch.zeros(2), torch.tensor([1.0]), torch.zeros(1))
        >>> sorted(x.tolist()), float(v)
        ([0.0, 1.0], 0.0)
    """
    k = sample_index(log_probs.detach())
    return merge_max(m, g, k), max_contribution(log_probs, k, g)


class MaxSurjection(VectorLayer):
    r"""Max surjection with a learned decoder for the rest: ``x -> (max, log gaps)``.

    For ``x`` in ``R^D`` with argmax ``k`` and maximum ``m = x_k``, ``encode``
    gives ``z = (m, log(m - r_1), ..., log(m - r_{D-1}))`` where ``r`` are the
    other entries in their original relative order. The map forgets only ``k``:
    every ``z`` in ``R^D`` has exactly ``D`` preimages, one per position of the
    maximum, so the latent side is all of ``R^D`` and any flow can sit under it.
    On the piece where the argmax is ``k`` the map is a bijection with
    ``log|det dz/dx| = -sum_j log(m - r_j)``, and decoding draws ``k`` from
    ``p(k | z)``, so the exact contribution (Nielsen et al. 2020) is

    .. math:: V = \log p(k \mid z) - \sum_j \log(m - r_j).

    ``p(k | z)`` is uniform (``-log D``) with ``learned=False``; otherwise a
    softmax of an MLP on ``z`` (and the context, if ``context_dim > 0``),
    initialized to the uniform. Ties have probability zero under a density.

    Arguments:
        dim: the event size ``D`` (at least 2).
        hidden: hidden sizes of the position classifier.
        context_dim: size of a conditioning context fed to the classifier
            (0 for none; a context is then ignored).
        learned: learn ``p(k | z)``; ``False`` for the uniform position.

    References:
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020 (arXiv 2007.02731).

    Example:
        >>> import torch
        >>> layer = MaxSurjection(3, learned=False)
        >>> z, v = layer.encode(torch.tensor([[0.0, 2.0, 1.0]]))
        >>> z
        tensor([[2.0000, 0.6931, 0.0000]])
        >>> round(float(v), 4)  # -log 3 - log 2 - log 1
        -1.7918
        >>> torch.allclose(layer.encode(layer.decode(z)[0])[0], z)
        True
    """

    stochastic_inverse = True
    accepts_context = True

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64,),
        context_dim: int = 0,
        learned: bool = True,
    ) -> None:
        super().__init__(dim, min_dim=2)
        context_dim = check_size(context_dim, "context_dim", "MaxSurjection", minimum=0)
        if context_dim and not learned:
            raise ValueError(
                f"MaxSurjection: a context needs the learned classifier, got "
                f"context_dim={context_dim} with learned=False"
            )
        self.context_dim = context_dim
        self.learned = bool(learned)
        self.classifier = MLP(dim + context_dim, dim, hidden, zero_last=True) if learned else None

    def _log_probs(self, z: Tensor, context: Tensor | None) -> Tensor:
        """``log p(k | z)`` for every ``k``, shape ``batch + (D,)``."""
        if self.classifier is None:
            return torch.full_like(z, -math.log(self.dim))
        h = append_context(z, context, self.context_dim, "MaxSurjection")
        return torch.log_softmax(self.classifier(h), dim=-1)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        m, g, k = split_max(x)
        z = torch.cat([m, g], dim=-1)
        return z, max_contribution(self._log_probs(z, context), k, g)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        log_probs = self._log_probs(z, context)
        z = z.expand(log_probs.shape)
        x, v = decode_max(log_probs, z[..., :1], z[..., 1:])
        return x, -v

    def extra_repr(self) -> str:
        """The size, the kind of position model and the context size."""
        kind = "learned position" if self.learned else "uniform position"
        ctx = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"dim={self.dim}, {kind}{ctx}"
