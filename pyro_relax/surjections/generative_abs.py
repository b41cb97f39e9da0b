"""Absolute value as a generative surjection: data are magnitudes, the latent adds a sign."""

from __future__ import annotations

__all__ = ["GenerativeAbs"]

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from pyro_relax.core import VectorLayer, sum_event
from pyro_relax.nn.mlp import MLP


class GenerativeAbs(VectorLayer):
    r"""Generative ``x = |z|``; the density direction samples a sign, ``z = s x``.

    The generative-surjection counterpart of :class:`~pyro_relax.surjections.abs.AbsSurjection`
    (Nielsen et al. 2020): the data ``x`` are non-negative and the model is
    ``x = |z|`` with ``z`` from the layers below. ``encode`` draws a sign
    ``s_i ~ q(s_i | x)`` (one Bernoulli per element, ``q(+ | x) = sigmoid(logit_i(x))``
    from a small network) and returns ``z = s x`` with ``V = -log q(s | x)``; so
    ``log p(x) >= E_s[log p(s x) - log q(s | x)]``, tight when ``q`` is the
    model's posterior over signs. ``decode`` is the deterministic ``x = |z|`` with
    ``S = log q(sign(z) | |z|)`` (the sign bit decides, so the ``-0.0`` that
    ``encode`` makes of a zero with a negative sign counts as ``-``). The network
    starts at zero: a fair sign, ``V = D log 2``.

    The sign is discrete: the gradient of ``V`` with respect to the sign
    network is only the pathwise part; an unbiased gradient of the bound in the
    network's parameters needs a score-function (REINFORCE) term on top.

    Arguments:
        dim: data event size.
        hidden: hidden sizes of the sign network.

    References:
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020 (arXiv 2007.02731).

    Example:
        >>> import math, torch
        >>> layer = GenerativeAbs(2, hidden=(8,))
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> z, v = layer.encode(x)
        >>> bool((z.abs() == x).all()), round(float(v.detach()), 4) == round(2 * math.log(2), 4)
        (True, True)
    """

    stochastic_forward = True
    exact = False

    def __init__(self, dim: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__(dim)
        self.classifier = MLP(dim, dim, tuple(hidden), zero_last=True)

    def check_data(self, x: Tensor) -> None:
        """Raise a ``ValueError`` for negative entries (the data side is ``|z|``)."""
        if bool((x < 0).any()):
            raise ValueError(
                f"GenerativeAbs.encode: expected non-negative input, got "
                f"{int((x < 0).sum())} negative entries (min {float(x.min()):g})"
            )

    def _sign_log_probs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise ``log q(+ | x)`` and ``log q(- | x)``."""
        logits = self.classifier(x)
        return logsigmoid(logits), logsigmoid(-logits)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = x + 0.0  # turns a -0.0 datum into +0.0, so the sign bit of z is the drawn sign
        log_pos, log_neg = self._sign_log_probs(x)
        positive = torch.rand_like(x) < log_pos.exp()
        z = torch.where(positive, x, -x)
        log_q = torch.where(positive, log_pos, log_neg)
        return z, -sum_event(log_q, 1)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = z.abs()
        log_pos, log_neg = self._sign_log_probs(x)
        log_q = torch.where(torch.signbit(z), log_neg, log_pos)  # -0.0 from encode is "-"
        return x, sum_event(log_q, 1)
