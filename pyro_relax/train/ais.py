r"""Annealed importance sampling in a flow's latent space, towards ``p`` or ``p^2 / q``.

FAB's AIS starts at the flow ``q`` and anneals towards ``p^2 / q`` (training)
or ``p`` (evaluation). Both run here in the flow's latent space, with the
package's annealing blocks (:func:`~pyro_relax.stochastic.pullback.annealed_hmc_levels`,
:class:`~pyro_relax.stochastic.mh.RandomWalkMH`) over the pulled-back target
(:class:`~pyro_relax.stochastic.pullback.PulledBackDensity`): with
``u ~ N(0, I)`` and ``x = f(u)``, ``q`` pulls back to ``N(u)`` and ``p^2 / q``
to ``2 log p~(u) - log N(u)``, where ``log p~ = log p(f(u)) + log|det f'(u)|``.
The chain's weight
``log w = log pi_K(u_K) - log N(u_0) + sum_k Delta S_k`` (the SNF path weight,
``DESIGN.md``) is the AIS weight, and it is also the weight of ``x_K = f(u_K)``
for the data-space target (the map is a bijection).
"""

from __future__ import annotations

__all__ = ["CountingDensity", "LatentAIS", "SquaredOverFlow", "check_exact_flow"]

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from pyro_relax.core.switch import validation
from pyro_relax.distributions.flow import Flow
from pyro_relax.stochastic.block import AnnealedBlock
from pyro_relax.stochastic.density import attach_log_density, standard_normal_log_prob
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.pullback import PulledBackDensity, annealed_hmc_levels
from pyro_relax.stochastic.schedules import linear_schedule
from pyro_relax.stochastic.trace import BlockInfo

KERNELS = ("hmc", "metropolis")


class CountingDensity(nn.Module):
    """A log density that counts the points it is evaluated at (:attr:`count`).

    Counting reads shapes only (no device synchronization).

    Arguments:
        target: a module with ``log_prob`` (a :class:`~pyro_relax.targets.Target`),
            a module, a torch distribution or a callable mapping ``batch + event`` to ``batch``.

    Raises:
        TypeError: if ``target`` is none of these.

    Example:
        >>> import torch
        >>> d = CountingDensity(lambda x: -x.square().sum(-1))
        >>> _ = d(torch.zeros(5, 2)); d.count
        5
    """

    def __init__(self, target: object) -> None:
        super().__init__()
        self._fn = attach_log_density(self, "target", target)
        self.count = 0

    def forward(self, x: Tensor) -> Tensor:
        """``log p(x)`` (shape ``x.shape[:-1]``); adds the number of points to :attr:`count`."""
        self.count += x[..., 0].numel()
        return self._fn(x)

    log_prob = forward


