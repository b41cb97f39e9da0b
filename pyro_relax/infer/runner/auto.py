r"""``guide="auto"``: fit, check, and escalate until the importance weights say the fit is good.

The stages, each recorded with its time and k-hat in ``FitResult.stages``:

1. **Pathfinder** (4 paths, float64) gives the best Gaussian of the posterior.
2. **A flow in the whitened space**: the IAF flow guide whose last layer is
   the whitening map ``loc + L u`` from Pathfinder, trained until the windowed
   ELBO stops improving (``until_converged``), not for a fixed step count.
3. **PSIS k-hat** of ``num_check`` importance-weighted draws. At most 0.7:
   done.
4. Above 0.7: **annealed importance sampling** from the flow in its base
   space (:meth:`~pyro_relax.infer.guides.AutoSNFGuide.from_flow_guide`),
   with the number of levels doubled (10, 20, 40, ...) until k-hat is below
   0.5 or the time budget is spent.
5. Still above 0.7: **NeuTra NUTS** (NUTS in the flow's base space) for
   ``num_check`` draws; its draws are the answer (equally weighted), with its
   ESS recorded.

The answer is the last stage's; ``FitResult.extra["verdict"]`` says how far
to trust it and ``extra["advice"]`` what to try when it is unreliable.
"""

from __future__ import annotations

__all__ = ["DrawsGuide", "fit_auto"]

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pyro_relax._progress import interactive
from pyro_relax.core.checks import check_int, check_positive
from pyro_relax.diagnostics.psis import KHAT_GOOD, KHAT_RELIABLE
from pyro_relax.infer.draws import MIN_DRAWS_PER_DIM, Verdict, WeightedDraws, verdict
from pyro_relax.infer.guides.base import check_dtype, check_num_samples
from pyro_relax.infer.guides.layout import check_continuous_model
from pyro_relax.infer.runner.common import FitOptions, FitResult, guide_draws, with_annealing
from pyro_relax.infer.runner.mcmc import run_mcmc
from pyro_relax.infer.runner.svi import fit_svi, make_flow_guide


class DrawsGuide:
    """Equally weighted posterior draws (from MCMC) behind the guides' ``importance_weights`` API.

    Arguments:
        samples: site name to draws ``(n,) + site_shape``.

    Example:
        >>> import torch
        >>> g = DrawsGuide({"x": torch.arange(6.0)})
        >>> g.importance_weights(4)[1].tolist()
        [0.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, samples: dict[str, Tensor]) -> None:
        sizes = {v.shape[0] for v in samples.values()} if samples else set()
        if len(sizes) != 1:
            raise ValueError(f"DrawsGuide: expected draws with one leading size, got {sizes}")
        self.samples = samples
        self.num_draws = sizes.pop()

    def importance_weights(self, num_samples: int) -> tuple[dict[str, Tensor], Tensor]:
        """Up to ``num_samples`` of the draws (evenly thinned) with log weights 0."""
        n = check_num_samples(num_samples, "DrawsGuide.importance_weights")
        n = min(n, self.num_draws)
        like = next(iter(self.samples.values()))
        idx = torch.linspace(0, self.num_draws - 1, n, device=like.device).round().long()
        out = {k: v[idx] for k, v in self.samples.items()}
        return out, torch.zeros(n, dtype=torch.float64, device=like.device)


def _check(fit: FitResult, model: Callable[[], Any], n: int, source: str) -> Verdict:
    """The verdict on ``n`` draws of a stage's answer (the same rule the CLI applies)."""
    samples, log_w = guide_draws(fit, model, n)
    dim = fit.guide.latent_dim if hasattr(fit.guide, "latent_dim") else 0
    return verdict(WeightedDraws(samples, log_w, source, latent_dim=int(dim),
                                 converged=fit.converged))


