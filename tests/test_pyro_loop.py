"""The guide a Pyro user builds: ``AutoFlowGuide`` swapped into a plain Pyro SVI loop.

The documented recipe (docs/inference.md): ``guide = pr.AutoFlowGuide(model)``,
``SVI(model, guide, Adam({"lr": 5e-3}), Trace_ELBO(num_particles=8,
vectorize_particles=True))`` for 1000 steps, then ``Predictive``. The guide runs
Pathfinder when it first traces the model and starts whitened, as ``auto`` does.

Tolerance against the posteriordb reference (10 chains x 1000 Stan draws), in
reference sds: the reference mean's se is 0.01 sd; 4000 guide draws give a mean se
of about 0.016 sd and an sd-ratio se of about 0.011 (independent draws); four se
of the difference give 0.08 (mean) and 0.05 (sd ratio). The approximation of a
1000-step fit is allowed 0.12 more on the mean and 0.15 on the sd, for the issue's
goal of 0.2 sd and 20%.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO

import pyro_relax as pr
from pyro_relax.testing.posteriordb import reference_moments

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.posteriordb import MODELS, load_model  # noqa: E402

MEAN_TOL, SD_TOL = 0.2, 0.2  # reference sds and relative sd error; see the docstring
N_DRAWS = 4000


def swap_recipe(model, steps: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """The user's own loop with our guide swapped in; returns Predictive's latent draws."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = pr.AutoFlowGuide(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 5e-3}),
              Trace_ELBO(num_particles=8, vectorize_particles=True))
    for _ in range(steps):
        svi.step()
    shapes = {s.name: s.shape for s in guide.potential.sites}
    draws = Predictive(model, guide=guide, num_samples=N_DRAWS, return_sites=list(shapes))()
    return {k: v.reshape((N_DRAWS, *shapes[k])) for k, v in draws.items()}


def errors(short: str, seed: int = 0, steps: int = 1000) -> dict[str, tuple[float, float]]:
    module = load_model(short)
    values = module.to_reference_names(swap_recipe(module.model, steps, seed))
    out = {}
    for name, (ref_mean, ref_sd) in reference_moments(module.NAME).items():
        v = np.asarray(values[name], dtype=np.float64)
        out[name] = (float((v.mean(0) - ref_mean) / ref_sd), float(v.std(0) / ref_sd - 1.0))
    return out


def _check(short: str, seed: int = 0, steps: int = 1000) -> None:
    bad = {k: (round(m, 3), round(s, 3)) for k, (m, s) in errors(short, seed, steps).items()
           if not (abs(m) < MEAN_TOL and abs(s) < SD_TOL)}
    assert not bad, f"the swap recipe on {short}: (mean err, sd err) {bad}"


@pytest.mark.xfail(strict=True, reason="measured at 300 steps (seed 0): beta[1] mean -0.29 sd, "
                   "beta[2] +0.30 sd (sd +16%, +14%): the whitened start drifts under a "
                   "constant-lr loop")
def test_swap_recipe_matches_the_reference() -> None:
    """The default run: kidiq (intercept-slope correlation -0.99), a 300-step loop."""
    _check("kidiq", steps=300)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("short", sorted(MODELS))
def test_swap_recipe_matches_the_reference_everywhere(short: str, seed: int) -> None:
    _check(short, seed)


def test_swap_check_can_fail() -> None:
    module = load_model("kidiq")
    values = module.to_reference_names(swap_recipe(module.model, steps=1))
    ref = reference_moments(module.NAME)
    shifted = {k: np.asarray(v, dtype=np.float64) + 5 * ref[k][1] for k, v in values.items()}
    assert any(abs((shifted[k].mean(0) - m) / s) > MEAN_TOL for k, (m, s) in ref.items())
