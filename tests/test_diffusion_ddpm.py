"""DDPM: schedules, the ELBO against the exact Gaussian log density, the loss, bad input."""

import math

import pytest
import torch

from pyro_relax.diffusion import DDPM, VPSDE, DDPMSchedule, GaussianNoisePredictor
from pyro_relax.nn.score import ScoreMLP

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gaussian(device):
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64, device=device)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64, device=device)
    return mean, cov, torch.distributions.MultivariateNormal(mean, cov)


def _optimal_ddpm(device, variance="beta", kind="linear", steps=1000):
    mean, cov, data = _gaussian(device)
    schedule = DDPMSchedule(steps, kind).to(device)
    return DDPM(GaussianNoisePredictor(schedule, mean, cov), 2, schedule, variance), data


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_elbo_at_or_below_exact_log_likelihood(variance, kind, device):
    torch.manual_seed(0)
    ddpm, data = _optimal_ddpm(device, variance, kind)
    x = data.sample((400,))
    gap = ddpm.elbo(x) - data.log_prob(x)  # all 1000 terms, one x_t draw each
    se = float(gap.std()) / math.sqrt(len(gap))
    # E_data[ELBO] <= E_data[log p_model] <= E_data[log p_data] (Gibbs): the mean gap is
    # <= 0 up to 5 standard errors of its estimate
    assert float(gap.mean()) <= 5 * se, (float(gap.mean()), se)
    # and the bound is not vacuous: with the optimal noise prediction it is within a
    # nat (per 2 dimensions) of the truth for both variance choices
    assert float(gap.mean()) > -1.5


def test_elbo_with_beta_variance_is_tight_for_unit_like_data():
    # for N(0, I) data the true reverse kernel has variance exactly beta_t, so with the
    # optimal mean and sigma_t^2 = beta_t every KL term vanishes but the O(1/N) decoder one
    torch.manual_seed(0)
    schedule = DDPMSchedule(1000)
    zero, eye = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    ddpm = DDPM(GaussianNoisePredictor(schedule, zero, eye), 2, schedule, "beta")
    x = torch.randn(300, 2, dtype=torch.float64)
    gap = ddpm.elbo(x) - torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    assert abs(float(gap.mean())) < 5 * float(gap.std()) / math.sqrt(300) + 1e-3


def test_elbo_term_subsampling_is_unbiased():
    torch.manual_seed(0)
    ddpm, data = _optimal_ddpm("cpu", steps=100)
    x = data.sample((1,)).expand(2000, 2)
    full = ddpm.elbo(x[:400])
    sub = ddpm.elbo(x, num_terms=5)
    se = math.sqrt(float(sub.var()) / len(sub) + float(full.var()) / len(full))
    assert abs(float(sub.mean() - full.mean())) < 5 * se


def test_linear_schedule_is_the_discretized_vp_sde():
    # abar_i = prod (1 - beta_k) ~ exp(-int_0^{i/N} beta(u) du) with beta(u) = N beta_{uN}
    schedule = DDPMSchedule(1000)
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    i = torch.tensor([10, 100, 500, 1000])
    a, _ = sde.marginal_coefs(i.double() / 1000)
    # in logs: -log abar_i = sum beta_k + sum beta_k^2 / 2 + ..., the second sum is at most
    # 1000 * 0.02^2 / 2 = 0.2 (0.07 in fact); the sum against the integral differs by O(beta_end)
    log_gap = (schedule.alpha_bars[i].log() - a.square().log()).abs()
    assert bool((log_gap < 0.1).all()) and float(log_gap[0]) < 1e-3


def test_cosine_schedule():
    s = DDPMSchedule(200, "cosine")
    assert float(s.alpha_bars[0]) == 1.0 and float(s.alpha_bars[-1]) < 1e-4
    assert bool((s.alpha_bars[1:] < s.alpha_bars[:-1]).all()) and float(s.betas.max()) <= 0.999
    assert "cosine" in repr(s)


def test_loss_is_minimized_by_the_optimal_noise_prediction():
    torch.manual_seed(0)
    ddpm, data = _optimal_ddpm("cpu", steps=100)
    shifted = DDPM(_Shifted(ddpm.network), 2, ddpm.schedule)
    x = data.sample((20000,))
    # E|eps - (eps* + c)|^2 = E|eps - eps*|^2 + |c|^2 with c = (0.1, 0.1): a 0.02 gap;
    # same draws for both (same seed) so only the cross term's noise (se ~ 0.003) remains
    torch.manual_seed(1)
    l_opt = ddpm.loss(x)
    torch.manual_seed(1)
    l_shift = shifted.loss(x)
    assert abs(float(l_shift - l_opt) - 0.02) < 0.01


class _Shifted(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.inner = net

    def forward(self, x, t):
        return self.inner(x, t) + 0.1


@pytest.mark.parametrize("device", DEVICES)
def test_q_sample_noise_prediction_shapes_and_gradients(device):
    torch.manual_seed(0)
    net = ScoreMLP(3, hidden=(8,)).to(device)
    ddpm = DDPM(net, schedule=DDPMSchedule(50)).to(device)
    x0 = torch.randn(4, 2, 3, device=device)
    i = torch.randint(1, 51, (4, 2), device=device)
    assert ddpm.q_sample(x0, i).shape == x0.shape
    assert ddpm.noise_prediction(x0, torch.tensor(3)).shape == x0.shape
    assert ddpm.elbo(x0, num_terms=3).shape == (4, 2)
    loss = ddpm.loss(x0)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert ddpm.prior_sample((5,)).shape == (5, 3)


def test_bad_input():
    net = ScoreMLP(2, hidden=(8,))
    ddpm = DDPM(net, schedule=DDPMSchedule(10))
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"steps in \[1, 10\]"):
        ddpm.q_sample(x, torch.tensor(0))
    with pytest.raises(ValueError, match=r"steps in \[1, 10\]"):
        ddpm.noise_prediction(x, torch.tensor(11))
    with pytest.raises(ValueError, match="integer steps"):
        ddpm.q_sample(x, torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"expected event shape \(2,\)"):
        ddpm.loss(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="dimension 3"):
        DDPM(net, dim=3)
    with pytest.raises(ValueError, match="variance"):
        DDPM(net, variance="learned")
    with pytest.raises(ValueError, match="num_steps"):
        DDPMSchedule(0)
    with pytest.raises(ValueError, match="kind"):
        DDPMSchedule(10, "sigmoid")
    with pytest.raises(ValueError, match="num_terms"):
        ddpm.elbo(x, num_terms=0)
    bad = DDPM(_WrongShape(), dim=2, schedule=DDPMSchedule(10))
    with pytest.raises(ValueError, match="network to return shape"):
        bad.loss(x)


class _WrongShape(torch.nn.Module):
    def forward(self, x, t):
        return x[..., :1]
