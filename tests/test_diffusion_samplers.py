"""Every sampler, with the exact Gaussian score plugged in, reproduces the data's moments."""

import math

import pytest
import torch

from pyro_relax.diffusion import (
    DDPM,
    VESDE,
    VPSDE,
    DDPMSchedule,
    DiffFlow,
    GaussianNoisePredictor,
    GaussianScore,
    ScoreModel,
    SubVPSDE,
    ddim,
    ddpm_ancestral,
    euler_maruyama,
    predictor_corrector,
    probability_flow,
    time_grid,
)
from pyro_relax.nn.score import ScoreMLP

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": lambda: VESDE(sigma_max=20.0)}
MEAN = [1.0, -0.5]
COV = [[1.0, 0.6], [0.6, 0.8]]


def _data(device):
    mean = torch.tensor(MEAN, dtype=torch.float64, device=device)
    cov = torch.tensor(COV, dtype=torch.float64, device=device)
    return mean, cov


def _check_moments(x, mean, cov, bias=0.0):
    """Sample mean and covariance within 5 standard errors (plus a stated discretization bias).

    se(mean_i) = sqrt(C_ii / n); se(C_ij) = sqrt((C_ii C_jj + C_ij^2) / n) for Gaussian data.
    """
    n = x.shape[0]
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se_mean + bias).all(), (x.mean(0), mean)
    d = cov.diagonal()
    se_cov = ((d[:, None] * d[None, :] + cov.square()) / n).sqrt()
    emp = torch.cov(x.T)
    assert ((emp - cov).abs() < 5 * se_cov + bias).all(), (emp, cov)


def _exact_start(sde, mean, cov, n):
    """Draws from the exact p_T, so that only the sampler (not the prior mismatch) is tested."""
    a, s = sde.marginal_coefs(torch.ones((), dtype=mean.dtype, device=mean.device))
    eye = torch.eye(len(mean), dtype=mean.dtype, device=mean.device)
    return torch.distributions.MultivariateNormal(a * mean, a**2 * cov + s**2 * eye).sample((n,))


