"""Tests for pyro_relax.infer.kernels: MALA, FlowIMH, NeuTra NUTS.

Tolerances are Monte Carlo errors: a chain average of a series f(x_t) has
standard error se = sd(f) / sqrt(ESS(f)), ESS from ArviZ; checks allow 5 se
unless stated otherwise.
"""

import math

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal, AutoNormal

from pyro_relax.infer.kernels import MALA, AutoContinuousProposal, FlowIMH, NeuTraNUTS, neutra
from pyro_relax.infer.kernels.base import flatten_params, unflatten_params
from pyro_relax.ops import (
    LangevinState,
    acceptance_probability,
    imh_log_accept_ratio,
    langevin_log_transition,
    langevin_proposal,
    metropolis_accept,
)
from pyro_relax.ops import mala_log_accept_ratio as _mala_ratio


# The kernels' ops in the potential form U = -log pi used below (the ops take log pi).
def mala_log_accept_ratio(x, y, u_x, u_y, g_x, g_y, eps, inv_mass):
    return _mala_ratio(LangevinState(x, -u_x, -g_x), LangevinState(y, -u_y, -g_y), eps, inv_mass)


def mala_log_transition(y, x, grad_u_x, eps, inv_mass):
    return langevin_log_transition(y, LangevinState(x, x[..., 0], -grad_u_x), eps, inv_mass)


def mala_propose(x, grad_u, eps, inv_mass, noise):
    return langevin_proposal(x, -grad_u, eps, noise, inv_mass)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

LOC = [1.0, -1.0]
COV = [[1.0, 0.8], [0.8, 2.0]]


def mc_se(series: torch.Tensor) -> float:
    """Standard error of the mean of a chain series: sd / sqrt(ESS)."""
    a = series.detach().double().cpu().numpy()
    ess = float(az.ess(a[None, :]))
    return float(a.std()) / math.sqrt(max(ess, 1.0))


def assert_mean(series: torch.Tensor, expected: float, k: float = 5.0) -> None:
    se = mc_se(series)
    err = abs(float(series.double().mean()) - expected)
    assert err < k * se, f"mean off {expected:.4f} by {err:.4f} > {k} * se, se = {se:.4f}"


def assert_gaussian_moments(x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor) -> None:
    """Mean and covariance of chain draws x [n, D] within 5 se (se of each product series)."""
    for i in range(x.shape[-1]):
        assert_mean(x[:, i], float(loc[i]))
        for j in range(i, x.shape[-1]):
            # E[(x_i - m_i)(x_j - m_j)] = cov_ij with the true means: a plain chain average.
            prod = (x[:, i] - loc[i]) * (x[:, j] - loc[j])
            assert_mean(prod, float(cov[i, j]))


def gaussian_model(device: str):
    loc = torch.tensor(LOC, device=device)
    cov = torch.tensor(COV, device=device)

    def model() -> None:
        pyro.sample("x", dist.MultivariateNormal(loc, cov))

    return model, loc, cov


