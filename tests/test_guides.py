"""Autoguides: flow, SNF and diffusion guides on a conjugate model with a known posterior.

The model has ``mu`` (2-D, Normal prior) and a positive ``tau`` (LogNormal prior),
with Normal and LogNormal observations in a ``pyro.plate``. In unconstrained
space ``(mu, log tau)`` the posterior is Gaussian and the evidence has a closed
form, so every check compares with exact numbers.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide.initialization import init_to_feasible, init_to_value
from pyro.infer.mcmc.util import initialize_model
from pyro.infer.reparam import NeuTraReparam
from pyro.optim import ClippedAdam

from pyro_relax.infer.guides.diffusion import AutoDiffusionGuide
from pyro_relax.infer.guides.flow import AutoFlowGuide, LocScaleTransform
from pyro_relax.infer.guides.snf import AutoSNFGuide
from pyro_relax.surjections.augment import AugmentSurjection

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N_OBS = 10
PRIOR_SD_MU, OBS_SD_Y = 2.0, 1.0
PRIOR_SD_LOGTAU, OBS_SD_LOGW = 1.0, 0.5


class Problem:
    """Data, model and the exact posterior / evidence of the conjugate model."""

    def __init__(self, device="cpu", dtype=torch.float32, seed=1):
        g = torch.Generator().manual_seed(seed)
        kw = {"device": device, "dtype": dtype}
        self.kw = kw
        self.y = (torch.randn(N_OBS, 2, generator=g, dtype=dtype) + 1.0).to(device)
        self.w = torch.exp(0.3 + 0.5 * torch.randn(N_OBS, generator=g, dtype=dtype)).to(device)
        var_mu = 1.0 / (N_OBS / OBS_SD_Y**2 + 1.0 / PRIOR_SD_MU**2)
        self.mean_mu = self.y.sum(0) / OBS_SD_Y**2 * var_mu
        self.sd_mu = math.sqrt(var_mu)
        var_lt = 1.0 / (N_OBS / OBS_SD_LOGW**2 + 1.0 / PRIOR_SD_LOGTAU**2)
        self.mean_logtau = float(self.w.log().sum() / OBS_SD_LOGW**2 * var_lt)
        self.sd_logtau = math.sqrt(var_lt)
        self.log_z = self._log_evidence()

    def model(self, y, w):
        kw = self.kw
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2, **kw), PRIOR_SD_MU).to_event(1))
        tau = pyro.sample("tau", dist.LogNormal(torch.zeros((), **kw), PRIOR_SD_LOGTAU))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, OBS_SD_Y).to_event(1), obs=y)
            pyro.sample("w", dist.LogNormal(tau.log(), OBS_SD_LOGW), obs=w)

    def _log_evidence(self):
        y, w = self.y.double().cpu(), self.w.double().cpu()
        ones = torch.ones(N_OBS, N_OBS, dtype=torch.float64)
        eye = torch.eye(N_OBS, dtype=torch.float64)
        cov_y = PRIOR_SD_MU**2 * ones + OBS_SD_Y**2 * eye
        mvn_y = dist.MultivariateNormal(torch.zeros(N_OBS, dtype=torch.float64), cov_y)
        cov_w = PRIOR_SD_LOGTAU**2 * ones + OBS_SD_LOGW**2 * eye
        mvn_w = dist.MultivariateNormal(torch.zeros(N_OBS, dtype=torch.float64), cov_w)
        # y's two coordinates are independent; log w is Gaussian, minus the Jacobian sum log w
        return float(mvn_y.log_prob(y.T).sum() + mvn_w.log_prob(w.log()) - w.log().sum())

    def exact_log_joint_unconstrained(self, z):
        """log p(y, w, mu, tau) + log tau at z = (mu, log tau), by hand."""
        mu, log_tau = z[..., :2], z[..., 2]
        lp = dist.Normal(0.0, PRIOR_SD_MU).log_prob(mu).sum(-1)
        lp = lp + dist.Normal(0.0, PRIOR_SD_LOGTAU).log_prob(log_tau) - log_tau + log_tau
        lp = lp + dist.Normal(mu.unsqueeze(-2), OBS_SD_Y).log_prob(self.y).sum((-1, -2))
        lw = self.w.log()
        lp = lp + (dist.Normal(log_tau.unsqueeze(-1), OBS_SD_LOGW).log_prob(lw) - lw).sum(-1)
        return lp

    def init_at_posterior(self):
        return init_to_value(
            values={"mu": self.mean_mu.clone(), "tau": torch.tensor(self.mean_logtau).exp()}
        )


@pytest.fixture(scope="module")
def problem():
    return Problem()


def _make(kind, model, **kw):
    if kind == "flow":
        return AutoFlowGuide(model, num_layers=1, hidden=16, kind="affine", **kw)
    if kind == "iaf":
        return AutoFlowGuide(model, num_layers=1, hidden=16, kind="iaf", **kw)
    if kind == "snf":
        blocks = [("langevin", {"step_size": 0.003})] * 2
        return AutoSNFGuide(model, num_layers=1, hidden=16, blocks=blocks, **kw)
    if kind == "diffusion":
        return AutoDiffusionGuide(model, num_steps=8, hidden=(32,), **kw)
    if kind == "dds":
        return AutoDiffusionGuide(model, num_steps=8, hidden=(32,), reference="dds", **kw)
    raise AssertionError(kind)


def _train(guide, prob, steps, lr=0.03, particles=8):
    pyro.clear_param_store()
    optim = ClippedAdam({"lr": lr, "lrd": 0.1 ** (1.0 / steps)})  # lr decays to lr / 10
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True)
    svi = SVI(prob.model, guide, optim, elbo)
    losses = [svi.step(prob.y, prob.w) for _ in range(steps)]
    return losses


def _check_posterior(guide, prob, n=2000, mean_tol_sd=0.25, sd_rtol=0.2):
    """Guide moments against the exact posterior.

    Tolerance for means: ``mean_tol_sd`` posterior sds (the approximation error
    allowed to a short training run) plus 4 Monte Carlo standard errors
    ``sd / sqrt(n)``; for sds a relative error ``sd_rtol`` plus 4 se of the sd
    (``sd / sqrt(2 n)``).
    """
    samples, log_w = guide.importance_weights(n, prob.y, prob.w)
    mu, log_tau = samples["mu"], samples["tau"].log()
    assert mu.shape == (n, 2) and log_tau.shape == (n,) and log_w.shape == (n,)
    for est, mean, sd in (
        (mu[:, 0], float(prob.mean_mu[0]), prob.sd_mu),
        (mu[:, 1], float(prob.mean_mu[1]), prob.sd_mu),
        (log_tau, prob.mean_logtau, prob.sd_logtau),
    ):
        se = sd / math.sqrt(n)
        assert abs(float(est.mean()) - mean) < mean_tol_sd * sd + 4 * se, (float(est.mean()), mean)
        assert abs(float(est.std()) - sd) < sd_rtol * sd + 4 * sd / math.sqrt(2 * n), (
            float(est.std()),
            sd,
        )
    # the positive site itself: LogNormal(m, s) mean exp(m + s^2 / 2)
    tau_mean = math.exp(prob.mean_logtau + prob.sd_logtau**2 / 2)
    assert abs(float(samples["tau"].mean()) / tau_mean - 1) < mean_tol_sd * prob.sd_logtau + 0.05
    return log_w


def _check_bound(guide, prob, n=2000):
    """ELBO = mean log w <= log Z within 4 se; IS estimate log mean w = log Z within 5 se."""
    d = guide.importance_diagnostics(n, prob.y, prob.w)
    assert d["elbo"] <= prob.log_z + 4 * d["elbo_se"], (d, prob.log_z)
    # the standard error below is trustworthy for a light tail or near-constant weights
    assert d["khat"] < 0.7 or d["ess_fraction"] > 0.5, d
    assert abs(d["log_Z"] - prob.log_z) < 5 * d["log_Z_se"] + 1e-3, (d, prob.log_z)
    return d


# -- training matches the exact posterior -------------------------------------------------
@pytest.mark.parametrize("kind", ["flow", "iaf", "snf", "diffusion"])
def test_guide_trains_to_the_exact_posterior(problem, kind):
    torch.manual_seed(0)
    # start at 0 in unconstrained space: about 3 posterior sds from the posterior mean
    guide = _make(kind, problem.model, init_scale=0.3, init_loc_fn=init_to_feasible)
    steps = {"flow": 300, "iaf": 300, "snf": 200, "diffusion": 200}[kind]
    losses = _train(guide, problem, steps)
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
    _check_posterior(guide, problem)
    _check_bound(guide, problem)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["spline", "iaf", "snf-mala", "snf-hmc", "pis", "dds"])
def test_default_sized_guides_train_tightly(problem, kind):
    torch.manual_seed(0)
    model = problem.model
    init = {"init_scale": 0.3, "init_loc_fn": init_to_feasible}
    if kind in ("spline", "iaf"):
        guide = AutoFlowGuide(model, kind=kind, **init)
    elif kind == "snf-mala":
        guide = AutoSNFGuide(model, blocks=[("mala", {"step_size": 0.005})] * 3, **init)
    elif kind == "snf-hmc":
        options = {"step_size": 0.05, "n_leapfrog": 3}
        guide = AutoSNFGuide(model, blocks=[("hmc", options)] * 2, **init)
    else:
        guide = AutoDiffusionGuide(model, num_steps=20, reference=kind, **init)
    # the spline stack starts far from Gaussian (random conditioners) and needs more steps
    _train(guide, problem, 2000 if kind == "spline" else 800, lr=0.01)
    _check_posterior(guide, problem, n=5000, mean_tol_sd=0.15, sd_rtol=0.1)
    d = _check_bound(guide, problem, n=5000)
    assert d["elbo"] > problem.log_z - 0.3  # a tight bound after a long run


# -- path weights are unbiased before any training ------------------------------------------
@pytest.mark.parametrize(
    "kind", ["flow", "snf-langevin", "snf-mala", "snf-mh", "snf-hmc", "pis", "dds", "augmented"]
)
def test_path_weights_estimate_the_evidence_untrained(problem, kind):
    """E[w] = Z holds for any guide parameters: the IS estimate of log Z must match.

    The guide starts near the posterior (so the weights have a finite variance);
    the diffusion drift gets random weights so that its path terms are non-zero.
    """
    torch.manual_seed(1)
    init = problem.init_at_posterior()
    model = problem.model
    if kind == "flow":
        guide = AutoFlowGuide(
            model, num_layers=1, hidden=8, kind="affine", init_loc_fn=init, init_scale=0.25
        )
    elif kind.startswith("snf"):
        block = kind.split("-")[1]
        options = {"step_size": 0.02} if block in ("langevin", "mala") else {"step_size": 0.1}
        guide = AutoSNFGuide(
            model,
            num_layers=1,
            hidden=8,
            blocks=[(block, options)] * 2,
            init_loc_fn=init,
            init_scale=0.25,
        )
    elif kind == "augmented":
        loc = torch.cat([problem.mean_mu, torch.tensor([problem.mean_logtau])])

        def layers(d):
            return [
                T.affine_coupling(d + 2, hidden_dims=[8]),
                AugmentSurjection(d, 2, hidden=(8,)),
                LocScaleTransform(loc, 0.25),
            ]

        guide = AutoFlowGuide(model, layers, init_loc_fn=init)
    else:
        guide = AutoDiffusionGuide(
            model, num_steps=6, hidden=(16,), reference=kind, init_loc_fn=init, init_scale=0.25
        )
    guide(problem.y, problem.w)
    if kind in ("pis", "dds"):
        with torch.no_grad():
            for p in guide.drift.parameters():
                p.add_(0.3 * torch.randn_like(p))
    _check_bound(guide, problem, n=4000)


# -- the potential energy ---------------------------------------------------------------------
def test_log_joint_matches_hand_computation_and_pyro_potential(problem):
    guide = _make("flow", problem.model)
    guide(problem.y, problem.w)
    z = torch.randn(4, 5, 3)
    got = guide.log_joint_unconstrained(z)
    assert got.shape == (4, 5)
    torch.testing.assert_close(got, problem.exact_log_joint_unconstrained(z), rtol=1e-5, atol=1e-4)
    _, potential_fn, _, _ = initialize_model(problem.model, (problem.y, problem.w))
    for row in z[0]:
        pe = potential_fn({"mu": row[:2], "tau": row[2]})
        torch.testing.assert_close(-pe, guide.log_joint_unconstrained(row), rtol=1e-5, atol=1e-4)


def test_log_joint_falls_back_to_a_loop_for_unvectorizable_models(problem):
    def model(y, w):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), PRIOR_SD_MU).to_event(1))
        tau = pyro.sample("tau", dist.LogNormal(0.0, PRIOR_SD_LOGTAU))
        loc = torch.stack([mu[0], mu[1]])  # indexes the first axis: breaks with a batch
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(loc, OBS_SD_Y).to_event(1), obs=y)
            pyro.sample("w", dist.LogNormal(tau.log(), OBS_SD_LOGW), obs=w)

    guide = _make("flow", model, init_loc_fn=init_to_feasible)  # no Pathfinder: rows decided below
    guide(problem.y, problem.w)
    z = torch.randn(6, 3)
    with pytest.warns(RuntimeWarning, match="torch.func.vmap instead"):
        got = guide.log_joint_unconstrained(z)
    assert guide.vectorization == "vmap"
    torch.testing.assert_close(got, problem.exact_log_joint_unconstrained(z), rtol=1e-5, atol=1e-4)


def test_log_joint_loops_when_vmap_fails_too(problem):
    def model(y, w):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), PRIOR_SD_MU).to_event(1))
        tau = pyro.sample("tau", dist.LogNormal(0.0, PRIOR_SD_LOGTAU))
        loc = torch.stack([mu[0], mu[1]])  # breaks under a particle plate
        if float(tau) < 0:  # data-dependent control flow: breaks under vmap
            raise AssertionError("unreachable")
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(loc, OBS_SD_Y).to_event(1), obs=y)
            pyro.sample("w", dist.LogNormal(tau.log(), OBS_SD_LOGW), obs=w)

    guide = _make("flow", model, init_loc_fn=init_to_feasible)  # no Pathfinder: rows decided below
    guide(problem.y, problem.w)
    z = torch.randn(6, 3)
    with pytest.warns(RuntimeWarning, match="looping over rows"):
        got = guide.log_joint_unconstrained(z)
    assert guide.vectorization == "loop"
    torch.testing.assert_close(got, problem.exact_log_joint_unconstrained(z), rtol=1e-5, atol=1e-4)


def test_log_joint_detects_a_model_that_silently_mixes_particles(problem):
    def model(y, w):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), PRIOR_SD_MU).to_event(1))
        tau = pyro.sample("tau", dist.LogNormal(0.0, PRIOR_SD_LOGTAU))
        center = mu.reshape(-1, 2).mean(0)  # averages over a particle batch, without error
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(center, OBS_SD_Y).to_event(1), obs=y)
            pyro.sample("w", dist.LogNormal(tau.log(), OBS_SD_LOGW), obs=w)

    guide = _make("flow", model, init_loc_fn=init_to_feasible)  # no Pathfinder: rows decided below
    guide(problem.y, problem.w)
    z = torch.randn(5, 3)
    with pytest.warns(RuntimeWarning, match="differs from row-by-row"):
        got = guide.log_joint_unconstrained(z)
    torch.testing.assert_close(got, problem.exact_log_joint_unconstrained(z), rtol=1e-5, atol=1e-4)


def test_log_joint_with_local_latents_matches_pyro_potential():
    torch.manual_seed(0)
    y = torch.randn(5)

    def model(y):
        scale = pyro.sample("scale", dist.HalfNormal(1.0))
        with pyro.plate("groups", y.shape[0]):
            theta = pyro.sample("theta", dist.Normal(0.0, scale))
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    guide = AutoDiffusionGuide(model, num_steps=3, hidden=(8,))
    guide(y)
    assert guide.latent_dim == 6
    z = torch.randn(7, 6)
    got = guide.log_joint_unconstrained(z)
    _, potential_fn, _, _ = initialize_model(model, (y,))
    for i in range(7):
        pe = potential_fn({"scale": z[i, 0], "theta": z[i, 1:]})
        torch.testing.assert_close(-pe, got[i], rtol=1e-5, atol=1e-4)
    samples, log_w = guide.importance_weights(11)
    assert samples["theta"].shape == (11, 5) and samples["scale"].shape == (11,)
    assert bool((samples["scale"] > 0).all()) and bool(torch.isfinite(log_w).all())


# -- Pyro integration ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flow", "snf", "diffusion"])
def test_predictive_and_vectorized_particles(problem, kind):
    torch.manual_seed(0)
    guide = _make(kind, problem.model, init_scale=0.3)
    pred = Predictive(problem.model, guide=guide, num_samples=5)(problem.y, problem.w)
    assert pred["mu"].shape[0] == 5 and pred["mu"].shape[-1] == 2
    assert pred["y"].shape == (5, N_OBS, 2)
    # one independent path per particle of a vectorized ELBO
    with pyro.plate("particles", 6, dim=-2):
        trace = poutine.trace(guide).get_trace(problem.y, problem.w)
    latent = trace.nodes[f"_{guide._pyro_name}_latent"]
    assert latent["value"].shape == (6, 1, 3)
    assert latent["fn"].log_prob(latent["value"]).shape == (6, 1)
    assert torch.unique(latent["value"][:, 0, 0]).numel() == 6
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True).loss(
        problem.model, guide, problem.y, problem.w
    )
    assert math.isfinite(loss)


@pytest.mark.parametrize("kind", ["flow", "snf", "diffusion"])
def test_parallel_predictive_draws_independent_samples(kind):
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Gamma(2.0, 2.0))

    guide = _make(kind, model, init_scale=0.5)
    out = Predictive(model, guide=guide, num_samples=8, parallel=True)()
    assert out["a"].shape == (8,) and out["b"].shape == (8,)
    assert bool((out["b"] > 0).all()) and torch.unique(out["a"]).numel() == 8


@pytest.mark.parametrize("kind", ["flow", "snf", "diffusion"])
def test_gradients_reach_every_guide_parameter(problem, kind):
    torch.manual_seed(0)
    guide = _make(kind, problem.model, init_scale=0.3)
    _train(guide, problem, 3)  # one step moves zero-initialized output layers off zero
    guide.zero_grad()
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True).differentiable_loss(
        problem.model, guide, problem.y, problem.w
    )
    loss.backward()
    params = dict(guide.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_neutra_reparam_with_nuts_runs():
    torch.manual_seed(0)

    def model():
        pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("s", dist.LogNormal(0.0, 0.5))

    pyro.clear_param_store()
    guide = AutoFlowGuide(model, num_layers=1, hidden=8, kind="affine")
    svi = SVI(model, guide, ClippedAdam({"lr": 0.01}), Trace_ELBO())
    for _ in range(5):
        svi.step()
    transform = guide.get_transform()
    zb = torch.randn(4, 3)
    x = transform(zb)
    torch.testing.assert_close(transform.inv(x), zb, rtol=1e-4, atol=1e-4)
    log_q = guide.get_base_dist().log_prob(zb) - transform.log_abs_det_jacobian(zb, x)
    # the guide is float64 by default; its transform takes and returns the caller's dtype
    assert x.dtype == zb.dtype
    flow_log_q = guide.flow().log_prob(x.to(guide.flow.dtype))
    torch.testing.assert_close(log_q.double(), flow_log_q, rtol=1e-4, atol=1e-4)
    neutra = NeuTraReparam(guide.requires_grad_(False))
    mcmc = MCMC(
        NUTS(poutine.reparam(model, config=lambda _: neutra)),
        num_samples=5,
        warmup_steps=5,
        disable_progbar=True,
    )
    mcmc.run()
    latent = mcmc.get_samples()["mu_shared_latent"]
    samples = neutra.transform_sample(latent)
    assert samples["mu"].shape == (5, 2) and bool((samples["s"] > 0).all())


def test_get_transform_refuses_a_non_bijective_stack(problem):
    def layers(d):
        return [AugmentSurjection(d, 1, hidden=(4,))]

    guide = AutoFlowGuide(problem.model, layers)
    guide(problem.y, problem.w)
    assert not guide.bijective
    assert guide.flow.base_shape == (4,)
    with pytest.raises(NotImplementedError, match="all-bijective"):
        guide.get_transform()


@pytest.mark.parametrize("kind", ["spline", "affine", "iaf"])
def test_one_dimensional_latent(kind):
    # float64: Pyro's float32 spline inverse alone is off by ~1e-2 in log-density
    def model():
        pyro.sample("s", dist.LogNormal(torch.zeros((), dtype=torch.float64), 1.0))

    guide = AutoFlowGuide(model, num_layers=2, hidden=8, kind=kind)
    z, log_q = guide.sample_unconstrained(7)
    assert z.shape == (7, 1) and log_q.shape == (7,)
    torch.testing.assert_close(log_q, guide.flow().log_prob(z), rtol=1e-4, atol=1e-4)
    assert bool((guide.median()["s"] > 0).all())
    q = guide.quantiles([0.1, 0.9])["s"]
    assert q.shape == (2,) and bool(q[0] < q[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["flow", "snf", "diffusion"])
def test_device_and_dtype_follow_the_model(device, kind):
    prob = Problem(device=device, dtype=torch.float64)
    guide = _make(kind, prob.model)
    samples, log_w = guide.importance_weights(5, prob.y, prob.w)
    assert log_w.dtype == torch.float64 and log_w.device.type == device
    assert samples["mu"].dtype == torch.float64 and samples["mu"].device.type == device
    for p in guide.parameters():
        assert p.dtype == torch.float64 and p.device.type == device
    d = guide.importance_diagnostics(30)
    assert d["verdict"] in ("good", "acceptable", "unreliable") and math.isfinite(d["khat"])
    assert 1.0 <= d["ess"] <= 30.0


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_raises(problem):
    model = problem.model
    for cls in (AutoFlowGuide, AutoSNFGuide, AutoDiffusionGuide):
        with pytest.raises(TypeError, match="callable Pyro model"):
            cls("not a model")
        with pytest.raises(ValueError, match="init_scale"):
            cls(model, init_scale=0.0)
    with pytest.raises(ValueError, match="kind"):
        AutoFlowGuide(model, kind="glow")
    with pytest.raises(ValueError, match="num_layers"):
        AutoFlowGuide(model, num_layers=0)
    with pytest.raises(TypeError, match="layers"):
        AutoFlowGuide(model, layers=3)
    with pytest.raises(ValueError, match="block name"):
        AutoSNFGuide(model, blocks=["gibbs"])
    with pytest.raises(TypeError, match="blocks"):
        AutoSNFGuide(model, blocks="mala")
    with pytest.raises(ValueError, match="num_steps"):
        AutoDiffusionGuide(model, num_steps=0)
    with pytest.raises(ValueError, match="reference"):
        AutoDiffusionGuide(model, reference="vp")
    with pytest.raises(ValueError, match="sigma"):
        AutoDiffusionGuide(model, sigma=-1.0)
    with pytest.raises(ValueError, match=r"layers producing event shape \(3,\)"):
        AutoFlowGuide(model, layers=lambda d: [T.AffineTransform(torch.zeros(2), 1.0)])(
            problem.y, problem.w
        )

    guide = _make("flow", model)
    guide(problem.y, problem.w)
    with pytest.raises(ValueError, match="num_samples >= 1"):
        guide.sample_unconstrained(0)
    with pytest.raises(TypeError, match="int num_samples"):
        guide.importance_weights(2.5)
    with pytest.raises(ValueError, match="num_samples >= 25"):
        guide.importance_diagnostics(10)
    with pytest.raises(ValueError, match=r"event shape \(3,\), got \(2,\)"):
        guide.log_joint_unconstrained(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="finite"):
        guide.log_joint_unconstrained(torch.full((4, 3), float("nan")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the vectorized path must not fall back here
        guide.log_joint_unconstrained(torch.zeros(2, 3))


@pytest.mark.parametrize("kind", ["flow", "snf", "diffusion"])
def test_save_load_round_trip(problem, kind, tmp_path):
    torch.manual_seed(0)
    guide = _make(kind, problem.model, init_scale=0.3)
    guide(problem.y, problem.w)
    path = tmp_path / "guide.pt"
    torch.save(guide, path)
    loaded = torch.load(path, weights_only=False)
    if kind == "snf":  # its blocks need the model's density: the model is not pickled
        # the block names itself around the guide's message (a ValueError from the layer base)
        with pytest.raises((RuntimeError, ValueError), match="attach_model"):
            loaded.sample_unconstrained(2)
        loaded.attach_model(problem.model)
        guide.attach_model(problem.model)
    torch.manual_seed(3)
    z_a, lq_a = guide.sample_unconstrained(4, problem.y, problem.w)
    torch.manual_seed(3)
    z_b, lq_b = loaded.sample_unconstrained(4, problem.y, problem.w)
    torch.testing.assert_close(z_a, z_b)
    torch.testing.assert_close(lq_a, lq_b)


def test_fit_guide_vmaps_particles_for_a_scalar_only_model():
    """A model that breaks under a particle plate fits with vmap (and says so), not a loop."""
    from pyro_relax.infer.runner import fit_guide

    def scalar_model():
        v = pyro.sample("v", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(torch.zeros(3), torch.exp(v)).to_event(1))  # (3,) vs batch

    with pytest.warns(RuntimeWarning, match="does not vectorize over a particle plate"):
        fit = fit_guide(scalar_model, "flow", steps=3, num_particles=4, progress=False,
                        guide_kwargs={"num_layers": 1, "hidden": 4}, init="feasible")
    assert len(fit.elbo) == 3 and all(math.isfinite(e) for e in fit.elbo)
    svi = fit.stages[-1]
    assert svi["vectorization"] == "vmap" and svi["particles"] == 4  # one batched pass, no loop
    with pytest.raises(ValueError, match="num_particles"):
        fit_guide(scalar_model, "flow", steps=3, num_particles=0)
