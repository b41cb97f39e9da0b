r"""Annealing in a flow's latent space: the pulled-back target, annealed HMC levels, tuning.

A trained flow ``f`` (base ``N(0, I)`` to data) turns a hard target ``p`` into
a nearly Gaussian one in its latent space,

.. math::
    \tilde p(u) = p(f(u))\, |\det \partial f / \partial u|,

and ``u ~ N(0, I)`` is close to ``tilde p``. Annealed importance sampling from
``N(0, I)`` to ``tilde p`` (HMC levels targeting
``pi_k(u) = N(u)^{1 - k/K} \tilde p(u)^{k/K}``) followed by ``f`` is a
stochastic normalizing flow whose path weights correct what the flow alone
misses; it is what NeuTra (Hoffman et al. 2019) does for MCMC, done for
importance sampling (as in the SNF paper's "flow + MC" blocks and in
"annealed flow transport", Arbel et al. 2021, without retraining the flow).
The step sizes are tuned by a short pilot toward a target acceptance rate
(:func:`tune_step_sizes`: dual averaging, :mod:`pyro_relax.ops.adaptation`), not
by gradients.
"""

from __future__ import annotations

__all__ = ["PulledBackDensity", "annealed_hmc_levels", "tune_step_sizes"]

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pyro_relax.core import sum_event
from pyro_relax.core.checks import check_positive_int
from pyro_relax.core.switch import validation
from pyro_relax.distributions.adapter import as_layer
from pyro_relax.ops.adaptation import dual_averaging_init, dual_averaging_update
from pyro_relax.stochastic.block import AnnealedBlock
from pyro_relax.stochastic.density import (
    LogDensity,
    attach_log_density,
    check_log_density_output,
    standard_normal_log_prob,
)
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.schedules import geometric_schedule, linear_schedule
from pyro_relax.stochastic.snf import StochasticNormalizingFlow
from pyro_relax.stochastic.trace import trace_blocks


