"""Dequantization: generative surjections from integer data to the unit cube."""

from __future__ import annotations

__all__ = ["UniformDequantization", "VariationalDequantization"]

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from pyro_relax.core.checks import check_size
from pyro_relax.core.layer import RelaxedLayer
from pyro_relax.surjections.augment import ConditionalNormal


class _Dequantization(RelaxedLayer):
    """Shared domain checks and the floor map of the two dequantizations."""

    stochastic_forward = True
    exact = False
    takes_integers = True  # encode receives integer tensors as they are
    num_bins: int

    def check_data(self, x: Tensor) -> None:
        name = f"{type(self).__name__}.encode"
        if x.is_floating_point() and bool((x != torch.floor(x)).any()):
            raise ValueError(
                f"{name}: expected integer values in {{0, ..., {self.num_bins - 1}}}, "
                "got non-integer entries"
            )
        if bool(((x < 0) | (x > self.num_bins - 1)).any()):
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(
                f"{name}: expected integers in [0, {self.num_bins - 1}], "
                f"got values in [{lo:g}, {hi:g}]"
            )

    def check_latent(self, z: Tensor) -> None:
        if bool(((z < 0) | (z > 1)).any()):
            raise ValueError(
                f"{type(self).__name__}.decode: expected latent values in [0, 1], "
                f"got values in [{float(z.min()):g}, {float(z.max()):g}]"
            )

    def _margin(self, t: Tensor) -> float:
        # Rounding (x + u) / K * K errs by at most 1.5 K eps (three roundings of
        # numbers below K); keeping u 2 K eps from the cell edges makes floor(z K)
        # recover x exactly. The q-mass moved onto the margin is 4 K eps per element.
        return 2.0 * self.num_bins * torch.finfo(t.dtype).eps

    def _floor(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``x = floor(z K)`` clamped to ``[0, K - 1]`` and the offset ``u = z K - x``."""
        scaled = z * self.num_bins
        x = torch.floor(scaled).clamp(0, self.num_bins - 1)  # zero gradient, connected graph
        return x, scaled - x


class UniformDequantization(_Dequantization):
    r"""``z = (x + u) / K`` with ``u ~ U[0, 1)^D``: integers in ``{0..K-1}`` to ``[0, 1)^D``.

    Generative surjection (Nielsen et al. 2020; Theis et al. 2016): ``decode`` is
    ``x = floor(z K)``; ``encode`` adds uniform noise. The noise density on the
    cell of ``x`` is ``q(z | x) = K^D``, so the contribution is the closed form
    ``V = -D log K`` and ``log P(x) >= E_u[log p(z)] - D log K`` for a continuous
    density ``p`` on the unit cube (put a flow onto ``(0, 1)`` before it, e.g. a
    sigmoid). ``decode`` gives ``S = +D log K``. Inputs may be floats holding
    integers or an integer tensor (cast to the default float dtype).

    Arguments:
        num_bins: the number of values ``K`` per element (256 for 8-bit images).
        event_dim: number of event dimensions (1 for vectors, 3 for images).

    References:
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows: Surjections to
        Bridge the Gap between VAEs and Flows. NeurIPS 2020 (arXiv 2007.02731).
        Theis, van den Oord, Bethge. A note on the evaluation of generative models. ICLR 2016.

    Example:
        >>> import torch
        >>> layer = UniformDequantization(num_bins=4)
        >>> x = torch.tensor([[0.0, 3.0, 1.0]])
        >>> z, v = layer.encode(x)
        >>> round(float(v), 4) == round(-3 * math.log(4), 4), bool((layer.decode(z)[0] == x).all())
        (True, True)
    """

    def __init__(self, num_bins: int = 256, event_dim: int = 1) -> None:
        super().__init__()
        check_size(num_bins, "num_bins", "UniformDequantization")
        check_size(event_dim, "event_dim", "UniformDequantization")
        self.num_bins = num_bins
        self.event_dim = event_dim

    def _log_k_per_event(self, t: Tensor) -> Tensor:
        d = math.prod(t.shape[t.dim() - self.event_dim :])
        return t.new_full(self._batch_shape(t, self.event_dim), d * math.log(self.num_bins))

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        m = self._margin(x)
        u = torch.rand_like(x).clamp(m, 1.0 - m)
        return (x + u) / self.num_bins, -self._log_k_per_event(x)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, _ = self._floor(z)
        return x, self._log_k_per_event(z)

    def extra_repr(self) -> str:
        """The number of bins and of event dimensions."""
        return f"num_bins={self.num_bins}, event_dim={self.event_dim}"


class VariationalDequantization(_Dequantization):
    r"""``z = (x + u) / K`` with ``u ~ q(u | x)`` learned on ``(0, 1)^D``.

    Generative surjection (Ho et al. 2019, "Flow++"; Nielsen et al. 2020): the
    noise is ``u = sigmoid(y)`` with ``y ~ N(loc(x), diag(scale(x)^2))`` from a small
    network, so ``log q(u | x) = log N(y) - sum log sigmoid'(y)``. The contribution is
    ``V = -log q(u | x) - D log K`` (a lower bound that is tighter than uniform
    dequantization's ``-D log K`` when ``q`` fits the model's density on each cell).
    ``decode`` is ``x = floor(z K)`` with ``S = log q(u | x) + D log K`` at
    ``u = z K - x``. Since ``x`` is discrete, the gradient of ``decode`` reaches
    ``z`` through ``S`` only.

    Arguments:
        dim: data event size.
        num_bins: the number of values ``K`` per element.
        hidden: hidden sizes of the network of ``q(u | x)``.
        context_dim: size of a conditioning context (0 for none; ignored if given then).

    References:
        Ho, Chen, Srinivas, Duan, Abbeel. Flow++: Improving Flow-Based Generative
        Models with Variational Dequantization and Architecture Design. ICML 2019.
        Nielsen, Jaini, Hoogeboom, Winther, Welling. SurVAE Flows. NeurIPS 2020.

    Example:
        >>> import torch
        >>> layer = VariationalDequantization(3, num_bins=8, hidden=(16,))
        >>> x = torch.tensor([[0.0, 7.0, 2.0]])
        >>> z, v = layer.encode(x)
        >>> bool((layer.decode(z)[0] == x).all()), v.shape
        (True, torch.Size([1]))
    """

    accepts_context = True

    def __init__(
        self, dim: int, num_bins: int, hidden: Sequence[int] = (64,), context_dim: int = 0
    ) -> None:
        super().__init__()
        check_size(dim, "dim", "VariationalDequantization")
        check_size(num_bins, "num_bins", "VariationalDequantization")
        self.dim = dim
        self.num_bins = num_bins
        self.noise = ConditionalNormal(dim, dim, hidden, context_dim)

    def expected_data_shape(self) -> torch.Size:
        """The data event ``(dim,)``."""
        return torch.Size((self.dim,))

    def _features(self, x: Tensor) -> Tensor:
        return 2.0 * (x + 0.5) / self.num_bins - 1.0  # integers to (-1, 1)

    @staticmethod
    def _log_sigmoid_jacobian(y: Tensor) -> Tensor:
        return (logsigmoid(y) + logsigmoid(-y)).sum(-1)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not x.is_floating_point():
            x = x.to(next(self.parameters()).dtype)
        y, log_n = self.noise.rsample(self._features(x), context)
        m = self._margin(x)
        u = torch.sigmoid(y).clamp(m, 1.0 - m)
        log_q = log_n - self._log_sigmoid_jacobian(y)
        x = x.expand(u.shape)
        return (x + u) / self.num_bins, -log_q - self.dim * math.log(self.num_bins)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, u = self._floor(z)
        m = self._margin(z)
        u = u.clamp(m, 1.0 - m)
        y = torch.log(u) - torch.log1p(-u)
        log_q = self.noise.log_prob(y, self._features(x), context) - self._log_sigmoid_jacobian(y)
        return x.expand(log_q.shape + x.shape[-1:]), log_q + self.dim * math.log(self.num_bins)

    def extra_repr(self) -> str:
        """The size, the number of bins and the context size."""
        return f"dim={self.dim}, num_bins={self.num_bins}, context_dim={self.noise.context_dim}"
