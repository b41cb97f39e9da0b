"""Score network interface, denoising score matching, the continuous ELBO, bad input."""

import math

import pytest
import torch

from pyro_relax.diffusion import VESDE, VPSDE, GaussianScore, ScoreModel, SubVPSDE, ode_log_prob
from pyro_relax.nn.score import ScoreMLP, TimeEmbedding

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": lambda: VESDE(sigma_max=20.0)}


def _gaussian(device="cpu"):
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64, device=device)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64, device=device)
    return torch.distributions.MultivariateNormal(mean, cov)


@pytest.mark.parametrize("device", DEVICES)
def test_score_mlp_interface(device):
    torch.manual_seed(0)
    net = ScoreMLP(3, hidden=(16,)).to(device)
    x = torch.randn(4, 5, 3, device=device)
    assert net(x, torch.rand(4, 5, device=device)).shape == x.shape
    assert (
        net(x, 0.3).shape == x.shape and net(x, torch.tensor(0.3, device=device)).shape == x.shape
    )
    zero = ScoreMLP(3, hidden=(16,), zero_last=True)
    assert torch.equal(zero(x.cpu(), 0.5), torch.zeros_like(x.cpu()))
    with pytest.raises(ValueError, match="last dimension 3"):
        net(torch.zeros(2, 4, device=device), 0.1)
    with pytest.raises(ValueError, match="broadcastable"):
        net(x, torch.rand(3, device=device))
    with pytest.raises(ValueError, match="even"):
        TimeEmbedding(5)
    emb = TimeEmbedding(8)(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert emb.dtype == torch.float64 and torch.allclose(
        emb[0, 4:], torch.ones(4, dtype=torch.float64)
    )


@pytest.mark.parametrize("likelihood_weighting", [False, True])
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_dsm_loss_excess_is_the_weighted_score_error(name, likelihood_weighting):
    # DSM = const + 1/2 E_t E[lambda(t) |s - grad log p_t|^2]; for the exact score shifted by a
    # constant c the excess is 1/2 E_t[lambda(t)] |c|^2, computed here by quadrature
    torch.manual_seed(0)
    sde = SDES[name]()
    data = _gaussian()
    exact = ScoreModel(sde, GaussianScore(sde, data.mean, data.covariance_matrix), 2, "score")
    shift = torch.tensor([0.3, -0.2], dtype=torch.float64)
    shifted = ScoreModel(sde, _Shift(exact.network, shift), 2, "score")
    diffs = []
    for rep in range(30):
        x = data.sample((500,))
        torch.manual_seed(100 + rep)
        a = exact.loss(x, likelihood_weighting)
        torch.manual_seed(100 + rep)
        b = shifted.loss(x, likelihood_weighting)
        diffs.append(float(b - a))
    diffs = torch.tensor(diffs, dtype=torch.float64)
    t = torch.linspace(exact.t_min, 1.0, 20001, dtype=torch.float64)
    lam = sde.diffusion_sq(t) if likelihood_weighting else sde.marginal_coefs(t)[1].square()
    expected = (
        0.5 * float(torch.trapezoid(lam, t)) / (1 - exact.t_min) * float(shift.square().sum())
    )
    se = float(diffs.std()) / math.sqrt(len(diffs))
    assert abs(float(diffs.mean()) - expected) < 5 * se, (float(diffs.mean()), expected, se)


class _Shift(torch.nn.Module):
    def __init__(self, net, c):
        super().__init__()
        self.inner, self.c = net, c

    def forward(self, x, t):
        return self.inner(x, t) + self.c


@pytest.mark.parametrize("name", list(SDES))
def test_continuous_elbo_is_tight_for_the_exact_score_and_a_bound_otherwise(name):
    torch.manual_seed(0)
    sde = SDES[name]()
    data = _gaussian()
    exact = ScoreModel(sde, GaussianScore(sde, data.mean, data.covariance_matrix), 2, "score")
    x = data.sample((300,))
    gap = exact.elbo(x, num_times=100, t_min=0.0) - data.log_prob(x)
    se = float(gap.std()) / math.sqrt(len(gap))
    # tight up to 5 s.e. and the prior mismatch KL(p_T || prior) (< 0.02 here, largest for VE)
    assert abs(float(gap.mean())) < 5 * se + 0.02
    wrong = ScoreModel(
        sde, _Shift(exact.network, torch.tensor([1.0, 1.0], dtype=torch.float64)), 2, "score"
    )
    gap_w = wrong.elbo(x, num_times=100, t_min=0.0) - data.log_prob(x)
    assert float(gap_w.mean()) < -5 * float(gap_w.std()) / math.sqrt(300)  # strictly below


@pytest.mark.parametrize("device", DEVICES)
def test_parameterizations_shapes_and_noise_scaling(device):
    torch.manual_seed(0)
    sde = VPSDE()
    net = ScoreMLP(2, hidden=(8,)).to(device)
    noise = ScoreModel(sde, net)
    score = ScoreModel(sde, net, parameterization="score")
    x = torch.randn(3, 4, 2, device=device)
    t = torch.full((3, 4), 0.4, device=device)
    _, std = sde.marginal_coefs(t)
    assert torch.allclose(noise.score(x, t), -score.score(x, t) / std.unsqueeze(-1))
    assert noise.reverse_drift(x, 0.4).shape == x.shape == noise.ode_drift(x, 0.4).shape
    assert noise.prior_sample((5,)).shape == (5, 2) and noise.prior_sample().device.type == device
    lp = noise.elbo(x, num_times=2)
    assert lp.shape == (3, 4)
    lp.sum().backward()  # the bound is differentiable (exact divergence with a graph)
    assert all(p.grad is not None for p in net.parameters())


def test_bad_input():
    sde = VPSDE()
    with pytest.raises(ValueError, match="dimension 2, got one of dimension 3"):
        ScoreModel(sde, ScoreMLP(3), dim=2)
    with pytest.raises(ValueError, match="parameterization"):
        ScoreModel(sde, ScoreMLP(2), parameterization="velocity")
    with pytest.raises(ValueError, match="t_min"):
        ScoreModel(sde, ScoreMLP(2), t_min=1.0)
    with pytest.raises(TypeError, match="SDE"):
        ScoreModel("vp", ScoreMLP(2))
    model = ScoreModel(sde, ScoreMLP(2, hidden=(8,)))
    with pytest.raises(ValueError, match=r"times in \[0, 1\]"):
        model.score(torch.zeros(3, 2), 1.5)
    with pytest.raises(ValueError, match=r"times in \[0, 1\]"):
        model.score(torch.zeros(3, 2), torch.tensor([-0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"expected event shape \(2,\)"):
        model.loss(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="finite"):
        model.loss(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match="num_times"):
        model.elbo(torch.zeros(3, 2), num_times=0)
    bad = ScoreModel(sde, _Bad(), dim=2)
    with pytest.raises(ValueError, match="network to return shape"):
        bad.score(torch.zeros(3, 2), 0.5)


class _Bad(torch.nn.Module):
    def forward(self, x, t):
        return x.sum(-1)


@pytest.mark.slow
def test_trained_score_model_ode_likelihood_near_truth():
    torch.manual_seed(0)
    data = _gaussian()
    model = ScoreModel(VPSDE(), ScoreMLP(2, hidden=(64, 64)))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(3000):
        opt.zero_grad()
        model.loss(data.sample((256,)).float()).backward()
        opt.step()
    x = data.sample((500,))
    with torch.no_grad():
        lp = ode_log_prob(model, x.float()).double()
    # the test NLL of a fitted model is within 0.1 nats of the entropy (fit error dominates)
    assert abs(float(lp.mean() - data.log_prob(x).mean())) < 0.1


def test_unchecked_methods_agree_with_the_checked_ones():
    sde = VPSDE()
    model = ScoreModel(sde, GaussianScore(sde, torch.zeros(2), torch.eye(2)), 2, "score").double()
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.full((6,), 0.4, dtype=torch.float64)
    g2 = sde.diffusion_sq(t).unsqueeze(-1)
    f, s = model.unchecked_drift_and_score(x, t)
    torch.testing.assert_close(s, model.score(x, 0.4))
    torch.testing.assert_close(f, model.forward_drift(x, 0.4))
    torch.testing.assert_close(model.unchecked_reverse_drift(x, t), f - g2 * s)
    torch.testing.assert_close(model.unchecked_ode_drift(x, t), f - 0.5 * g2 * s)
    torch.testing.assert_close(model.reverse_drift(x, 0.4), f - g2 * s)
    torch.testing.assert_close(model.ode_drift(x, 0.4), f - 0.5 * g2 * s)