def fit_auto(
    model: Callable[[], Any],
    *,
    seed: int = 0,
    progress: bool = True,
    dtype: torch.dtype = torch.float64,
    lr: float = 1e-2,
    num_particles: int = 8,
    max_steps: int = 5000,
    budget: float = 600.0,
    num_check: int = 2000,
    max_levels: int = 160,
) -> FitResult:
    """Fit ``model`` with the escalating pipeline of the module docstring.

    Arguments:
        model: a zero-argument Pyro model with continuous latent sites.
        seed: the random seed.
        progress: show progress bars.
        dtype: the dtype of the fit (float64 by default).
        lr: the flow's learning rate.
        num_particles: ELBO particles per step.
        max_steps: the most SVI steps of the flow.
        budget: seconds after which no further annealing stage starts; a stage is
            not started when twice the previous stage's time would overrun it (a
            started stage runs to its end; NeuTra, the last resort, runs regardless).
        num_check: draws used for each k-hat (and NeuTra's draws); 2000, since k-hat
            from 1000 draws moved by up to 0.2 between runs (gp_pois_regr: 0.69 then 0.77).
        max_levels: the most annealing levels tried.

    Returns:
        A :class:`~pyro_relax.infer.runner.common.FitResult` named ``"auto"`` whose
        ``extra`` holds ``method`` (the stage whose answer it is), ``khat``,
        ``verdict`` and ``advice``.

    Raises:
        ValueError: for a budget that is not positive, or when Pathfinder
            finds no finite point.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> fit = fit_auto(model, progress=False, max_steps=1000, num_check=200)
        >>> fit.extra["method"], fit.extra["verdict"]
        ('flow', 'good')
    """
    budget = check_positive(budget, "budget", "fit_auto")
    check_continuous_model(model)
    num_check = check_num_samples(num_check, "fit_auto", 25)
    t0 = time.perf_counter()
    opts = FitOptions(steps=check_int(max_steps, "max_steps", "fit_auto", 1),
                      lr=check_positive(lr, "lr", "fit_auto"), seed=seed,
                      num_particles=check_int(num_particles, "num_particles", "fit_auto", 1),
                      progress=progress, dtype=check_dtype(dtype, "fit_auto"),
                      until_converged=True)
    fit = fit_svi(model, opts, name="flow", make=make_flow_guide, whitened=True)
    # enough draws for a k-hat in this dimension (see pyro_relax.infer.draws)
    num_check = max(num_check, MIN_DRAWS_PER_DIM * fit.guide.latent_dim)
    start = time.perf_counter()
    check = _check(fit, model, num_check, "flow")
    khat = math.inf if math.isnan(check.khat) else check.khat
    fit.stages[-1]["khat"] = khat
    fit.stages[-1]["seconds"] += time.perf_counter() - start
    method, best = "flow", fit
    if khat >= KHAT_RELIABLE:
        levels = 10
        # the first annealing stage always runs; doubling goes on while the budget lasts,
        # and a stage is not started when its estimated time (twice the last) would overrun
        last = 0.0
        while levels <= max_levels and (
            levels == 10 or time.perf_counter() - t0 + 2 * last < budget
        ):
            torch.manual_seed(seed)
            start = time.perf_counter()
            ais = with_annealing(fit, levels, "fit_auto")
            ais_check = _check(ais, model, num_check, f"flow-ais ({levels} levels)")
            k = math.inf if math.isnan(ais_check.khat) else ais_check.khat
            ais.stages[-1]["khat"] = k
            ais.stages[-1]["seconds"] = last = time.perf_counter() - start
            fit.stages.append(ais.stages[-1])
            if k < khat:
                khat, method, best, check = k, f"flow-ais ({levels} levels)", ais, ais_check
            if k < KHAT_GOOD:
                break
            levels *= 2
    extra: dict[str, Any] = {}
    if khat >= KHAT_RELIABLE:
        start = time.perf_counter()
        # Pyro's MCMC bar is a live bar only: in a log it stays off (one line per stage)
        res = run_mcmc(model, "neutra", num_samples=num_check, warmup_steps=num_check // 2,
                       seed=seed, progress=progress and interactive(), guide=fit)
        draws = {k: v.reshape((-1,) + v.shape[2:]) for k, v in res.samples.items()}
        fit.stages.append({"stage": "neutra", "seconds": time.perf_counter() - start,
                           "draws": num_check})
        method, best = "neutra", FitResult(DrawsGuide(draws), fit.elbo, 0.0, "neutra")
        extra["neutra_flow_khat"] = khat
    seconds = time.perf_counter() - t0
    if method == "neutra":
        label = "mcmc"
        advice = ("the flow's importance weights stayed heavy-tailed (k-hat "
                  f"{extra['neutra_flow_khat']:.2f}); these are NeuTra NUTS draws: check their "
                  "ESS and run more chains (pyro-relax mcmc --kernel neutra --chains 4)")
    else:
        label, advice = check.label, check.advice
    extra.update({"method": method, "khat": khat, "verdict": label, "advice": advice})
    return FitResult(best.guide, fit.elbo, seconds, "auto", fit.stages, fit.dtype,
                     fit.pathfinder, extra)