# ----------------------------------------------------------------------------- pure ops
def test_ops_log_accept_ratio_matches_gaussian_densities() -> None:
    torch.manual_seed(1)
    batch, d = (3, 4), 5
    x, y = torch.randn(batch + (d,)), torch.randn(batch + (d,))
    gx, gy = torch.randn(batch + (d,)), torch.randn(batch + (d,))
    ux, uy = torch.randn(batch), torch.randn(batch)
    eps, m = 0.3, torch.rand(d) + 0.5

    def log_q(b: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return dist.Normal(a - eps * m * g, (2 * eps * m).sqrt()).log_prob(b).sum(-1)

    expected = ux - uy + log_q(x, y, gy) - log_q(y, x, gx)
    got = mala_log_accept_ratio(x, y, ux, uy, gx, gy, eps, m)
    assert got.shape == batch
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # reversibility: log r(x -> y) = -log r(y -> x)
    back = mala_log_accept_ratio(y, x, uy, ux, gy, gx, eps, m)
    torch.testing.assert_close(got, -back, rtol=1e-5, atol=1e-5)
    # log q up to the Gaussian normalizer, which cancels in the ratio
    diff = mala_log_transition(y, x, gx, eps, m) - log_q(y, x, gx)
    torch.testing.assert_close(diff, diff.flatten()[0].expand(batch))


def test_ops_mala_step_keeps_gaussian_invariant() -> None:
    """One exact MALA step from N(loc, cov) samples leaves the moments unchanged."""
    torch.manual_seed(2)
    n = 40000
    loc, cov = torch.tensor(LOC), torch.tensor(COV)
    target = dist.MultivariateNormal(loc, cov)
    prec = torch.linalg.inv(cov)
    x = target.sample((n,))

    def u_and_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return -target.log_prob(z), (z - loc) @ prec

    ux, gx = u_and_grad(x)
    eps, m = 0.6, torch.tensor([1.0, 2.0])
    y = mala_propose(x, gx, eps, m, torch.randn_like(x))
    uy, gy = u_and_grad(y)
    log_r = mala_log_accept_ratio(x, y, ux, uy, gx, gy, eps, m)
    accept = metropolis_accept(log_r, torch.rand(n)).accepted
    out = torch.where(accept[:, None], y, x)
    assert 0.2 < float(accept.float().mean()) < 0.99  # the step moves
    sd = cov.diagonal().sqrt()
    # independent draws: 5 se with se = sd / sqrt(n), and sd(x_i x_j) <= sqrt(3) sd_i sd_j
    assert torch.all((out.mean(0) - loc).abs() < 5 * sd / math.sqrt(n))
    c = out - loc
    emp = c.T @ c / n
    assert torch.all((emp - cov).abs() < 5 * math.sqrt(3) * torch.outer(sd, sd) / math.sqrt(n))


def test_ops_nan_and_inf_are_rejected() -> None:
    x, y = torch.zeros(2, 3), torch.ones(2, 3)
    u = torch.tensor([0.0, 0.0])
    u_bad = torch.tensor([float("nan"), 0.0])
    g_bad = torch.tensor([[0.0, 0.0, 0.0], [float("inf"), 0.0, 0.0]])
    log_r = mala_log_accept_ratio(x, y, u, u_bad, x, g_bad, 0.1, torch.ones(3))
    assert torch.all(log_r == -math.inf)
    assert not metropolis_accept(log_r, torch.full((2,), 1e-30)).accepted.any()
    assert torch.equal(acceptance_probability(log_r), torch.zeros(2))
    log_w_new = torch.tensor([float("nan"), 1.0, 1.0])
    r = imh_log_accept_ratio(log_w_new, torch.tensor([0.0, -math.inf, 0.5]))
    assert r[0] == -math.inf and r[1] == math.inf and float(r[2]) == pytest.approx(0.5)


def test_ops_pack_roundtrip_and_bad_shapes() -> None:
    params = {"b": torch.randn(2, 3), "a": torch.randn(())}
    flat = flatten_params(params, ["a", "b"])
    back = unflatten_params(flat, {"a": torch.Size(), "b": torch.Size([2, 3])})
    assert all(torch.equal(back[k], params[k]) for k in params)
    batched = unflatten_params(torch.zeros(4, 5, 7), {"a": torch.Size(), "b": torch.Size([2, 3])})
    assert batched["b"].shape == (4, 5, 2, 3)
    with pytest.raises(ValueError, match="last dimension of size 7"):
        unflatten_params(torch.zeros(6), {"a": torch.Size(), "b": torch.Size([2, 3])})
    with pytest.raises(ValueError, match="missing"):
        flatten_params(params, ["a", "c"])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        mala_propose(torch.zeros(3), torch.zeros(2), 0.1, torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="inv_mass"):
        mala_propose(torch.zeros(3), torch.zeros(3), 0.1, torch.ones(2), torch.zeros(3))
    with pytest.raises(ValueError, match="step size > 0"):
        mala_propose(torch.zeros(3), torch.zeros(3), -0.1, torch.ones(3), torch.zeros(3))


# ----------------------------------------------------------------------------- MALA
@pytest.mark.parametrize("device", DEVICES)
def test_mala_correlated_gaussian(device: str) -> None:
    pyro.set_rng_seed(0)
    model, loc, cov = gaussian_model(device)
    kernel = MALA(model)
    seen: dict = {}

    def hook(k: MALA, params: dict, stage: str, i: int) -> None:
        seen["inv_mass"] = k.inverse_mass_matrix.cpu()

    mcmc = MCMC(kernel, num_samples=1000, warmup_steps=300, hook_fn=hook, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"]
    assert x.device.type == device and x.shape == (1000, 2)
    assert_gaussian_moments(x.cpu(), loc.cpu(), cov.cpu())
    # dual averaging aims at 0.574; its averaged step usually lands a little above;
    # the acceptance rate of 1000 steps has se ~ 0.02-0.03: a 0.15 band
    rate = mcmc.diagnostics()["acceptance rate"]["chain 0"]
    assert abs(rate - 0.574) < 0.15, rate
    # the adapted diagonal inverse mass estimates the marginal variances (1, 2) from a
    # 150-step window (ESS ~ 50, relative se ~ sqrt(2/50) = 0.2): within a factor 2
    ratio = seen["inv_mass"] / cov.diagonal().cpu()
    assert bool(((ratio > 0.5) & (ratio < 2.0)).all()), ratio


@pytest.mark.slow
def test_mala_correlated_gaussian_long() -> None:
    pyro.set_rng_seed(3)
    model, loc, cov = gaussian_model("cpu")
    mcmc = MCMC(MALA(model), num_samples=8000, warmup_steps=1000, disable_progbar=True)
    mcmc.run()
    assert_gaussian_moments(mcmc.get_samples()["x"], loc, cov)
    assert abs(mcmc.diagnostics()["acceptance rate"]["chain 0"] - 0.574) < 0.1


def test_mala_constrained_site() -> None:
    pyro.set_rng_seed(4)

    def model() -> None:
        pyro.sample("s", dist.HalfNormal(1.0))

    mcmc = MCMC(MALA(model), num_samples=1500, warmup_steps=300, disable_progbar=True)
    mcmc.run()
    s = mcmc.get_samples()["s"]
    assert bool((s > 0).all())  # returned in the constrained space
    assert_mean(s, math.sqrt(2 / math.pi))  # E|N(0,1)| = sqrt(2/pi)
    assert_mean(s.square(), 1.0)


def test_mala_two_chains_sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    """num_chains=2 run one after the other (Pyro picks sequential when CPUs are short)."""
    pyro.set_rng_seed(5)
    monkeypatch.setattr("pyro.infer.mcmc.api.mp.cpu_count", lambda: 1)
    model, loc, cov = gaussian_model("cpu")
    with pytest.warns(UserWarning, match="sequentially"):
        mcmc = MCMC(MALA(model), num_samples=300, warmup_steps=150, num_chains=2,
                    disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert x.shape == (2, 300, 2)
    assert not torch.equal(x[0], x[1])
    diag = mcmc.diagnostics()
    assert set(diag["acceptance rate"]) == {"chain 0", "chain 1"}
    assert all(0.3 < r < 0.9 for r in diag["acceptance rate"].values())
    # pooled mean within 5 se (se from the pooled ESS)
    assert_mean(x[..., 0].reshape(-1), LOC[0], k=6.0)


def test_mala_initial_params_per_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyro.infer.mcmc.api.mp.cpu_count", lambda: 1)
    model, _, _ = gaussian_model("cpu")
    start = torch.tensor([[5.0, 5.0], [-5.0, 3.0]])
    kernel = MALA(model, step_size=1e-8, adapt_step_size=False, adapt_mass_matrix=False)
    with pytest.warns(UserWarning):
        mcmc = MCMC(kernel, num_samples=1, warmup_steps=0, num_chains=2,
                    initial_params={"x": start}, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["x"][:, 0]
    # one step of size 1e-8 moves by ~sqrt(2e-8) ~ 1.4e-4 at most a few times that
    torch.testing.assert_close(x, start, atol=1e-3, rtol=0)


def test_mala_potential_fn_nan_outside_is_rejected() -> None:
    """Standard normal truncated to (-1, 1) by a NaN potential outside: the chain never leaves."""
    pyro.set_rng_seed(6)

    def potential(params: dict) -> torch.Tensor:
        z = params["z"]
        outside = torch.where((z.abs() < 1).all(), 0.0, math.nan)  # constant: grad stays finite
        return 0.5 * z.square().sum() + outside

    kernel = MALA(potential_fn=potential, step_size=0.5)
    mcmc = MCMC(kernel, num_samples=2000, warmup_steps=200,
                initial_params={"z": torch.zeros(1)}, disable_progbar=True)
    mcmc.run()
    z = mcmc.get_samples()["z"][:, 0]
    assert bool((z.abs() < 1).all())
    # truncated N(0,1) on (-1,1): var = 1 - 2 phi(1) / (2 Phi(1) - 1)
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    var = 1 - 2 * phi1 / math.erf(1 / math.sqrt(2))
    assert_mean(z, 0.0)
    assert_mean(z.square(), var)


def test_mala_manual_driving_end_warmup_logging() -> None:
    pyro.set_rng_seed(7)
    model, _, _ = gaussian_model("cpu")
    kernel = MALA(model)
    kernel.setup(100)
    params = kernel.initial_params
    assert set(params) == {"x"}
    for _ in range(20):
        params = kernel.sample(params)
    kernel.end_warmup()
    eps = kernel.step_size
    assert eps > 0
    for _ in range(30):
        params = kernel.sample(params)
    assert kernel.step_size == eps  # no adaptation after end_warmup
    log = kernel.logging()
    assert list(log) == ["step size", "acc. prob"] and 0 <= float(log["acc. prob"]) <= 1
    diag = kernel.diagnostics()
    assert 0 <= diag["acceptance rate"] <= 1 and diag["step size"] == eps
    assert kernel.inverse_mass_matrix.shape == (2,)
    kernel.cleanup()
    assert kernel.initial_params is None


def test_mala_bad_input() -> None:
    model, _, _ = gaussian_model("cpu")
    with pytest.raises(ValueError, match="exactly one of `model` and `potential_fn`, got neither"):
        MALA()
    with pytest.raises(ValueError, match="got both"):
        MALA(model, potential_fn=lambda p: p["x"].sum())
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="step_size > 0"):
            MALA(model, step_size=bad)
    with pytest.raises(TypeError, match="step_size to be a float"):
        MALA(model, step_size="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"target_accept_prob in \(0, 1\)"):
        MALA(model, target_accept_prob=1.5)
    kernel = MALA(potential_fn=lambda p: p["z"].square().sum())
    with pytest.raises(ValueError, match="expected initial_params"):
        kernel.setup(10)
    with pytest.raises(TypeError, match="dict of tensors"):
        kernel.initial_params = {"z": [0.0]}  # type: ignore[dict-item]
    kernel.initial_params = {"z": torch.tensor([math.inf])}
    with pytest.raises(ValueError, match="finite potential"):
        kernel.setup(10)
    with pytest.raises(ValueError, match="warmup_steps >= 0"):
        MALA(model).setup(-1)


# ----------------------------------------------------------------------------- FlowIMH
class GaussianProposal:
    """Stand-in for a pyro-relax guide: N(loc, scale^2 I), optionally with a noisy log_q.

    The noisy version adds eta ~ N(s^2/2, s^2) to log q, so E[exp(-eta)] = 1: the weight
    exp(-U - log q - eta) is an unbiased estimate of the exact one, as a path weight is.
    """

    def __init__(self, loc: torch.Tensor, scale: float, noise_sd: float = 0.0) -> None:
        self.base = dist.Normal(loc, scale).to_event(1)
        self.latent_dim = loc.shape[-1]
        self.noise_sd = noise_sd

    def sample_unconstrained(self, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.base.sample((num_samples,))
        log_q = self.base.log_prob(z)
        s = self.noise_sd
        return z, log_q + s * s / 2 + s * torch.randn_like(log_q)


def acceptance_series(x: torch.Tensor) -> torch.Tensor:
    """1 where the chain moved (IMH proposals are a.s. distinct), per step after the first."""
    return (x[1:] != x[:-1]).any(-1).double()


@pytest.mark.parametrize("device", DEVICES)
def test_imh_wide_gaussian_proposal(device: str) -> None:
    pyro.set_rng_seed(8)
    model, loc, cov = gaussian_model(device)
    proposal = GaussianProposal(loc + 0.3, 2.0)
    mcmc = MCMC(FlowIMH(proposal, model, batch_size=64), num_samples=2000, warmup_steps=100,
                disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"].cpu()
    assert_gaussian_moments(x, loc.cpu(), cov.cpu())
    # expected acceptance E[min(1, w(y)/w(x))], x ~ target, y ~ proposal, by 50000 exact pairs
    # (se < 0.003); the chain's rate within 5 se of its own acceptance series, plus 0.015
    target = dist.MultivariateNormal(loc.cpu(), cov.cpu())
    q = GaussianProposal(loc.cpu() + 0.3, 2.0).base
    xs, ys = target.sample((50000,)), q.sample((50000,))
    log_w = lambda z: target.log_prob(z) - q.log_prob(z)  # noqa: E731
    expected = float(acceptance_probability(log_w(ys) - log_w(xs)).mean())
    acc = acceptance_series(x)
    assert abs(float(acc.mean()) - expected) < 5 * mc_se(acc) + 0.015
    assert float(acc.mean()) > 0.3
    rate = mcmc.diagnostics()["acceptance rate"]["chain 0"]
    assert rate == pytest.approx(float(acc.mean()), abs=2e-3)


def test_imh_noisy_path_weights_stay_exact() -> None:
    """Pseudo-marginal: noisy log_q (unbiased weights) still targets the posterior exactly;
    the current state's weight is stored, so U is evaluated once per step."""
    pyro.set_rng_seed(9)
    loc, cov = torch.tensor(LOC), torch.tensor(COV)
    target = dist.MultivariateNormal(loc, cov)
    calls = [0]

    def potential(params: dict) -> torch.Tensor:
        calls[0] += 1
        return -target.log_prob(params["x"])

    proposal = GaussianProposal(loc, 2.0, noise_sd=1.0)
    kernel = FlowIMH(proposal, potential_fn=potential, batch_size=100)
    mcmc = MCMC(kernel, num_samples=3000, warmup_steps=100,
                initial_params={"x": torch.zeros(2)}, disable_progbar=True)
    mcmc.run()
    assert calls[0] == 3100  # one potential per step, none for the stored state
    assert_gaussian_moments(mcmc.get_samples()["x"], loc, cov)


class NaNProposal(GaussianProposal):
    """Every third proposal is poisoned: z = 50 with NaN log_q, or a NaN z."""

    def sample_unconstrained(self, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_q = super().sample_unconstrained(num_samples)
        z, log_q = z.clone(), log_q.clone()
        z[0::6], log_q[0::6] = 50.0, math.nan
        z[3::6] = math.nan
        return z, log_q


def test_imh_nan_proposals_are_rejected() -> None:
    pyro.set_rng_seed(10)
    model, loc, cov = gaussian_model("cpu")
    kernel = FlowIMH(NaNProposal(loc, 2.0), model, batch_size=30)
    mcmc = MCMC(kernel, num_samples=600, warmup_steps=0, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"]
    assert bool(torch.isfinite(x).all()) and float(x.abs().max()) < 40
    # a third of the steps are poisoned: acceptance at most 2/3 + 5 se of 600 Bernoullis
    assert mcmc.diagnostics()["acceptance rate"]["chain 0"] < 2 / 3 + 5 * math.sqrt(0.25 / 600)


def test_imh_with_pyro_autoguide_and_constrained_site() -> None:
    pyro.set_rng_seed(11)
    pyro.clear_param_store()

    def model() -> None:
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        pyro.sample("x", dist.Normal(s, 1.0))

    guide = AutoMultivariateNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(200):
        svi.step()
    for g in (guide, AutoContinuousProposal(guide)):
        kernel = FlowIMH(g, model)
        mcmc = MCMC(kernel, num_samples=1500, warmup_steps=50, disable_progbar=True)
        mcmc.run()
        s, x = mcmc.get_samples()["s"], mcmc.get_samples()["x"]
        assert bool((s > 0).all())
        assert_mean(s, math.exp(0.125))  # LogNormal(0, 0.5) mean
        assert_mean(x, math.exp(0.125))  # E[x] = E[s]
        assert mcmc.diagnostics()["acceptance rate"]["chain 0"] > 0.5


def test_imh_bad_input() -> None:
    model, loc, _ = gaussian_model("cpu")
    proposal = GaussianProposal(loc, 1.0)
    with pytest.raises(ValueError, match="got neither"):
        FlowIMH(proposal)
    with pytest.raises(TypeError, match="sample_unconstrained"):
        FlowIMH(object(), model)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size >= 1"):
        FlowIMH(proposal, model, batch_size=0)
    with pytest.raises(ValueError, match="latent_dim equal to the model's 2, got 3"):
        FlowIMH(GaussianProposal(torch.zeros(3), 1.0), model).setup(0)
    with pytest.raises(ValueError, match="expected initial_params"):
        FlowIMH(proposal, potential_fn=lambda p: p["x"].sum()).setup(0)

    class WrongShape(GaussianProposal):
        def sample_unconstrained(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
            z, log_q = super().sample_unconstrained(n)
            return z, log_q[:-1]

    with pytest.raises(ValueError, match=r"log_q of shape \(8,\)"):
        FlowIMH(WrongShape(loc, 1.0), model, batch_size=8).setup(0)
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="has been run"):
        AutoContinuousProposal(AutoMultivariateNormal(model))
    with pytest.raises(TypeError, match="AutoContinuous"):
        AutoContinuousProposal(AutoNormal(model))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- NeuTra
def funnel() -> None:
    v = pyro.sample("v", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(0.0, (v / 2).exp()))


def train_iaf(steps: int) -> AutoIAFNormal:
    pyro.clear_param_store()
    guide = AutoIAFNormal(funnel, hidden_dim=[16], num_transforms=2)
    svi = SVI(funnel, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(steps):
        svi.step()
    return guide


def run_neutra(steps: int, warmup: int, samples: int) -> dict:
    guide = train_iaf(steps)
    nt = NeuTraNUTS(guide, funnel, max_tree_depth=5)
    mcmc = MCMC(nt.kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run()
    out = nt.transform_samples(mcmc.get_samples())
    assert set(out) == {"v", "x"} and out["v"].shape == (samples,)
    return out


def test_neutra_funnel_short() -> None:
    pyro.set_rng_seed(12)
    out = run_neutra(steps=200, warmup=100, samples=200)
    assert_mean(out["v"], 0.0)
    assert_mean(out["v"].square(), 1.0)
    assert_mean(out["x"], 0.0)


@pytest.mark.slow
def test_neutra_funnel_long() -> None:
    pyro.set_rng_seed(13)
    out = run_neutra(steps=1500, warmup=500, samples=2000)
    assert_mean(out["v"], 0.0)
    assert_mean(out["v"].square(), 1.0)
    assert_mean(out["x"].square(), math.exp(0.5))  # E[x^2] = E[exp(v)] = e^{1/2}


def test_neutra_function_and_bad_input() -> None:
    pyro.set_rng_seed(14)
    guide = train_iaf(5)
    warped, kernel, to_model = neutra(guide, funnel, max_tree_depth=3)
    mcmc = MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run()
    assert to_model(mcmc.get_samples())["x"].shape == (5,)
    with pytest.raises(ValueError, match="shared_latent"):
        to_model({"v": torch.zeros(5)})
    with pytest.raises(ValueError, match="last dimension of size 2"):
        to_model({"v_shared_latent": torch.zeros(5, 3)})
    with pytest.raises(TypeError, match="AutoContinuous"):
        NeuTraNUTS(AutoNormal(funnel), funnel)  # type: ignore[arg-type]
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="trained guide"):
        NeuTraNUTS(AutoIAFNormal(funnel), funnel)


# ----------------------------------------------------------------------------- pyro-relax guides
def test_kernels_run_with_pyro_relax_flow_guide() -> None:
    """Smoke test with the package's own AutoFlowGuide (untrained: shapes and plumbing only)."""
    from pyro_relax.infer.guides import AutoFlowGuide

    pyro.set_rng_seed(15)
    pyro.clear_param_store()

    def model() -> None:
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        pyro.sample("x", dist.Normal(s, 1.0).expand([3]).to_event(1))

    guide = AutoFlowGuide(model, num_layers=1, hidden=8, kind="affine", init_scale=1.0)
    guide()
    mcmc = MCMC(FlowIMH(guide, model, batch_size=16), num_samples=40, warmup_steps=0,
                disable_progbar=True)
    mcmc.run()
    samples = mcmc.get_samples()
    assert samples["s"].shape == (40,) and samples["x"].shape == (40, 3)
    assert bool((samples["s"] > 0).all())
    assert mcmc.diagnostics()["acceptance rate"]["chain 0"] > 0  # the chain moves
    nt = NeuTraNUTS(guide, model, max_tree_depth=3)
    mcmc = MCMC(nt.kernel, num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run()
    out = nt.transform_samples(mcmc.get_samples())
    assert out["x"].shape == (5, 3) and bool((out["s"] > 0).all())


def test_ais_imh_runner_kernel_is_exact_on_a_gaussian() -> None:
    """ais-imh (independence MH with the flow + AIS proposal) keeps N(1, 0.5^2 I).

    Tolerance: 5 standard errors of the chain mean, se = sd / sqrt(ESS) with the
    bulk ESS of the chain (ArviZ), floored at 50 draws of ESS.
    """

    from pyro_relax.infer.runner import fit_guide, run_mcmc

    def gauss() -> None:
        pyro.sample("x", dist.Normal(torch.ones(2), 0.5).to_event(1))

    fit = fit_guide(gauss, "flow", steps=30, num_particles=4, seed=0, progress=False,
                    guide_kwargs={"num_layers": 1, "hidden": 8})
    res = run_mcmc(gauss, "ais-imh", num_samples=400, warmup_steps=50, seed=0,
                   progress=False, guide=fit)
    x = res.samples["x"][0].numpy()
    assert x.shape == (400, 2) and res.seconds >= fit.seconds
    for i in range(2):
        ess = max(float(az.ess(x[:, i])), 50.0)
        assert abs(x[:, i].mean() - 1.0) < 5 * 0.5 / ess**0.5, (x[:, i].mean(), ess)
    normal = fit_guide(gauss, "normal", steps=2, progress=False)
    with pytest.raises(ValueError, match="ais-imh needs a flow"):
        run_mcmc(gauss, "ais-imh", num_samples=5, warmup_steps=0, progress=False, guide=normal)


def test_unconstrained_layout_matches_pyro_packing() -> None:
    """FlowIMH's site layout (public API only) is the one AutoContinuous packs with."""
    from pyro_relax.infer.kernels.proposal import unconstrained_layout

    pyro.clear_param_store()

    def model() -> None:
        pyro.sample("p", dist.Dirichlet(torch.ones(3)))  # simplex: 3 values, 2 unconstrained
        pyro.sample("s", dist.LogNormal(0.0, 1.0))

    guide = AutoMultivariateNormal(model)
    guide()
    layout = unconstrained_layout(guide)
    assert dict(layout) == {"p": torch.Size([2]), "s": torch.Size([])}
    z = torch.randn(3)
    ours = unflatten_params(z, layout)
    theirs = {site["name"]: v for site, v in guide._unpack_latent(z)}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_adaptation_windows_follow_stan() -> None:
    from pyro_relax.infer.kernels.adaptation import adaptation_windows

    assert adaptation_windows(0) == [] and adaptation_windows(10) == [(0, 9)]
    assert adaptation_windows(1000) == [
        (0, 74), (75, 99), (100, 149), (150, 249), (250, 449), (450, 949), (950, 999)
    ]
    small = adaptation_windows(100)  # 15% / 75% / 10%
    assert small[0] == (0, 14) and small[-1] == (90, 99)
    for windows in (adaptation_windows(n) for n in (25, 100, 300, 1000, 2345)):
        assert all(b[0] == a[1] + 1 for a, b in zip(windows, windows[1:], strict=False))
