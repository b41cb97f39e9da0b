"""The many-well density: independent copies of the 2-D double well."""

from __future__ import annotations

__all__ = ["ManyWell"]

from typing import ClassVar

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int
from pyro_relax.targets.base import Target
from pyro_relax.targets.double_well import DoubleWell


class ManyWell(Target):
    r"""The product of ``dim / 2`` independent 2-D :class:`DoubleWell` densities.

    Coordinates pair up as ``(x_1, x_2), (x_3, x_4), ...``; the first of each
    pair is the double-well coordinate, the second the Gaussian one, so the
    density has ``2^(dim/2)`` modes. ``log_Z = (dim / 2) * DoubleWell.log_Z``;
    exact samples by sampling every pair.

    The coefficients of every well and their defaults are those of
    :class:`DoubleWell` (the SNF double well). FAB's many-well target uses
    ``log p = -x_1^4 + 6 x_1^2 + x_1 / 2 - x_2^2 / 2`` per pair, i.e.
    ``a=4, b=12, c=-0.5, d=1``; :meth:`fab` builds that one.

    Arguments:
        dim: the even total dimension.
        **coefficients: ``a``, ``b``, ``c``, ``d`` (and ``n_grid``) of every
            well, passed to :class:`DoubleWell`.

    References:
        The FAB paper of :class:`GaussianMixture40` (Midgley et al., ICLR 2023), section 4.2.

    Example:
        >>> import torch
        >>> target = ManyWell(dim=4)
        >>> target.sample((6,)).shape
        torch.Size([6, 4])
        >>> abs(target.log_Z - 2 * target.well.log_Z) < 1e-12
        True
    """

    has_exact_samples: ClassVar[bool] = True

    def __init__(self, dim: int = 32, **coefficients: float) -> None:
        dim = check_int(dim, "dim", type(self).__name__, minimum=2)
        if dim % 2:
            raise ValueError(f"{type(self).__name__}: expected an even dim, got {dim}")
        super().__init__(dim)
        self.n_wells = dim // 2
        self.well = DoubleWell(**coefficients)
        self._log_Z = self.n_wells * self.well.log_Z

    @classmethod
    def fab(cls, dim: int = 32) -> ManyWell:
        """FAB's many well: per pair ``log p = -x_1^4 + 6 x_1^2 + x_1/2 - x_2^2/2``."""
        return cls(dim=dim, a=4.0, b=12.0, c=-0.5, d=1.0)

    def _log_prob(self, x: Tensor) -> Tensor:
        pairs = x.reshape(x.shape[:-1] + (self.n_wells, 2))
        return -self.well.energy(pairs).sum(-1)

    def _sample(self, sample_shape: torch.Size) -> Tensor:
        pairs = self.well.sample(sample_shape + (self.n_wells,))
        return pairs.reshape(sample_shape + (self.dim,))

    def extra_repr(self) -> str:
        """The dimension and log normalizer, shown by ``repr`` (the well follows)."""
        return f"dim={self.dim}, log_Z={self._log_Z:.6g}"
