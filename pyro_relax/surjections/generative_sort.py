"""Sorting as a generative surjection: data are sorted, the latent adds an order."""

from __future__ import annotations

__all__ = ["GenerativeSort", "plackett_luce_log_prob"]

from collections.abc import Sequence

import torch
from torch import Tensor

from pyro_relax.core import VectorLayer
from pyro_relax.nn.mlp import MLP


def plackett_luce_log_prob(scores: Tensor, perm: Tensor) -> Tensor:
    r"""Log-probability of the ordering ``perm`` under Plackett-Luce with ``scores``.

    ``perm[..., i]`` is the item chosen ``i``-th; items are chosen one at a time
    with probability proportional to ``exp(score)`` among those left:
    ``log q(perm) = sum_i [s_{perm_i} - logsumexp_{j >= i} s_{perm_j}]``.

    Arguments:
        scores: ``batch_shape + (D,)`` real scores.
        perm: ``batch_shape + (D,)`` permutations of ``0..D-1`` (integer tensor).

    Returns:
        The log-probabilities, of shape ``batch_shape``.

    Example:
        >>> import math, torch
        >>> lp = plackett_luce_log_prob(torch.zeros(3), torch.tensor([2, 0, 1]))
        >>> round(float(lp), 4) == round(-math.log(6), 4)
        True
    """
    s = scores.gather(-1, perm)
    tail = torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)
    return (s - tail).sum(-1)


class GenerativeSort(VectorLayer):
    r"""Generative ``x = sort(z)``; the density direction samples an order, ``z = x[perm]``.

    The generative-surjection counterpart of sorting (Nielsen et al. 2020):
    the data ``x`` are vectors sorted ascending, the model is ``x = sort(z)``.
    ``encode`` draws a permutation ``perm ~ q(perm | x)`` from a Plackett-Luce
    distribution whose scores come from a small network (sampled with the
    Gumbel-top-k trick: the order of ``scores + Gumbel noise``, descending), and
    returns ``z_i = x_{perm_i}`` with ``V = -log q(perm | x)``.
    ``decode`` is the deterministic ``x = sort(z)`` with
    ``S = log q(perm(z) | sort(z))`` where ``perm(z)`` places the sorted values back
    at their positions in ``z``. The network starts at zero: a uniform permutation,
    ``V = log D!``; with a permutation-invariant model below, the uniform order
    is the exact posterior and the bound is tight.

    The permutation is discrete: the gradient of ``V`` with respect to the
    score network is only the pathwise part (see :class:`GenerativeAbs`).

    Arguments:
        dim: data event size ``D``.
        hidden: hidden sizes of the score network.

    References:
        Nielsen et al., SurVAE Flows, NeurIPS 2020 (arXiv 2007.02731).
        Plackett. The analysis of permutations. Applied Statistics, 1975.
        Kool, van Hoof, Welling. Stochastic beams and where to find them. ICML 2019.

    Example:
        >>> import math, torch
        >>> layer = GenerativeSort(3, hidden=(8,))
        >>> x = torch.tensor([[-1.0, 0.5, 2.0]])
        >>> z, v = layer.encode(x)
        >>> bool((z.sort(-1).values == x).all())
        True
        >>> round(float(v.detach()), 4) == round(math.log(6), 4)
        True
    """

    stochastic_forward = True
    exact = False

    def __init__(self, dim: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__(dim)
        self.scorer = MLP(dim, dim, tuple(hidden), zero_last=True)

    def check_data(self, x: Tensor) -> None:
        """Raise a ``ValueError`` for vectors not sorted in ascending order."""
        bad = x[..., 1:] < x[..., :-1]
        if bool(bad.any()):
            raise ValueError(
                "GenerativeSort.encode: expected vectors sorted in ascending order, "
                f"got {int(bad.any(-1).sum())} unsorted vectors"
            )

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        scores = self.scorer(x)
        u = torch.rand_like(scores)
        gumbel = -torch.log(-torch.log(u))  # u = 0 gives -inf, never NaN
        perm = torch.argsort(scores + gumbel, dim=-1, descending=True)
        z = x.gather(-1, perm)
        return z, -plackett_luce_log_prob(scores, perm)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, order = z.sort(dim=-1)  # x_k = z_{order_k}
        perm = torch.argsort(order, dim=-1)  # z_i = x_{perm_i}
        return x, plackett_luce_log_prob(self.scorer(x), perm)
