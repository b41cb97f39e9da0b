"""fit_guide's robustness: Pathfinder start and whitening, float64, dropped particles, auto.

Tolerances: a mean from ``n`` equally weighted draws of a unit-sd posterior has
Monte Carlo sd ``1/sqrt(n)``; we allow 5 of them. For importance-weighted
draws the effective size is the PSIS ESS, which the tests read back.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_relax.diagnostics import psis_expectation, psis_khat
from pyro_relax.infer.auto import DrawsGuide, fit_auto
from pyro_relax.infer.guides import AutoFlowGuide
from pyro_relax.infer.runner import GUIDES, fit_guide, guide_draws
from pyro_relax.models import funnel

D = 6
# a correlated Gaussian with condition number 1e5: sds from 1e-3 to ~0.3, strong correlations
_rng = np.random.default_rng(0)
_q, _ = np.linalg.qr(_rng.normal(size=(D, D)))
_eig = np.logspace(-5, 0, D) * 0.1
COV = (_q * _eig) @ _q.T
MEAN = np.linspace(-2.0, 3.0, D)


def badly_scaled_gaussian() -> None:
    cov = torch.as_tensor(COV, dtype=torch.get_default_dtype())
    loc = torch.as_tensor(MEAN, dtype=cov.dtype)
    pyro.sample("x", dist.MultivariateNormal(loc, covariance_matrix=cov))


def overflowing_model() -> None:
    """log p(x) = -x^2/2 + x (posterior N(1, 1)), written so float32 overflows for x > 1.7."""
    x = pyro.sample("x", dist.Normal(torch.zeros(()), 1.0))
    c = torch.tensor(87.0)  # exp(87 + x) is inf in float32 once x > 1.7, finite in float64
    pyro.factor("f", torch.log(torch.exp(c + x) / torch.exp(c)))


def test_whitening_layer_fits_a_condition_1e5_gaussian_fast():
    fit = fit_guide(badly_scaled_gaussian, "flow", steps=200, seed=0, progress=False,
                    guide_kwargs={"num_layers": 1, "hidden": 16})
    assert [s["stage"] for s in fit.stages] == ["pathfinder", "svi (flow)"]
    torch.manual_seed(0)
    samples, log_w = guide_draws(fit, badly_scaled_gaussian, 2000)
    _, khat = psis_khat(log_w)
    assert khat < 0.5
    x = samples["x"].double().numpy()
    mean = psis_expectation(x, log_w)
    # 5 Monte Carlo sds of a mean of ~2000 effective draws, per coordinate
    tol = 5 * np.sqrt(np.diag(COV) / 1000)
    assert np.all(np.abs(mean - MEAN) < tol)


def test_without_whitening_the_same_budget_fails():
    """The same flow from the feasible point with unit scale: the check above can fail."""
    fit = fit_guide(badly_scaled_gaussian, "flow", steps=200, seed=0, progress=False,
                    guide_kwargs={"num_layers": 1, "hidden": 16}, init="feasible")
    torch.manual_seed(0)
    _, log_w = guide_draws(fit, badly_scaled_gaussian, 2000)
    _, khat = psis_khat(log_w)
    assert khat > 0.7


def test_float64_fits_a_model_that_overflows_float32():
    fit64 = fit_guide(overflowing_model, "flow", steps=150, seed=0, progress=False)
    svi = fit64.stages[-1]
    assert svi["dropped_particles"] == 0 and svi["skipped_steps"] == 0
    assert all(math.isfinite(e) for e in fit64.elbo)
    torch.manual_seed(1)
    samples, log_w = guide_draws(fit64, overflowing_model, 2000)
    assert samples["x"].dtype == torch.get_default_dtype()  # draws in the caller's dtype
    mean = psis_expectation(samples["x"].double().numpy(), log_w)
    assert abs(mean - 1.0) < 5 / math.sqrt(1000)  # posterior N(1, 1), ESS > 1000 here
    # in float32 the same fit meets +inf densities: those particles are dropped, never NaN
    fit32 = fit_guide(overflowing_model, "flow", steps=150, seed=0, progress=False,
                      dtype="float32", init="feasible")
    assert fit32.stages[-1]["dropped_particles"] > 0
    assert all(math.isfinite(e) for e in fit32.elbo)


def test_one_dimensional_flow_guide_starts_at_its_point():
    """Issue 10 item 9: feasible point, unit scale, so N(0, 1) draws before any step."""
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    from pyro.infer.autoguide.initialization import init_to_feasible

    pyro.set_rng_seed(0)
    guide = AutoFlowGuide(model, init_loc_fn=init_to_feasible, init_scale=1.0)
    z, _ = guide.sample_unconstrained(4000)
    assert abs(float(z.mean())) < 5 / math.sqrt(4000)
    assert abs(float(z.std()) - 1.0) < 5 / math.sqrt(2 * 4000)  # sd of an sd estimate


def test_pathfinder_guide_draws_and_weights():
    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        pyro.sample("y", dist.Normal(mu, 1.0).expand([20]).to_event(1), obs=torch.ones(20))

    fit = fit_guide(model, "pathfinder", seed=0, progress=False)
    assert fit.stages[0]["stage"] == "pathfinder" and math.isfinite(fit.elbo[-1])
    samples, log_w = guide_draws(fit, model, 1000)
    post_mean = 20 / (20 + 0.01)  # conjugate normal posterior, sd 1/sqrt(20.01)
    mean = psis_expectation(samples["mu"].double().numpy(), log_w)
    assert abs(mean - post_mean) < 5 / math.sqrt(20.01 * 1000)
    _, khat = psis_khat(log_w)
    assert khat < 0.5  # the posterior is Gaussian: Pathfinder's Gaussian is nearly exact


@pytest.mark.slow  # minutes since the low-rank Pathfinder merge: its funnel start leaves the
# 100-step flow at k-hat 3.8 (pathfinder 1.3), so the NeuTra stage's NUTS builds deep trees
def test_auto_escalates_on_a_funnel_and_records_its_stages():
    def model():
        funnel(10, 3.0)

    fit = fit_auto(model, progress=False, max_steps=100, num_check=100, budget=1.0,
                   num_particles=4)
    names = [s["stage"] for s in fit.stages]
    assert names[:2] == ["pathfinder", "svi (flow)"]
    assert all("seconds" in s for s in fit.stages)
    flow_khat = fit.stages[1]["khat"]
    if flow_khat > 0.7:  # then annealing must have run, at least once
        assert any(n.startswith("ais") for n in names)
    assert fit.extra["method"] in ("flow", "neutra") or fit.extra["method"].startswith("flow-ais")
    if fit.extra["method"] == "neutra":
        assert isinstance(fit.guide, DrawsGuide) and fit.extra["verdict"] == "mcmc"
        assert fit.extra["advice"]
    else:
        assert fit.extra["khat"] <= flow_khat
    samples, log_w = guide_draws(fit, model, 50)
    assert samples["x"].shape == (50, 9) and bool(torch.isfinite(log_w).all())


def test_auto_is_a_guide_name():
    assert "auto" in GUIDES and "pathfinder" in GUIDES and "mvn" in GUIDES


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "float16"}, "dtype"),
        ({"init": "median"}, "init"),
        ({"guide": "nope"}, "unknown guide"),
    ],
)
def test_fit_guide_bad_options(kwargs, match):
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    options = {"guide": "flow", "steps": 2, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_guide(model, **options)


@pytest.mark.parametrize("budget", [0, -1.0, float("nan"), float("inf")])
def test_auto_rejects_a_bad_budget(budget):
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="budget"):
        fit_auto(model, budget=budget, progress=False)


def test_no_finite_point_is_a_clear_error():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.factor("nowhere", torch.full_like(x, -math.inf))

    with pytest.raises(ValueError, match="no finite point"):
        fit_guide(model, "flow", steps=2, progress=False)


def test_mala_is_preconditioned_by_pathfinder():
    from pyro_relax.infer.runner import pathfinder_preconditioner, run_mcmc

    loc, var = pathfinder_preconditioner(badly_scaled_gaussian, 0)
    # a Gaussian posterior: Pathfinder's (exact-Hessian) Gaussian is the posterior itself
    np.testing.assert_allclose(loc["x"].double().numpy(), MEAN, atol=1e-3)
    np.testing.assert_allclose(var["x"].double().numpy(), np.diag(COV), rtol=1e-3)
    res = run_mcmc(badly_scaled_gaussian, "mala", num_samples=200, warmup_steps=100,
                   progress=False)
    x = res.samples["x"][0].double().numpy()
    # started at the mean with the right scales, the chain stays in the bulk: every
    # coordinate's chain mean is within 3 posterior sds (measured: unpreconditioned MALA
    # from a uniform start, same budget, is 6 to 38 sds away)
    assert np.all(np.abs(x.mean(0) - MEAN) < 3 * np.sqrt(np.diag(COV)))


def test_fab_is_a_fit_guide_method():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from label_switching import data, make_model

    model = make_model(data())
    fit = fit_guide(model, "fab", steps=3, progress=False,
                    guide_kwargs={"batch_size": 32, "min_buffer_size": 64})
    assert fit.name == "fab" and fit.stages[0]["stage"] == "fab"
    assert fit.stages[0]["target_evals"] > 0 and math.isfinite(fit.elbo[-1])
    samples, log_w = guide_draws(fit, model, 100)
    assert samples["mu"].shape[0] == 100 and bool(torch.isfinite(log_w).any())


def test_float64_fit_then_annealing_and_imh_outside_the_fit_dtype():
    """The demo's sequence: a float64 fit, AIS and a flow-IMH chain from the caller's float32."""
    from pyro_relax.infer.guides import AutoSNFGuide
    from pyro_relax.infer.runner import run_mcmc

    def model():
        funnel(3, 1.0)

    fit = fit_guide(model, "flow", steps=20, progress=False,
                    guide_kwargs={"num_layers": 1, "hidden": 8})
    ais = AutoSNFGuide.from_flow_guide(fit.guide, levels=2, tune_rounds=0)
    assert {p.dtype for p in fit.guide.parameters()} == {torch.float64}  # shared, not converted
    assert ais.importance_weights(8)[1].dtype == torch.float64
    res = run_mcmc(model, "flow-imh", num_samples=10, warmup_steps=5, progress=False, guide=fit)
    assert res.samples["x"].dtype == torch.get_default_dtype()
    assert res.samples["x"].shape == (1, 10, 2)