class SquaredOverFlow(nn.Module):
    """``2 log p~(u) - log N(u; 0, I)``: FAB's ``p^2 / q`` pulled back to the latent space.

    Example:
        >>> import torch
        >>> d = SquaredOverFlow(lambda u: -u.square().sum(-1))
        >>> d(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, pulled: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        if isinstance(pulled, nn.Module):
            self.pulled = pulled
        self._fn = pulled

    def forward(self, u: Tensor) -> Tensor:
        """The log density at latent points ``u`` (shape ``u.shape[:-1]``)."""
        return 2.0 * self._fn(u) - standard_normal_log_prob(u)

    log_prob = forward


def _blocks(
    density: nn.Module, levels: int, kernel: str, n_leapfrog: int, step_size: float
) -> list[AnnealedBlock]:
    if kernel == "hmc":
        return list(annealed_hmc_levels(density, levels, n_leapfrog, step_size))
    return [
        RandomWalkMH(density, standard_normal_log_prob, step_size=step_size, lam=lam)
        for lam in linear_schedule(levels)
    ]


class LatentAIS(nn.Module):
    r"""AIS from ``N(0, I)`` in the latent space of bijective layers, towards ``p`` or ``p^2/q``.

    Arguments:
        layers: the flow's exact bijective layers (base to data); shared, not copied.
        target: the counting target log density ``p`` (data space).
        dim: the latent (and data) size.
        levels: annealing blocks ``K >= 1`` (``K - 1`` intermediate distributions;
            ``lambda_k = k / K``).
        kernel: ``"hmc"`` or ``"metropolis"`` (random-walk).
        n_leapfrog: leapfrog steps per HMC step.
        step_size: initial step size of every block.
        squared: anneal towards ``p^2 / q`` (FAB's training target) instead of ``p``.
        escape_radius: a chain ending at ``|u|^2 > dim * escape_radius^2`` in the
            latent space (further than ``escape_radius`` base standard deviations per
            coordinate, RMS) is rejected: ``p^2/q`` is not normalizable where ``q`` is
            lighter-tailed than ``p^2``, and such chains run off with astronomic weights.
            ``None``: no such rejection.

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> ais = LatentAIS([T.AffineTransform(torch.zeros(2), 2.0, event_dim=1)],
        ...                 CountingDensity(lambda x: -x.square().sum(-1)), 2, levels=2)
        >>> x, log_w, log_q = ais(8)
        >>> x.shape, log_w.shape, log_q.shape
        (torch.Size([8, 2]), torch.Size([8]), torch.Size([8]))
    """

    def __init__(
        self,
        layers: list[nn.Module],
        target: CountingDensity,
        dim: int,
        levels: int = 2,
        kernel: str = "hmc",
        n_leapfrog: int = 5,
        step_size: float = 0.5,
        squared: bool = True,
        escape_radius: float | None = 10.0,
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"LatentAIS: expected kernel in {KERNELS}, got {kernel!r}")
        self.pulled = PulledBackDensity(layers, target)
        self.final: nn.Module = SquaredOverFlow(self.pulled) if squared else self.pulled
        self.blocks = nn.ModuleList(_blocks(self.final, levels, kernel, n_leapfrog, step_size))
        self.dim = dim
        self.squared = squared
        self.escape_radius = escape_radius

    def step_sizes(self, log: bool = False) -> Tensor:
        """The blocks' step sizes, one per block (their logs, exactly as held, with ``log``)."""
        logs = torch.stack([b.log_step_size.detach().reshape(-1)[0] for b in self.blocks])
        return logs if log else logs.exp()

    def set_step_sizes(self, values: Tensor, log: bool = False) -> None:
        """Set the blocks' step sizes (as given by :meth:`step_sizes`, with the same ``log``).

        Saving and restoring the logs is exact; ``exp`` then ``log`` may not be.
        """
        with torch.no_grad():
            for block, v in zip(self.blocks, values, strict=True):
                block.log_step_size.fill_(float(v) if log else float(v.log()))

    def adapt(self, target_accept: float, rate: float, infos: Sequence[BlockInfo]) -> Tensor:
        """Move each block's log step size by ``rate * (acceptance - target_accept)``.

        A Robbins-Monro step with a constant rate: FAB's target moves as the
        flow trains, so the step sizes track it rather than converge.

        Arguments:
            target_accept: the goal acceptance rate.
            rate: the step on the log scale.
            infos: the blocks' infos of a run (:meth:`run`).

        Returns:
            The acceptance rates used (one per block, ``NaN`` if unknown).
        """
        rates = []
        with torch.no_grad():
            for i, block in enumerate(self.blocks):
                acc = infos[i].acceptance_rate if i < len(infos) else None
                if acc is None:
                    rates.append(self.blocks[0].log_step_size.new_full((), math.nan))
                    continue
                acc = acc.to(block.log_step_size)
                block.log_step_size.add_(rate * (acc - target_accept))
                rates.append(acc.reshape(()))
        return torch.stack(rates)

    @torch.no_grad()
    def run(self, n: int) -> tuple[Tensor, Tensor, Tensor, list[BlockInfo]]:
        """Run ``n`` chains; return ``(x, log w, log q(x), infos)`` (one info per block).

        Chains whose target went NaN or inf, or that escaped (``escape_radius``), have a
        NaN weight (the caller drops them and counts them as rejected).
        """
        ref = next((p for p in self.pulled.layers.parameters() if p.is_floating_point()), None)
        ref = self.blocks[0].log_step_size if ref is None else ref
        u = torch.randn((n, self.dim), device=ref.device, dtype=ref.dtype)
        log_w = -standard_normal_log_prob(u)
        infos = []
        with validation(False):
            for block in self.blocks:
                u, delta, info = block.decode_with_info(u)
                log_w = log_w + delta
                infos.append(info)
            x, log_det = self.pulled.push(u)
            lp_x = self.pulled.target_log_prob(x)
        log_n = standard_normal_log_prob(u)
        log_q = log_n - log_det
        pulled = lp_x + log_det
        final = 2.0 * pulled - log_n if self.squared else pulled
        log_w = log_w + final
        bad = ~torch.isfinite(log_w) & ~(log_w == -math.inf)
        bad |= ~torch.isfinite(x).all(-1) | ~torch.isfinite(log_q)
        if self.escape_radius is not None:
            bad |= u.square().sum(-1) > self.dim * self.escape_radius**2
        log_w = torch.where(bad, torch.full_like(log_w, math.nan), log_w)
        return x, log_w, log_q, infos

    def forward(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`run` without the infos."""
        x, log_w, log_q, _ = self.run(n)
        return x, log_w, log_q


def _is_standard_normal(base: object, dim_shape: torch.Size) -> bool:
    """Whether ``base`` is ``N(0, I)`` on a vector of ``dim_shape`` (one host read, at setup)."""
    if len(dim_shape) != 1 or not isinstance(base, Independent):
        return False
    inner = base.base_dist
    if not isinstance(inner, Normal) or base.event_shape != dim_shape:
        return False
    return bool((inner.loc == 0).all()) and bool((inner.scale == 1).all())


def check_exact_flow(flow: object, owner: str) -> int:
    """The size of an exact bijective flow with a standard-normal vector base; else raise."""
    if not isinstance(flow, Flow):
        raise TypeError(f"{owner}: expected a pyro_relax Flow (or SNF), got {type(flow).__name__}")
    base = flow.base_distribution()
    if not _is_standard_normal(base, flow.base_shape):
        raise ValueError(
            f"{owner}: expected a flow with the default standard-normal base on a vector, got "
            f"base {type(base).__name__} of shape {tuple(flow.base_shape)}"
        )
    for i, layer in enumerate(flow.layers):
        if not (layer.bijective and layer.exact):
            raise ValueError(
                f"{owner}: FAB needs the exact log q of the flow: expected exact bijective "
                f"layers, got {type(layer).__name__} at position {i} (train the bijective part "
                f"and add stochastic blocks afterwards: see FABTrainer.annealed_sampler)"
            )
    return int(flow.base_shape[0])
