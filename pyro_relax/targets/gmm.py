"""The 40-mode two-dimensional Gaussian mixture of the FAB paper."""

from __future__ import annotations

__all__ = ["GaussianMixture40"]

import math
from typing import ClassVar

import torch
from torch import Tensor

from pyro_relax.core.checks import check_int, check_positive
from pyro_relax.targets.base import Target


class GaussianMixture40(Target):
    r"""An equal-weight mixture of isotropic 2-D Gaussians, normalized (``log_Z = 0``).

    .. math::
        p(x) = \frac{1}{K} \sum_{k=1}^{K} \mathcal N(x;\ \mu_k,\ s^2 I_2),
        \qquad \mu_k \sim \mathcal U([-L, L]^2)

    with ``K = n_modes``, ``L = loc_scale`` and ``s = scale``. The means are
    drawn once from a CPU ``torch.Generator`` seeded with ``seed`` (float64),
    so the same arguments give the same mixture on every device; they are a
    buffer (``locs``). Exact samples: a component, then a Gaussian.

    FAB's published target (40 modes, ``loc_scaling=40``,
    ``log_var_scaling=1``) puts ``softplus(1) = log(1 + e) ~ 1.3133`` on the
    diagonal of each component's scale matrix, so its per-coordinate
    standard deviation is 1.3133, not 1; :meth:`fab` builds that one. Its
    means come from torch's global RNG and are not reproduced here.

    Arguments:
        n_modes: number of components ``K >= 1``.
        loc_scale: half-width ``L > 0`` of the square holding the means.
        scale: per-coordinate standard deviation ``s > 0`` of every component.
        seed: seed of the generator that draws the means.

    References:
        Midgley, Stimper, Simm, Schoelkopf and Hernandez-Lobato, "Flow
        Annealed Importance Sampling Bootstrap", ICLR 2023 (arXiv 2208.01893),
        section 4.1.

    Example:
        >>> import torch
        >>> target = GaussianMixture40()
        >>> target.locs.shape
        torch.Size([40, 2])
        >>> target.sample((3, 4)).shape
        torch.Size([3, 4, 2])
    """

    has_exact_samples: ClassVar[bool] = True
    locs: Tensor
    scale: Tensor

    def __init__(
        self,
        n_modes: int = 40,
        loc_scale: float = 40.0,
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(2)
        name = type(self).__name__
        k = check_int(n_modes, "n_modes", name, minimum=1)
        half_width = check_positive(loc_scale, "loc_scale", name)
        s = check_positive(scale, "scale", name)
        seed_ = check_int(seed, "seed", name, minimum=0)
        generator = torch.Generator(device="cpu").manual_seed(seed_)
        unit = torch.rand((k, 2), generator=generator, dtype=torch.float64)
        locs = (2.0 * unit - 1.0) * half_width
        self.register_buffer("locs", locs.to(torch.get_default_dtype()))
        self.register_constants(scale=s)
        self._config = (k, half_width, s, seed_)
        self._log_Z = 0.0

    @classmethod
    def fab(cls, seed: int = 0) -> GaussianMixture40:
        """FAB's settings: 40 modes on ``[-40, 40]^2`` with scale ``softplus(1) ~ 1.3133``."""
        return cls(n_modes=40, loc_scale=40.0, scale=math.log1p(math.e), seed=seed)

    @property
    def n_modes(self) -> int:
        """The number of mixture components."""
        return self._config[0]

    def _log_prob(self, x: Tensor) -> Tensor:
        locs = self.locs.to(x.dtype)
        scale = self.scale.to(x.dtype)
        z = (x.unsqueeze(-2) - locs) / scale  # batch + (K, 2)
        log_comp = -0.5 * (z**2).sum(-1) - 2.0 * scale.log() - math.log(2.0 * math.pi)
        return torch.logsumexp(log_comp, dim=-1) - math.log(self.n_modes)

    def _sample(self, sample_shape: torch.Size) -> Tensor:
        anchor = self._anchor
        k = torch.randint(self.n_modes, sample_shape, device=anchor.device)
        eps = torch.randn(sample_shape + (2,), device=anchor.device, dtype=anchor.dtype)
        return self.locs.to(anchor.dtype)[k] + self.scale.to(anchor.dtype) * eps

    def extra_repr(self) -> str:
        """The constructor arguments, shown by ``repr``."""
        k, half_width, s, seed = self._config
        return f"n_modes={k}, loc_scale={half_width:g}, scale={s:g}, seed={seed}"
