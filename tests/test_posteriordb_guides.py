"""Validation of the flow and SNF autoguides on real posteriors (posteriordb reference draws).

Each case fits a guide with SVI to one of the seven Pyro posteriors in
``examples/posteriordb`` and compares the PSIS-reweighted posterior mean and
standard deviation of every Stan parameter with the gold-standard reference
(10 chains x 1000 Stan NUTS draws).

Tolerance, in units of the reference standard deviation ``sd`` of each parameter:

* ``|mean - ref_mean| < 0.3 sd`` and ``|sd_hat / ref_sd - 1| < 0.3``.
* Monte Carlo part: the reference mean has ``se = sd / sqrt(10000) = 0.01 sd``;
  the guide estimate uses ``N_DRAWS = 4000`` draws, and with an importance ESS of
  at least ~400 its ``se <= sd / 20 = 0.05 sd``; the sd ratio has
  ``se ~ 1 / sqrt(2 ESS) <= 0.035``. Four standard errors of the difference give
  ``~0.2`` (mean) and ``~0.15`` (sd ratio).
* Approximation part: a variational fit with a short SVI run is not exact, so
  ``0.1`` (mean) and ``0.15`` (sd ratio) more are allowed, for a common 0.3.

Cases where a guide does not reach this tolerance are ``xfail(strict=True)`` with
the measured errors in the reason (strict: the test fails if they start passing).
The default (not slow) run covers three posteriors with short fits: the non-centered
eight schools with the flow and SNF guides, the centered one (a funnel) with the
flow plus annealed importance sampling, and kilpisjarvi with ``guide="auto"``; the
full matrix (every posterior, and ``auto`` on two seeds at the goal's tighter
tolerance) is ``@pytest.mark.slow``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pyro_relax.diagnostics import psis_expectation, psis_khat
from pyro_relax.infer.runner import fit_guide, guide_draws
from pyro_relax.testing.posteriordb import reference_moments

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.posteriordb import MODELS, load_model  # noqa: E402

N_DRAWS = 4000
MEAN_TOL = 0.3  # reference sds; derivation in the module docstring
SD_TOL = 0.3  # relative error of the sd; same
GUIDE_KWARGS: dict[str, dict[str, Any]] = {
    "flow": {"num_layers": 2, "hidden": 32, "kind": "iaf"},
    "flow-ais": {"num_layers": 2, "hidden": 32, "kind": "iaf"},
    "snf": {"num_layers": 2, "hidden": 16},
}
# (steps, lr) per guide of the full (slow) fits and of the default (fast) run, with
# fit_guide's 8 vectorized particles per step; an SNF step costs about 3x a flow step
# (two Langevin blocks, each a gradient of the model), and fit_guide spends the first
# half of the SNF's steps on its flow part alone. "flow-ais" trains the same flow
# as "flow" (same seed and budget) and adds 10 annealed HMC levels in its base space.
SLOW_FIT = {"flow": (1500, 0.02), "flow-ais": (1500, 0.02), "snf": (600, 0.03)}
FAST_FIT = {"flow": (1000, 0.02), "flow-ais": (1000, 0.02), "snf": (300, 0.03)}

# Measured failures (seed 0, SLOW_FIT; numbers from a --runxfail run): strict xfails,
# never a loosened tolerance.
XFAIL: dict[tuple[str, str], str] = {
    # (flow on gp_pois_regr and kilpisjarvi failed before the Pathfinder start and the
    # whitening layer; a --runxfail run now passes all 13 flow cases. flow-ais on
    # gp_pois_regr and kilpisjarvi, and snf on arK, eight_schools_centered and
    # kilpisjarvi, were strict xfails too; they pass since the whitened start, measured
    # by a -m slow run on 2026-12-01, and their marks are removed.)
    # SNF: warm-started (flow alone for 300 steps, then flow + 2 Langevin blocks in the
    # flow's base space for 300 steps), as fit_guide does.
    ("snf", "gp_pois_regr"): (
        "k-hat 0.98; rho mean -2.3 sd (sd -61%), alpha mean -1.2 sd (sd -88%), f[10] +0.75 sd"
    ),
}


def psis_moments(values: np.ndarray, log_w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """PSIS-reweighted mean and sd of draws ``values`` of shape ``(n, *event)``."""
    mean = psis_expectation(values, log_w)
    second = psis_expectation(values * values, log_w)
    return mean, np.sqrt(np.maximum(second - mean * mean, 0.0))


def moment_errors(
    fit: Any, module: Any, reference: Mapping[str, tuple[float, float]]
) -> tuple[dict[str, tuple[float, float]], float]:
    """Per-parameter ``(mean error / ref_sd, sd / ref_sd - 1)`` and the k-hat of the guide."""
    torch.manual_seed(1)
    samples, log_w = guide_draws(fit, module.model, N_DRAWS)
    values = module.to_reference_names(samples)
    _, khat = psis_khat(log_w)
    out = {}
    for name, (ref_mean, ref_sd) in reference.items():
        mean, sd = psis_moments(values[name], log_w)
        out[name] = (float((mean - ref_mean) / ref_sd), float(sd / ref_sd - 1.0))
    return out, float(khat)


def check_guide(
    guide: str, short: str, steps: int, lr: float, seed: int = 0,
    mean_tol: float = MEAN_TOL, sd_tol: float = SD_TOL,
) -> None:
    module = load_model(short)
    torch.manual_seed(seed)
    fit = fit_guide(
        module.model, guide, steps=steps, lr=lr, seed=seed, progress=False,
        guide_kwargs=GUIDE_KWARGS.get(guide),
    )
    errors, khat = moment_errors(fit, module, reference_moments(module.NAME))
    bad = {k: (round(m, 3), round(s, 3)) for k, (m, s) in errors.items()
           if not (abs(m) < mean_tol and abs(s) < sd_tol)}
    assert not bad, f"{guide} on {short} (k-hat {khat:.2f}): (mean err, sd err) {bad}"


def _case(guide: str, short: str) -> Any:
    marks = [pytest.mark.slow]
    if (guide, short) in XFAIL:
        marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[guide, short]))
    return pytest.param(guide, short, marks=marks, id=f"{guide}-{short}")


@pytest.mark.parametrize(
    ("guide", "short"),
    [("flow", "eight_schools_noncentered"), ("snf", "eight_schools_noncentered"),
     ("flow-ais", "eight_schools_centered")],
)
def test_guide_matches_reference_fast(guide: str, short: str) -> None:
    check_guide(guide, short, *FAST_FIT[guide])


# guide="auto" is held to the issue's goal: 0.2 reference sd on means, 20% on sds. Its
# Monte Carlo part is as above with ESS >= ~1000 (k-hat < 0.7 on 4000 draws): se <= 0.03
# sd on means, 0.02 on the sd ratio, four of them ~0.13 and ~0.09; the rest is the fit.
AUTO_TOL = 0.2
AUTO_STEPS = 3000  # the most; auto stops when the windowed ELBO stalls
# measured (seeds 0 and 1): all 26 cases pass. gp_pois_regr seed 0 failed (rho sd -25%,
# k-hat 0.65) while auto judged k-hat on 1000 draws; with 2000 it anneals and passes.
XFAIL_AUTO: dict[tuple[str, int], str] = {}


def test_auto_matches_reference_fast() -> None:
    """The third posterior of the default run: kilpisjarvi (corr(alpha, beta) = -0.99999)."""
    check_guide("auto", "kilpisjarvi", AUTO_STEPS, 0.01, mean_tol=AUTO_TOL, sd_tol=AUTO_TOL)


def _auto_case(short: str, seed: int) -> Any:
    marks = [pytest.mark.slow]
    if (short, seed) in XFAIL_AUTO:
        marks.append(pytest.mark.xfail(strict=True, reason=XFAIL_AUTO[short, seed]))
    return pytest.param(short, seed, marks=marks, id=f"auto-{short}-seed{seed}")


@pytest.mark.parametrize(("short", "seed"), [_auto_case(s, sd) for s in sorted(MODELS)
                                             for sd in (0, 1)])
def test_auto_matches_reference(short: str, seed: int) -> None:
    check_guide("auto", short, AUTO_STEPS, 0.01, seed=seed, mean_tol=AUTO_TOL, sd_tol=AUTO_TOL)


@pytest.mark.parametrize(
    ("guide", "short"),
    [_case(g, s) for g in ("flow", "flow-ais", "snf") for s in sorted(MODELS)],
)
def test_guide_matches_reference(guide: str, short: str) -> None:
    check_guide(guide, short, *SLOW_FIT[guide])


def test_moment_errors_detect_a_wrong_fit() -> None:
    # The check must be able to fail: a guide fitted for 1 step is far from the reference.
    module = load_model("eight_schools_noncentered")
    fit = fit_guide(module.model, "flow", steps=1, lr=0.01, seed=0, progress=False,
                    guide_kwargs=GUIDE_KWARGS["flow"])
    errors, _ = moment_errors(fit, module, reference_moments(module.NAME))
    assert max(abs(s) for _, s in errors.values()) > SD_TOL
