"""Absolute value: an inference surjection with an exact contribution."""

from __future__ import annotations

__all__ = ["AbsSurjection"]

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from pyro_relax.core.checks import check_size
from pyro_relax.core.layer import RelaxedLayer, sum_event
from pyro_relax.nn.mlp import MLP


class AbsSurjection(RelaxedLayer):
    r"""``z = |x|`` elementwise, with the sign restored by ``p(sign | z)`` when sampling.

    Inference surjection (Nielsen et al. 2020): ``encode`` is deterministic and
    the contribution ``V = log p(sign(x) | |x|)`` is exact. With a fair sign
    ``V = -D log 2`` for ``D`` elements in an event; with ``dim`` given, a small
    network learns ``p(sign_i = + | z)`` (the learned sign classifier), which
    lets a flow on ``|x|`` fit data that is not symmetric.

    Arguments:
        dim: event size for the learned classifier; ``None`` for a fair sign.
        hidden: hidden sizes of the classifier.
        event_dim: number of event dimensions (1 for vectors, 3 for images);
            only with a fair sign.

    References:
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020.

    Example:
        >>> import torch
        >>> layer = AbsSurjection()
        >>> z, v = layer.encode(torch.tensor([[-1.0, 2.0]]))
        >>> z, round(float(v), 4)
        (tensor([[1., 2.]]), -1.3863)
    """

    stochastic_inverse = True

    def __init__(
        self, dim: int | None = None, hidden: Sequence[int] = (64,), event_dim: int = 1
    ) -> None:
        super().__init__()
        if dim is not None:
            check_size(dim, "dim (or None)", "AbsSurjection")
        check_size(event_dim, "event_dim", "AbsSurjection")
        if dim is not None and event_dim != 1:
            raise ValueError(f"AbsSurjection: the learned sign needs event_dim 1, got {event_dim}")
        self.dim = dim
        self.event_dim = event_dim
        self.classifier = None if dim is None else MLP(dim, dim, hidden, zero_last=True)

    def expected_data_shape(self) -> torch.Size | None:
        """``(dim,)`` for the learned sign, ``None`` (any shape) for the fair one."""
        return None if self.dim is None else torch.Size((self.dim,))

    def check_latent(self, z: Tensor) -> None:
        """Raise a ``ValueError`` for negative entries (the latent side is ``|x|``)."""
        if bool((z < 0).any()):
            raise ValueError("AbsSurjection.decode: expected non-negative z, got negative entries")

    def _sign_log_probs(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise ``log p(+ | z)`` and ``log p(- | z)``."""
        if self.classifier is None:
            half = torch.full_like(z, -math.log(2.0))
            return half, half
        logits = self.classifier(z)
        return logsigmoid(logits), logsigmoid(-logits)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z = x.abs()
        log_pos, log_neg = self._sign_log_probs(z)
        v = torch.where(x >= 0, log_pos, log_neg)
        return z, sum_event(v, self.event_dim)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        log_pos, log_neg = self._sign_log_probs(z)
        positive = torch.rand_like(z) < log_pos.exp()
        x = torch.where(positive, z, -z)
        v = torch.where(positive, log_pos, log_neg)
        return x, -sum_event(v, self.event_dim)

    def extra_repr(self) -> str:
        """The kind of sign model (and its size)."""
        return "fair sign" if self.dim is None else f"dim={self.dim}, learned sign"