class PulledBackDensity(nn.Module):
    r"""``log p(f(u)) + log|det f'(u)|``: a target seen from the latent space of layers ``f``.

    Arguments:
        layers: exact bijective layers (Pyro transforms or relaxed layers), from the
            latent space to the target's space.
        target: the target log density (a callable or a module with ``log_prob``)
            mapping ``batch + event`` to ``batch``.

    Raises:
        ValueError: if a layer is not an exact bijection (its log-det would be a
            one-sample estimate, not a density).

    Example:
        >>> import torch, pyro.distributions.transforms as T
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> d = PulledBackDensity(
        ...     [T.AffineTransform(torch.ones(2), 2.0, event_dim=1)], standard_normal_log_prob)
        >>> d(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, layers: Sequence[object], target: LogDensity) -> None:
        super().__init__()
        if isinstance(layers, str | bytes) or not isinstance(layers, Sequence):
            raise TypeError(
                f"PulledBackDensity: expected a list of layers, got {type(layers).__name__}"
            )
        converted = [as_layer(layer) for layer in layers]  # type: ignore[arg-type]
        for i, layer in enumerate(converted):
            if not (layer.bijective and layer.exact):
                raise ValueError(
                    f"PulledBackDensity: expected exact bijective layers, got "
                    f"{type(layer).__name__} at position {i}"
                )
        self.layers = nn.ModuleList(converted)
        self._target_fn = attach_log_density(self, "target", target)

    def target_log_prob(self, x: Tensor) -> Tensor:
        """The target's log density at data-space points ``x`` (no checks)."""
        return self._target_fn(x)

    def push(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(u), log|det f'(u)|)``, the log-det of shape ``u.shape[:-1]``.

        Each layer's contribution is summed over the event dimensions it leaves
        (an elementwise transform returns one per coordinate).
        """
        log_det = u.new_zeros(u.shape[:-1])
        if log_det.numel() == 0:  # an empty batch: nothing to map (some transforms cannot)
            return u, log_det
        shape = tuple(u.shape)
        try:
            with validation(False):  # inside sampler steps: no host synchronization
                for layer in self.layers:
                    u, s = layer.decode(u)
                    log_det = log_det + sum_event(s, s.dim() - log_det.dim())
        except (ValueError, RuntimeError, IndexError) as err:  # shape errors, with our name
            raise ValueError(
                f"PulledBackDensity: cannot map u of shape {shape} through the layers "
                f"(is the event shape the one they were built for?): {err}"
            ) from err
        return u, log_det

    def forward(self, u: Tensor) -> Tensor:
        """``log p(f(u)) + log|det f'(u)|`` of shape ``u.shape[:-1]``.

        Raises:
            ValueError: if the target does not return the batch shape.
        """
        if not isinstance(u, Tensor) or u.dim() < 1:
            got = f"shape {tuple(u.shape)}" if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"PulledBackDensity: expected u of shape batch + event, got {got}")
        x, log_det = self.push(u)
        lp = check_log_density_output(self.target_log_prob(x), log_det.shape, "PulledBackDensity")
        return lp + log_det

    log_prob = forward


def annealed_hmc_levels(
    target: LogDensity,
    levels: int = 10,
    n_leapfrog: int = 3,
    step_size: float = 0.3,
    schedule: str = "linear",
    base: LogDensity = standard_normal_log_prob,
) -> list[HMCBlock]:
    r"""``levels`` HMC blocks annealing from ``base`` to ``target`` (``lambda_k = k / K``).

    The last level targets ``target`` itself. Place them before a flow's layers
    with ``target`` a :class:`PulledBackDensity` of those layers (the default
    base ``N(0, I)`` is then the flow's own base).

    Arguments:
        target: the last level's log density.
        levels: the number of blocks ``K >= 1``.
        n_leapfrog: leapfrog steps per HMC proposal.
        step_size: the initial step size of every level (tune it with
            :func:`tune_step_sizes`).
        schedule: ``"linear"`` (``k / K``) or ``"geometric"`` (from 0.01 to 1).
        base: the first level's base log density.

    Example:
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> blocks = annealed_hmc_levels(lambda x: -x.square().sum(-1), levels=4)
        >>> [round(float(b.density.lam()), 2) for b in blocks]
        [0.25, 0.5, 0.75, 1.0]
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"annealed_hmc_levels: expected an int levels >= 1, got {levels!r}")
    if schedule not in ("linear", "geometric"):
        raise ValueError(
            f"annealed_hmc_levels: expected schedule 'linear' or 'geometric', got {schedule!r}"
        )
    lams = linear_schedule(levels) if schedule == "linear" else geometric_schedule(levels, 0.01)
    return [
        HMCBlock(target, base, lam=float(lam), step_size=step_size, n_leapfrog=n_leapfrog)
        for lam in lams
    ]


@torch.no_grad()
def tune_step_sizes(
    snf: StochasticNormalizingFlow | Callable[[int], object],
    blocks: Sequence[AnnealedBlock] | None = None,
    rounds: int = 10,
    batch_size: int = 256,
    target_accept: float = 0.7,
    *,
    gamma: float = 0.1,
    t0: float = 10.0,
) -> list[float]:
    """Adapt each Metropolis-adjusted block's step size toward an acceptance rate (a pilot).

    Each round draws ``batch_size`` paths and makes one dual-averaging update
    (:func:`~pyro_relax.ops.adaptation.dual_averaging_update`, Hoffman and
    Gelman 2014) of every block's log step size with the block's mean
    acceptance probability of the round (read from the returned
    :class:`~pyro_relax.stochastic.block.BlockInfo`, one host synchronization
    per round). The shrinkage point ``mu`` is the initial step size, and
    ``gamma`` is twice Hoffman and Gelman's 0.05: a round's acceptance averages
    many paths, and the damper steps keep the pilot out of the oscillations
    between too small and unstable step sizes. After the last round each block
    keeps the averaged step size. Blocks without an acceptance rate
    (unadjusted Langevin) are left alone. Run it before drawing the weights used
    for estimates: the pilot's draws are discarded.

    Arguments:
        snf: a :class:`StochasticNormalizingFlow`, or a callable ``n -> anything``
            that draws ``n`` paths through ``blocks``.
        blocks: the blocks to tune (default ``snf.blocks``).
        rounds: pilot rounds.
        batch_size: paths per round.
        target_accept: the goal acceptance rate in ``(0, 1)``.
        gamma: dual averaging's regularization ``gamma > 0``.
        t0: dual averaging's early-iteration damping ``t0 >= 0``.

    Returns:
        The tuned step sizes, one per block with an acceptance rate.

    Example:
        >>> import torch
        >>> from pyro_relax.stochastic.density import standard_normal_log_prob
        >>> target = lambda x: standard_normal_log_prob(x / 3.0)
        >>> snf = StochasticNormalizingFlow((2,), annealed_hmc_levels(target, levels=2), target)
        >>> len(tune_step_sizes(snf, rounds=2, batch_size=16))
        2
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"tune_step_sizes: expected an int rounds >= 1, got {rounds!r}")
    check_positive_int(batch_size, "batch_size", "tune_step_sizes")
    if not (isinstance(target_accept, float) and 0.0 < target_accept < 1.0):
        raise ValueError(
            f"tune_step_sizes: expected target_accept in (0, 1), got {target_accept!r}"
        )
    if blocks is None:
        if not isinstance(snf, StochasticNormalizingFlow):
            raise TypeError("tune_step_sizes: pass blocks= when snf is not a flow")
        blocks = snf.blocks
    draw = snf.sample_with_trace if isinstance(snf, StochasticNormalizingFlow) else snf
    states = {id(b): dual_averaging_init(b.log_step_size, mu=b.log_step_size) for b in blocks}
    adapted: set[int] = set()
    for _ in range(rounds):
        with trace_blocks() as trace:
            draw(batch_size)
        for block in blocks:
            probs = [i.acceptance_probability for i in trace.infos_of(block)]
            probs = [p for p in probs if p is not None]
            if not probs:
                continue
            state = dual_averaging_update(
                states[id(block)], torch.stack(probs).mean(), target_accept, gamma=gamma, t0=t0
            )
            states[id(block)] = state
            block.log_step_size.copy_(state.log_step_size)
            adapted.add(id(block))
    tuned = [b for b in blocks if id(b) in adapted]
    for block in tuned:
        block.log_step_size.copy_(states[id(block)].log_step_size_avg)
    return [float(b.log_step_size.exp()) for b in tuned]
