r"""What every method returns: weighted draws, and the one verdict computed from them.

:class:`WeightedDraws` holds posterior draws (constrained values by site),
their log importance weights and where they came from. :func:`verdict` is the
only place that turns draws into a judgement: the PSIS k-hat of the same
draws the user reads, with the thresholds of
:data:`~pyro_relax.diagnostics.psis.KHAT_GOOD` and
:data:`~pyro_relax.diagnostics.psis.KHAT_RELIABLE`, and two checks k-hat
cannot make:

* a fit that stopped before its ELBO converged is ``"unconverged"``, never
  ``"good"``: a guide that has not yet reached part of the posterior (a
  funnel's neck after 200 steps) gives light-tailed weights and a low k-hat
  on a wrong answer;
* with too few draws for the dimension (fewer than :data:`MIN_DRAWS_PER_DIM`
  per latent dimension, at least 25) the tail fit sees too little of the
  weights, and the verdict says ``"too few draws"`` instead of trusting it.

Equally weighted draws (MCMC) get the label ``"mcmc"``: their quality is in
their ESS and R-hat, not in a k-hat.
"""

from __future__ import annotations

__all__ = ["MIN_DRAWS_PER_DIM", "Verdict", "WeightedDraws", "elbo_stalled", "verdict"]

import math
import statistics
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyro_relax.diagnostics.psis import KHAT_GOOD, KHAT_RELIABLE, MIN_PSIS_DRAWS, psis_khat

MIN_DRAWS_PER_DIM = 2
"""Fewest draws per unconstrained dimension for a k-hat the verdict trusts."""


def elbo_stalled(elbo: list[float], window: int = 100, tol: float = 0.05) -> bool:
    """Whether an ELBO trace had stopped improving.

    Its last window's mean is compared with the window before: stalled when
    the gain is at most ``tol`` nats or two standard errors of the difference
    of the two means (the per-step ELBO is noisy), whichever is larger. A trace
    shorter than two windows is not known to have stalled (``False``).

    Example:
        >>> elbo_stalled([-5.0] * 300), elbo_stalled([float(i) for i in range(300)])
        (True, False)
    """
    finite = [v for v in elbo if math.isfinite(v)]
    if len(finite) < 2 * window:
        return False
    last, before = finite[-window:], finite[-2 * window : -window]
    gain = statistics.fmean(last) - statistics.fmean(before)
    se = math.sqrt((statistics.pvariance(last) + statistics.pvariance(before)) / window)
    return gain <= max(tol, 2.0 * se)


@dataclass(frozen=True)
class WeightedDraws:
    """Posterior draws with their log importance weights.

    Attributes:
        samples: site name to constrained draws ``(n,) + site_shape``.
        log_weights: ``(n,)`` log weights (float64; zeros for equally weighted draws).
        source: the method that made them (``"flow"``, ``"flow-ais (20 levels)"``, ...).
        weighted: whether the weights are importance weights (``False`` for MCMC draws).
        latent_dim: the number of unconstrained dimensions (0 when unknown).
        converged: whether the fit behind them converged (``None``: not known or no fit).
        noisy_weights: the weights are estimates (a subsampled likelihood), not exact.
    """

    samples: dict[str, Tensor]
    log_weights: Tensor
    source: str
    weighted: bool = True
    latent_dim: int = 0
    converged: bool | None = None
    noisy_weights: bool = False
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:  # noqa: D105 - the checks of the fields
        if not isinstance(self.log_weights, Tensor) or self.log_weights.dim() != 1:
            raise ValueError(
                f"WeightedDraws: expected log_weights of shape (n,), got "
                f"{getattr(self.log_weights, 'shape', type(self.log_weights).__name__)}"
            )
        n = self.log_weights.shape[0]
        for name, value in self.samples.items():
            if not isinstance(value, Tensor) or value.shape[:1] != (n,):
                raise ValueError(
                    f"WeightedDraws: expected {n} draws of {name!r}, got "
                    f"{getattr(value, 'shape', type(value).__name__)}"
                )

    @property
    def num_draws(self) -> int:
        """How many draws."""
        return int(self.log_weights.shape[0])


@dataclass(frozen=True)
class Verdict:
    """How far to trust a set of draws.

    Attributes:
        label: ``"good"``, ``"acceptable"``, ``"unreliable"``, ``"unconverged"``,
            ``"too few draws"``, ``"noisy weights"`` or ``"mcmc"``.
        khat: the PSIS k-hat of the draws (``nan`` when not computed).
        reason: one sentence on why.
        advice: what to do when the answer is not to be trusted (empty otherwise).
    """

    label: str
    khat: float
    reason: str
    advice: str = ""

    @property
    def reliable(self) -> bool:
        """Whether the draws may be read as the posterior."""
        return self.label in ("good", "acceptable", "mcmc")


def verdict(draws: WeightedDraws, advice: str = "") -> Verdict:
    """The one verdict on a set of draws (see the module docstring).

    Arguments:
        draws: the draws the user reads.
        advice: what to suggest when the answer is not reliable (a default is used
            when empty).

    Example:
        >>> import torch
        >>> lw = torch.zeros(100, dtype=torch.float64)
        >>> verdict(WeightedDraws({}, lw, "flow", latent_dim=3, converged=True)).label
        'good'
        >>> verdict(WeightedDraws({}, lw, "flow", latent_dim=3, converged=False)).label
        'unconverged'
    """
    if not isinstance(draws, WeightedDraws):
        raise TypeError(f"verdict: expected WeightedDraws, got {type(draws).__name__}")
    if not draws.weighted:
        return Verdict("mcmc", math.nan, f"equally weighted draws from {draws.source}")
    n, d = draws.num_draws, max(draws.latent_dim, 1)
    needed = max(MIN_PSIS_DRAWS, MIN_DRAWS_PER_DIM * d)
    if n < needed:
        why = (f"{n} draws, fewer than {MIN_PSIS_DRAWS} draws: no k-hat" if n < MIN_PSIS_DRAWS
               else f"{n} draws are too few for a k-hat in {d} dimensions (need {needed})")
        return Verdict("too few draws", math.nan, why,
                       advice or f"draw at least {needed} (--num-samples)")
    lw = draws.log_weights.to(torch.float64)
    if not bool(torch.isfinite(lw).any()):
        return Verdict("unreliable", math.inf, "no draw has a finite weight",
                       advice or "check the model's support; try pyro-relax mcmc --kernel nuts")
    _, k = psis_khat(lw)
    k = float(k)
    if k >= KHAT_RELIABLE:
        return Verdict("unreliable", k, f"k-hat {k:.2f} >= {KHAT_RELIABLE}: heavy-tailed weights",
                       advice or "try --guide auto with a larger --budget, or "
                       "pyro-relax mcmc --kernel nuts")
    if draws.converged is False:
        return Verdict("unconverged", k,
                       f"k-hat {k:.2f}, but the fit stopped before its ELBO converged, and "
                       "k-hat cannot see posterior mass the guide has not reached yet",
                       advice or "raise --steps, or use --guide auto (it trains until the "
                       "ELBO stalls)")
    if draws.noisy_weights:
        return Verdict("noisy weights", k,
                       f"k-hat {k:.2f} of weights estimated from a data subsample",
                       advice or "read the k-hat as a rough guide only")
    label = "good" if k < KHAT_GOOD else "acceptable"
    return Verdict(label, k, f"k-hat {k:.2f} from {n} draws")