SAMPLERS = {
    "em": lambda m, xT: euler_maruyama(m, (len(xT),), steps=200, x_T=xT),
    # a small snr keeps the Langevin corrector's O(step) bias below the test's resolution
    "pc": lambda m, xT: predictor_corrector(m, (len(xT),), steps=200, snr=0.05, x_T=xT),
    "ode": lambda m, xT: probability_flow(m, (len(xT),), steps=50, x_T=xT),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("name", list(SDES))
def test_sde_samplers_reproduce_gaussian_moments(name, sampler, device):
    torch.manual_seed(0)
    mean, cov = _data(device)
    sde = SDES[name]()
    model = ScoreModel(sde, GaussianScore(sde, mean, cov), 2, "score")
    x = SAMPLERS[sampler](model, _exact_start(sde, mean, cov, 4000))
    # bias 0.02: 200 Euler steps (error O(dt) on moments of order 1) and the t_min offset
    _check_moments(x, mean, cov, bias=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("name", list(SDES))
def test_sde_samplers_moments_large_sample(name, sampler):
    torch.manual_seed(1)
    mean, cov = _data("cpu")
    sde = SDES[name]()
    model = ScoreModel(sde, GaussianScore(sde, mean, cov), 2, "score")
    x = SAMPLERS[sampler](model, _exact_start(sde, mean, cov, 40000))
    _check_moments(x, mean, cov, bias=0.01)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ddpm_samplers_reproduce_gaussian_moments(variance, device):
    torch.manual_seed(0)
    mean, cov = _data(device)
    schedule = DDPMSchedule(1000).to(device)
    ddpm = DDPM(GaussianNoisePredictor(schedule, mean, cov), 2, schedule, variance=variance)
    n = 4000
    # 0.02: the N(0, I) start differs from q(x_N) by abar_N ~ 4e-5, and the 500-step DDIM
    # contraction (a product of cosines of the angle steps) is below 1% on these moments
    _check_moments(ddpm_ancestral(ddpm, (n,)), mean, cov, bias=0.02)
    _check_moments(ddim(ddpm, (n,), steps=500), mean, cov, bias=0.02)
    _check_moments(ddim(ddpm, (n,), steps=500, eta=1.0), mean, cov, bias=0.02)


def test_ddim_few_steps_is_deterministic_and_contracts():
    torch.manual_seed(0)
    mean, cov = _data("cpu")
    schedule = DDPMSchedule(1000)
    ddpm = DDPM(GaussianNoisePredictor(schedule, mean, cov), 2, schedule)
    xT = torch.randn(4000, 2, dtype=torch.float64)
    a, b = ddim(ddpm, steps=20, x_T=xT), ddim(ddpm, steps=20, x_T=xT)
    assert torch.equal(a, b)
    # deterministic DDIM shrinks a Gaussian by the cosines of its angle steps: fewer steps
    # give a smaller covariance (a known discretization effect, here a check of direction)
    c20, c500 = torch.cov(a.T).trace(), torch.cov(ddim(ddpm, steps=500, x_T=xT).T).trace()
    assert c20 < c500


@pytest.mark.parametrize("device", DEVICES)
def test_diffflow_backward_chain_with_zero_drift_and_exact_score(device):
    torch.manual_seed(0)
    mean, cov = _data(device)
    sde = VPSDE()
    flow = DiffFlow(
        sde, GaussianScore(sde, mean, cov), None, 2, num_steps=300, parameterization="score"
    )
    x = flow.sample((4000,), denoise=True)
    # 300 quadratic steps; the prior mismatch a(1) |mean| < 0.01 and O(dt) bias: 0.03
    _check_moments(x, mean, cov, bias=0.03)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_shapes_dtype_and_progress(device, capsys):
    torch.manual_seed(0)
    net = ScoreMLP(3, hidden=(8,)).to(device)
    model = ScoreModel(VPSDE(), net)
    for fn in (euler_maruyama, predictor_corrector, probability_flow):
        x = fn(model, (2, 5), steps=3, progress=True)
        assert x.shape == (2, 5, 3) and x.device.type == device and x.dtype == torch.float32
    assert "euler_maruyama" in capsys.readouterr().err
    ddpm = DDPM(ScoreMLP(3, hidden=(8,)).double().to(device), schedule=DDPMSchedule(10).to(device))
    for fn in (ddpm_ancestral, ddim):
        x = fn(ddpm, (2, 5), steps=4)
        assert x.shape == (2, 5, 3) and x.dtype == torch.float64


def test_samplers_are_differentiable():
    torch.manual_seed(0)
    net = ScoreMLP(2, hidden=(8,))
    model = ScoreModel(VPSDE(), net)
    for fn in (euler_maruyama, probability_flow):
        x = fn(model, (4,), steps=5)
        (g,) = torch.autograd.grad(x.square().sum(), net.net.net[0].weight)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_sampler_bad_input():
    model = ScoreModel(VPSDE(), ScoreMLP(2, hidden=(8,)))
    for fn in (euler_maruyama, predictor_corrector, probability_flow):
        with pytest.raises(ValueError, match="steps >= 1"):
            fn(model, (3,), steps=0)
        with pytest.raises(ValueError, match=r"expected event shape \(2,\)"):
            fn(model, (3,), steps=2, x_T=torch.zeros(3, 4))
        with pytest.raises(ValueError, match="t_min"):
            fn(model, (3,), steps=2, t_min=1.0)
    with pytest.raises(ValueError, match="increasing"):
        euler_maruyama(model, (3,), times=[0.0, 0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="times in"):
        euler_maruyama(model, (3,), times=[0.0, 1.5])
    with pytest.raises(ValueError, match="snr"):
        predictor_corrector(model, (3,), steps=2, snr=0.0)
    ddpm = DDPM(ScoreMLP(2, hidden=(8,)), schedule=DDPMSchedule(10))
    with pytest.raises(ValueError, match="steps >= 1"):
        ddim(ddpm, (3,), steps=0)
    with pytest.raises(ValueError, match="steps <= 10"):
        ddpm_ancestral(ddpm, (3,), steps=11)
    with pytest.raises(ValueError, match="eta"):
        ddim(ddpm, (3,), eta=-1.0)
    assert time_grid(3, "uniform") == [0.0, 1 / 3, 2 / 3, 1.0]
    assert math.isclose(time_grid(2)[1], 0.25)
