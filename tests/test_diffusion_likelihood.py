"""Probability-flow ODE likelihood, divergences, dequantization and bits per dimension."""

import math

import pytest
import torch

from pyro_relax.diffusion import (
    VESDE,
    VPSDE,
    GaussianScore,
    ScoreModel,
    SubVPSDE,
    bits_per_dim,
    dequantize,
    dequantized_log_prob,
    exact_divergence,
    hutchinson_divergence,
    ode_log_prob,
)
from pyro_relax.nn.score import ScoreMLP

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": lambda: VESDE(sigma_max=20.0)}


def _gaussian(device, d=2):
    mean = torch.tensor([1.0, -0.5, 0.3][:d], dtype=torch.float64, device=device)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.66, 0.0], [0.2, -0.3, 0.5]], dtype=torch.float64)
    cov = (a[:d, :d] @ a[:d, :d].T).to(device)
    return mean, cov, torch.distributions.MultivariateNormal(mean, cov)


def _exact_model(name, device, d=2):
    sde = SDES[name]()
    mean, cov, data = _gaussian(device, d)
    net = GaussianScore(sde, mean, cov)
    return ScoreModel(sde, net, d, "score"), net, data


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(SDES))
def test_ode_log_prob_equals_exact_gaussian_log_density(name, device):
    torch.manual_seed(0)
    model, net, data = _exact_model(name, device)
    x = data.sample((100,))
    lp, z = ode_log_prob(model, x, rtol=1e-7, atol=1e-7, return_latent=True)
    # The ODE with the exact score maps p_{t_min} onto p_T exactly, so with p_T in place
    # of the prior it returns log p_{t_min}(x); the only error left is the solver's
    # (tolerance 1e-7, observed ~1e-5 nats), so 1e-3 nats leaves a margin and still
    # fails for a wrong sign or factor in the drift or divergence.
    log_pT = net.log_prob(z, 1.0)
    exact = net.log_prob(x, model.t_min)
    assert (lp - model.sde.prior_log_prob(z) + log_pT - exact).abs().max() < 1e-3
    # with the default prior the error is the prior mismatch log prior(z) - log p_T(z)
    # plus the solver's, and p_{t_min} is within 1e-3 of the data density
    mismatch = (model.sde.prior_log_prob(z) - log_pT).abs()
    assert ((lp - data.log_prob(x)).abs() <= mismatch + 2e-3).all()


@pytest.mark.parametrize("device", DEVICES)
def test_ode_log_prob_fixed_step_and_batch_shape(device):
    torch.manual_seed(0)
    model, net, data = _exact_model("vp", device)
    x = data.sample((3, 4))
    lp_adaptive = ode_log_prob(model, x)
    lp_rk4 = ode_log_prob(model, x, method="rk4", steps=200)
    assert lp_adaptive.shape == (3, 4) == lp_rk4.shape
    # rk4 with 200 steps is accurate to ~1e-4 on this smooth linear field
    assert torch.allclose(lp_adaptive, lp_rk4, atol=2e-3)
    lp32 = ode_log_prob(model.float(), x.float())
    assert lp32.dtype == torch.float32 and torch.allclose(lp32.double(), lp_adaptive, atol=1e-2)


def test_ode_log_prob_with_hutchinson_is_unbiased():
    torch.manual_seed(0)
    model, net, data = _exact_model("vp", "cpu", d=3)
    x = data.sample((1,)).expand(400, 3)  # 400 solves of one point, each its own probe
    lp = ode_log_prob(model, x, divergence="hutchinson", rtol=1e-6, atol=1e-6)
    exact = ode_log_prob(model, x[:1], divergence="exact", rtol=1e-6, atol=1e-6)
    se = float(lp.std()) / math.sqrt(len(lp))
    assert float(lp.std()) > 0  # the estimator is really random
    assert abs(float(lp.mean() - exact)) < 5 * se + 1e-3  # 5 standard errors + solver error


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_agrees_with_exact_divergence(noise):
    torch.manual_seed(0)
    net = ScoreMLP(4, hidden=(32,)).double()
    t = torch.tensor(0.3, dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)

    def fn(y):
        return net(y, t)

    _, exact = exact_divergence(fn, x)
    reps = 2000
    xs = x.expand(reps, 5, 4)  # every replicate draws its own probe
    _, est = hutchinson_divergence(fn, xs, noise=noise)
    se = est.std(0) / math.sqrt(reps)
    assert bool((se > 0).all())
    assert ((est.mean(0) - exact).abs() < 5 * se).all()  # 5 standard errors
    # probes averaged inside one call: same mean, about sqrt(8) times smaller spread
    _, est8 = hutchinson_divergence(fn, xs[:500], num_probes=8, noise=noise)
    assert ((est8.mean(0) - exact).abs() < 5 * est8.std(0) / math.sqrt(500)).all()


def test_exact_divergence_of_a_linear_map_and_its_gradient():
    a = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, dtype=torch.float64)
    _, div = exact_divergence(lambda y: y @ a.T, x)
    assert torch.allclose(div, torch.trace(a).expand(2))
    (g,) = torch.autograd.grad(div.sum(), a)  # create_graph follows grad mode
    assert torch.allclose(g, 2 * torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        exact_divergence(lambda y: y.sum(-1), x)


def test_dequantize_and_bits_per_dim():
    torch.manual_seed(0)
    x = torch.randint(0, 17, (1000, 64)).double()
    y = dequantize(x, 17)
    assert bool(((y >= 0) & (y < 1)).all()) and torch.equal((y * 17).floor(), x)
    # the uniform density on [0, 1)^d gives exactly log2(K) bits per dimension
    lp = dequantized_log_prob(lambda v: v.new_zeros(v.shape[:-1]), x, 17, num_samples=2)
    assert torch.allclose(bits_per_dim(lp, 64), torch.full((1000,), math.log2(17), dtype=lp.dtype))
    with pytest.raises(ValueError, match="integer values"):
        dequantize(torch.tensor([0.5]), 17)
    with pytest.raises(ValueError, match="integer values"):
        dequantize(torch.tensor([17.0]), 17)
    with pytest.raises(ValueError, match="num_bins"):
        dequantize(torch.tensor([1.0]), 1)
    with pytest.raises(ValueError, match="event_size"):
        bits_per_dim(lp, 0)


def test_ode_log_prob_bad_input():
    model, _, _ = _exact_model("vp", "cpu")
    with pytest.raises(ValueError, match=r"expected event shape \(2,\)"):
        ode_log_prob(model, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="finite"):
        ode_log_prob(model, torch.tensor([[float("nan"), 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="t_min"):
        ode_log_prob(model, torch.zeros(1, 2, dtype=torch.float64), t_min=1.5)
    with pytest.raises(ValueError, match="divergence"):
        ode_log_prob(model, torch.zeros(1, 2, dtype=torch.float64), divergence="fast")
    with pytest.raises(ValueError, match="steps >= 1"):
        ode_log_prob(model, torch.zeros(1, 2, dtype=torch.float64), method="rk4", steps=0)
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_divergence(lambda y: y, torch.zeros(2), num_probes=0)
