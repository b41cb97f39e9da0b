"""2x2 max pooling of images: an inference surjection that keeps the pooled-away values as gaps."""

from __future__ import annotations

__all__ = ["MaxPool2dSurjection"]

import math

import torch
from torch import Tensor, nn

from pyro_relax.core.checks import check_size
from pyro_relax.core.layer import RelaxedLayer, sum_event
from pyro_relax.surjections.max import decode_max, max_contribution, split_max


class MaxPool2dSurjection(RelaxedLayer):
    r"""2x2 max pooling of ``(C, H, W)`` images; the 3 other values of a block become log gaps.

    Each 2x2 block (positions ordered ``(0,0), (0,1), (1,0), (1,1)``) goes
    through the max surjection of :class:`~pyro_relax.surjections.max.MaxSurjection`:
    its maximum ``m`` and the gaps ``log(m - r)`` of its three other values.
    The latent image has shape ``(4C, H/2, W/2)``: the ``C`` pooled maxima first,
    then three groups of ``C`` gap channels (the first, second and third
    non-maximal value of each block, in block order). Decoding draws which of
    the 4 positions holds the maximum, uniformly or from a categorical given by
    a small convolutional net on the pooled maxima, and puts the values back.
    The exact contribution sums over blocks

    .. math:: V = \sum_{\text{blocks}} \Big[\log p(k \mid z) - \sum_{j=1}^{3} \log(m - r_j)\Big],

    the second term being the log-Jacobian of the gap map
    (``d log(m - r) / d r = -1 / (m - r)``). ``H`` and ``W`` must be even.

    Arguments:
        channels: the number of image channels ``C``.
        hidden: channels of the hidden layer of the position net.
        learned: learn ``p(position | pooled maxima)``; ``False`` for ``1/4``.

    References:
        Nielsen et al., SurVAE Flows, NeurIPS 2020 (as :class:`MaxSurjection`).

    Example:
        >>> import torch
        >>> layer = MaxPool2dSurjection(1, learned=False)
        >>> x = torch.tensor([[[0.0, 3.0], [1.0, 2.0]]])
        >>> z, v = layer.encode(x)
        >>> z.shape, z[:, 0, 0]
        (torch.Size([4, 1, 1]), tensor([3.0000, 1.0986, 0.6931, 0.0000]))
        >>> round(float(v), 4)  # -log 4 - log 3 - log 2 - log 1
        -3.1781
        >>> layer.decode(z)[0].shape
        torch.Size([1, 2, 2])
    """

    stochastic_inverse = True
    event_dim = 3

    def __init__(self, channels: int, hidden: int = 16, learned: bool = True) -> None:
        super().__init__()
        for name, v in (("channels", channels), ("hidden", hidden)):
            check_size(v, name, "MaxPool2dSurjection")
        self.channels = channels
        self.learned = bool(learned)
        self.net: nn.Module | None = None
        if learned:
            last = nn.Conv2d(hidden, 4 * channels, 3, padding=1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(), last)

    # -- shapes ---------------------------------------------------------------
    def latent_shape(self, data_shape: torch.Size) -> torch.Size:
        """``(4C, H/2, W/2)`` for the image event ``(C, H, W)``."""
        c, h, w = self._check_data_event(tuple(data_shape))
        return torch.Size((4 * c, h // 2, w // 2))

    def data_shape(self, latent_shape: torch.Size) -> torch.Size:
        """``(C, H, W)`` for the latent event ``(4C, H/2, W/2)``."""
        c4, h, w = self._check_latent_event(tuple(latent_shape))
        return torch.Size((c4 // 4, 2 * h, 2 * w))

    def _check_data_event(self, event: tuple[int, ...]) -> tuple[int, int, int]:
        if len(event) != 3 or event[0] != self.channels:
            raise ValueError(
                f"MaxPool2dSurjection: expected a data event (C={self.channels}, H, W), got {event}"
            )
        if event[1] % 2 or event[2] % 2:
            raise ValueError(
                f"MaxPool2dSurjection: expected even H and W for 2x2 pooling, got {event[1:]}"
            )
        return event  # type: ignore[return-value]

    def _check_latent_event(self, event: tuple[int, ...]) -> tuple[int, int, int]:
        if len(event) != 3 or event[0] != 4 * self.channels:
            raise ValueError(
                f"MaxPool2dSurjection: expected a latent event (4C={4 * self.channels}, H/2, W/2), "
                f"got {event}"
            )
        return event  # type: ignore[return-value]

    # -- blocks ---------------------------------------------------------------
    @staticmethod
    def _to_blocks(x: Tensor) -> Tensor:
        """``(..., C, H, W) -> (..., C, H/2, W/2, 4)``."""
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        x = x.unflatten(-1, (w, 2)).unflatten(-3, (h, 2))  # (..., C, h, 2, w, 2)
        return x.transpose(-3, -2).flatten(-2)

    @staticmethod
    def _from_blocks(b: Tensor) -> Tensor:
        """``(..., C, h, w, 4) -> (..., C, 2h, 2w)``."""
        b = b.unflatten(-1, (2, 2)).transpose(-3, -2)  # (..., C, h, 2, w, 2)
        return b.flatten(-2).flatten(-3, -2)

    def _log_probs(self, m: Tensor) -> Tensor:
        """``log p(position | maxima)``: ``(..., C, h, w) -> (..., C, h, w, 4)``."""
        if self.net is None:
            return torch.full(m.shape + (4,), -math.log(4.0), dtype=m.dtype, device=m.device)
        c, h, w = m.shape[-3:]
        logits = self.net(m.reshape(-1, c, h, w))  # (N, 4C, h, w)
        logits = logits.reshape(m.shape[:-3] + (c, 4, h, w)).movedim(-3, -1)
        return torch.log_softmax(logits, dim=-1)

    def _encode(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check_data_event(tuple(x.shape[-3:]))
        m, g, k = split_max(self._to_blocks(x))  # (..., C, h, w, 1 | 3 | 1)
        m = m.squeeze(-1)
        gaps = g.movedim(-1, -4).flatten(-4, -3)  # (..., 3C, h, w)
        z = torch.cat([m, gaps], dim=-3)
        return z, sum_event(max_contribution(self._log_probs(m), k, g), 3)

    def _decode(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check_latent_event(tuple(z.shape[-3:]))
        c = self.channels
        m = z[..., :c, :, :]
        g = z[..., c:, :, :].unflatten(-3, (3, c)).movedim(-4, -1)  # (..., C, h, w, 3)
        blocks, v = decode_max(self._log_probs(m), m.unsqueeze(-1), g)
        return self._from_blocks(blocks), -sum_event(v, 3)

    def extra_repr(self) -> str:
        """The number of channels and the kind of position model."""
        kind = "learned position" if self.learned else "uniform position"
        return f"channels={self.channels}, {kind}"
