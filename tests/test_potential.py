"""The one potential (pyro_relax.infer.model), its dtype rule, the fits' side effects,
any latent dimension, the memory check and the one verdict (pyro_relax.infer.draws)."""

import math
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_relax as pr
from pyro_relax.infer.draws import WeightedDraws, elbo_stalled, verdict
from pyro_relax.infer.guides.flow import IAF_MAX_DIM, build_flow_layers
from pyro_relax.infer.memory import check_allocation
from pyro_relax.infer.model import Potential
from pyro_relax.infer.runner import fit_guide, guide_draws

N, P = 100, 5
_gen = torch.Generator().manual_seed(0)
X = torch.randn(N, P, generator=_gen)  # float32, as a user's module-level data
BETA = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
Y = X @ BETA + 0.5 * torch.randn(N, generator=_gen)


def regression():
    beta = pyro.sample("beta", dist.Normal(0.0, 10.0).expand([P]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", N):
        pyro.sample("y", dist.Normal(X @ beta, sigma), obs=Y)


def _exact_beta():
    """The posterior mean of beta given sigma = 0.5 (a check of the location only)."""
    prec = X.double().T @ X.double() / 0.25 + torch.eye(P, dtype=torch.float64) / 100.0
    return torch.linalg.solve(prec, X.double().T @ Y.double() / 0.25)


def test_float32_matrix_product_model_is_evaluated_in_its_own_dtype():
    pot = Potential(regression)
    z = torch.zeros(3, P + 1, dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="dtype its prior gives"):
        lp = pot.log_density(z)
    assert pot.evaluation == "site dtype" and lp.dtype == torch.float64 and lp.shape == (3,)
    lp.sum().backward()
    assert bool(torch.isfinite(z.grad).all())
    # the same value as a float32 evaluation of the same point by hand
    with torch.no_grad():
        by_hand = (dist.Normal(0.0, 10.0).log_prob(torch.zeros(P)).sum()
                   + dist.HalfNormal(2.0).log_prob(torch.tensor(1.0))
                   + dist.Normal(torch.zeros(N), 1.0).log_prob(Y).sum())
    assert abs(float(lp[0]) - float(by_hand)) < 1e-3


@pytest.mark.parametrize("guide", ["flow", "normal", "pathfinder"])
def test_float32_data_fits_by_default_and_leaves_no_global_trace(guide):
    pyro.clear_param_store()
    mine = pyro.param("users_own", torch.tensor(3.0))
    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    fit = fit_guide(regression, guide, steps=500, lr=0.05, progress=False, num_particles=4)
    samples, log_w = guide_draws(fit, regression, 400)
    assert torch.get_default_dtype() == dtype and torch.get_default_device() == device
    assert set(pyro.get_param_store().keys()) == {"users_own"}
    assert pyro.param("users_own") is mine
    # the posterior sd of beta is about 0.05; 500 steps get the mean to within a few sd
    err = (samples["beta"].double().mean(0) - _exact_beta()).abs().max()
    assert err < 0.3, err
    assert log_w.dtype == torch.float64


def test_failed_fit_leaves_default_dtype_and_param_store_alone():
    pyro.clear_param_store()
    pyro.param("kept", torch.tensor(1.0))
    dtype = torch.get_default_dtype()

    def broken():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        if x.dim() > 0 and x.shape[0] > 1:
            raise RuntimeError("no batches here")
        pyro.sample("y", dist.Normal(x, float("nan")), obs=torch.tensor(0.0))

    with pytest.raises((FloatingPointError, ValueError, RuntimeError)):
        fit_guide(broken, "flow", steps=5, progress=False)
    assert torch.get_default_dtype() == dtype
    assert set(pyro.get_param_store().keys()) == {"kept"}


def test_a_model_param_is_refused_with_its_name():
    def model():
        m = pyro.param("m_loc", torch.tensor(0.0))
        pyro.sample("x", dist.Normal(m, 1.0))

    with pytest.raises(ValueError, match=r"pyro.param site\(s\) \['m_loc'\]"):
        fit_guide(model, "normal", steps=2, progress=False)


def test_the_users_svi_loop_with_our_guide_on_float32_data():
    pyro.clear_param_store()
    torch.manual_seed(0)
    guide = pr.AutoFlowGuide(regression, num_layers=1, hidden=16, kind="affine")
    svi = pyro.infer.SVI(regression, guide, pyro.optim.Adam({"lr": 0.05}),
                         pyro.infer.Trace_ELBO())
    with pytest.warns(RuntimeWarning):
        for _ in range(1000):
            svi.step()
    assert guide.potential.evaluation == "site dtype"
    pred = pyro.infer.Predictive(regression, guide=guide, num_samples=300,
                                 return_sites=["beta"])()
    err = (pred["beta"].reshape(300, P).double().mean(0) - _exact_beta()).abs().max()
    assert err < 0.3, err
    pyro.clear_param_store()


@pytest.mark.parametrize("d", [IAF_MAX_DIM + 1, 600])
def test_flow_guide_runs_above_the_old_conditioner_width(d):
    def model():
        with pyro.plate("g", d):
            pyro.sample("b", dist.Normal(0.0, 1.0))

    guide = pr.AutoFlowGuide(model, kind="iaf")
    z, log_q = guide.rsample_unconstrained(4)
    assert z.shape == (4, d) and bool(torch.isfinite(log_q).all())
    params = sum(p.numel() for p in guide.parameters())
    assert params < 40 * d * 64, params  # couplings of width 64: linear in d


def test_iaf_width_follows_the_dimension():
    layers = build_flow_layers(100, None, torch.zeros(100), 1.0, num_layers=1, kind="iaf")
    assert sum(p.numel() for p in layers[0].parameters()) > 100 * 100


def test_memory_check_names_the_size(monkeypatch):
    monkeypatch.setenv("PYRO_RELAX_MEMORY_LIMIT", "1e6")
    with pytest.raises(ValueError, match=r"a test buffer would need 8.0 MB"):
        check_allocation(8e6, "a test buffer", "t")
    check_allocation(1e3, "a small one", "t")
    monkeypatch.setenv("PYRO_RELAX_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="PYRO_RELAX_MEMORY_LIMIT"):
        check_allocation(1.0, "x", "t")


def test_unpickled_guide_asks_for_its_model():
    guide = pr.AutoFlowGuide(regression, num_layers=1, hidden=8, kind="affine")
    guide()
    back = pickle.loads(pickle.dumps(guide))
    with pytest.raises(RuntimeError, match="attach_model"):
        back.importance_weights(5)
    back.attach_model(regression)
    _, log_w = back.importance_weights(5)
    assert log_w.shape == (5,)


def test_verdict_is_not_good_on_an_unconverged_fit_or_too_few_draws():
    lw = torch.randn(400, dtype=torch.float64) * 0.1
    assert verdict(WeightedDraws({}, lw, "flow", latent_dim=4, converged=True)).label == "good"
    bad = verdict(WeightedDraws({}, lw, "flow", latent_dim=4, converged=False))
    assert bad.label == "unconverged" and not bad.reliable and "--steps" in bad.advice
    few = verdict(WeightedDraws({}, lw, "flow", latent_dim=300, converged=True))
    assert few.label == "too few draws" and math.isnan(few.khat)
    heavy = torch.distributions.Pareto(1.0, 1.0).sample((400,)).log().double()
    assert verdict(WeightedDraws({}, heavy, "flow", latent_dim=1)).label == "unreliable"
    assert elbo_stalled([0.0] * 200) and not elbo_stalled([float(i) for i in range(200)])


def test_short_funnel_fit_does_not_earn_good():
    """The campaign's case: Neal's funnel, 200 steps of the default guide."""
    def funnel():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        with pyro.plate("x_plate", 9):
            pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)))

    fit = fit_guide(funnel, "flow", steps=200, progress=False)
    samples, log_w = guide_draws(fit, funnel, 1000)
    v = verdict(WeightedDraws(samples, log_w, "flow", latent_dim=10, converged=fit.converged))
    assert v.label != "good", (v, fit.converged)


def test_whitened_flow_starts_at_pathfinders_gaussian():
    """A Pathfinder Gaussian as init_gaussian ends the default stack in its whitening layer."""
    from pyro_relax.infer.pathfinder import pathfinder_for_model

    def model():
        x = pyro.sample("x", dist.Normal(torch.tensor(5.0, dtype=torch.float64), 30.0))
        pyro.sample("y", dist.Normal(x / 1000.0, 0.0001), obs=torch.tensor(0.0))

    pf = pathfinder_for_model(model, num_paths=2, num_draws=100,
                              generator=torch.Generator().manual_seed(0))
    guide = pr.AutoFlowGuide(model, init_gaussian=pf.gaussian, init_loc_fn=None)
    z, _ = guide.sample_unconstrained(4000)
    # the posterior of x is N(~0, 0.1^2), far from the unit start of an unwhitened stack;
    # 4000 draws give its variance within 10% (se 2.2%)
    assert abs(float(z.var()) / float(pf.variance[0]) - 1.0) < 0.1
    assert abs(float(pf.variance[0]) / 0.01 - 1.0) < 0.2
