"""Small fully connected networks used as conditioners, encoders and decoders."""

from __future__ import annotations

__all__ = ["MLP"]

from collections.abc import Sequence

from torch import Tensor, nn

from pyro_relax.core.checks import check_int


class MLP(nn.Module):
    """A multilayer perceptron ``in_features -> hidden... -> out_features``.

    The last layer starts at zero when ``zero_last`` is set, so a conditioner
    built from it starts at the identity transform (a common flow trick).

    Arguments:
        in_features: input size.
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: the nonlinearity class.
        zero_last: initialize the output layer to zero.

    Example:
        >>> import torch
        >>> net = MLP(3, 4, hidden=(16,))
        >>> net(torch.zeros(5, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.SiLU,
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            check_int(v, name, "MLP", minimum=0)
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), activation()]
        last = nn.Linear(sizes[-1], out_features)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to the last dimension of ``x`` (any batch shape)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"MLP: expected last dimension {self.in_features}, got {x.shape[-1]}")
        return self.net(x)
