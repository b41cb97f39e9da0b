"""DiffFlow: zero drift is the fixed SDE, the path KL converges to the continuous bound."""

import math

import pytest
import torch

from pyro_relax.diffusion import (
    VPSDE,
    DiffFlow,
    GaussianScore,
    ScoreModel,
    euler_maruyama,
    path_log_weight,
    time_grid,
)
from pyro_relax.nn.score import ScoreMLP

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gaussian(device):
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64, device=device)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64, device=device)
    return torch.distributions.MultivariateNormal(mean, cov)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_drift_reduces_to_the_fixed_sde(device):
    torch.manual_seed(0)
    sde = VPSDE()
    score = ScoreMLP(2, hidden=(16,)).double().to(device)
    drift = ScoreMLP(2, hidden=(16,), zero_last=True).double().to(device)
    flow = DiffFlow(sde, score, drift, num_steps=30)
    fixed = ScoreModel(sde, score)
    x = _gaussian(device).sample((64,))
    t = torch.rand(64, dtype=torch.float64, device=device)
    assert torch.equal(flow.forward_drift(x, t), fixed.forward_drift(x, t))
    torch.manual_seed(1)
    w_flow = flow.elbo(x)
    torch.manual_seed(1)
    w_fixed = path_log_weight(fixed, x, flow.times)
    assert torch.allclose(w_flow, w_fixed)  # same path KL, path by path
    torch.manual_seed(2)
    s_flow = flow.sample((8,))
    torch.manual_seed(2)
    s_fixed = euler_maruyama(fixed, (8,), times=flow.times, denoise=False)
    assert torch.allclose(s_flow, s_fixed)
    # a nonzero drift changes both: the test can fail
    with torch.no_grad():
        drift.net.net[-1].bias.fill_(0.5)
    torch.manual_seed(1)
    assert not torch.allclose(flow.elbo(x), w_fixed)


class _FirstHalf(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.inner = net

    def forward(self, x, t):
        return self.inner(x, t)[..., : x.shape[-1]]


def test_shared_network_with_zero_scale_is_the_fixed_sde():
    torch.manual_seed(0)
    sde = VPSDE()
    net = ScoreMLP(2, hidden=(16,), out_features=4).double()
    flow = DiffFlow(sde, net, "shared", num_steps=10)
    fixed = ScoreModel(sde, _FirstHalf(net), dim=2)
    x = _gaussian("cpu").sample((32,))
    torch.manual_seed(1)
    w = flow.elbo(x)
    torch.manual_seed(1)
    assert torch.allclose(w, path_log_weight(fixed, x, flow.times))
    flow.loss(x).backward()
    assert flow.drift_scale.grad is not None and flow.drift_scale.grad.abs() > 0
    with torch.no_grad():
        flow.drift_scale.fill_(1.0)
    t = torch.full((32,), 0.3, dtype=torch.float64)
    expected = sde.drift(x, t) + net(x, t)[..., 2:]
    assert torch.allclose(flow.forward_drift(x, t), expected)
    assert torch.allclose(flow.score(x, t), fixed.score(x, t))
    with pytest.raises(ValueError, match="shared network to return shape"):
        DiffFlow(sde, ScoreMLP(2, hidden=(8,)), "shared").loss(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="'shared'"):
        DiffFlow(sde, ScoreMLP(2, hidden=(8,)), "joint")


@pytest.mark.parametrize("kind", ["exact", "mlp"])
def test_path_elbo_converges_to_the_continuous_bound(kind):
    # With f_theta = 0, the Euler-Maruyama path KL of DiffFlow tends, as the steps shrink, to
    # the continuous-time bound of the score model with the same score (Girsanov):
    # E[log prior(x_T)] - int E[g^2 |s|^2 / 2 + div(g^2 s - f)] dt
    torch.manual_seed(0)
    sde = VPSDE()
    data = _gaussian("cpu")
    if kind == "exact":
        net = GaussianScore(sde, data.mean, data.covariance_matrix)
    else:
        net = ScoreMLP(2, hidden=(32, 32)).double()
    model = ScoreModel(sde, net, 2, "score")
    x = data.sample((300,))
    with torch.no_grad():
        cont = model.elbo(x, num_times=100, t_min=0.0)
        path = path_log_weight(model, x, time_grid(1000, "quadratic"))
    se = math.sqrt(float(cont.var() + path.var()) / len(x))
    # 5 standard errors plus the O(dt) discretization bias at 1000 steps (~0.1 nats,
    # measured as about halving per doubling of the steps)
    assert abs(float(path.mean() - cont.mean())) < 5 * se + 0.15
    if kind == "exact":  # with the exact score both are (nearly) tight
        assert (
            abs(float(cont.mean() - data.log_prob(x).mean()))
            < 5 * float(cont.std()) / math.sqrt(300) + 0.02
        )


def test_few_step_path_bound_is_looser_and_iw_tightens():
    torch.manual_seed(0)
    sde = VPSDE()
    data = _gaussian("cpu")
    flow = DiffFlow(
        sde,
        GaussianScore(sde, data.mean, data.covariance_matrix),
        None,
        2,
        30,
        parameterization="score",
    )
    x = data.sample((200,))
    with torch.no_grad():
        elbo = flow.elbo(x, num_particles=4)
        iw = flow.log_prob_iw(x, num_particles=64)
    # log mean exp >= mean log (Jensen); the estimates differ in draws, so compare the means
    # with 5 standard errors of the ELBO average
    assert float(iw.mean()) > float(elbo.mean()) - 5 * float(elbo.std()) / math.sqrt(200)
    # both bound the chain's own log p_B(x); the data's log density is their upper limit
    # up to the model misfit, which is small with the exact score
    assert float(iw.mean()) < float(data.log_prob(x).mean()) + 0.2


def test_gradients_reach_drift_and_score_and_training_lowers_the_loss():
    torch.manual_seed(0)
    sde = VPSDE()
    flow = DiffFlow(sde, ScoreMLP(2, hidden=(32,)), ScoreMLP(2, hidden=(32,), zero_last=True))
    x = _gaussian("cpu").sample((128,)).float()
    loss = flow.loss(x)
    loss.backward()
    for p in flow.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert flow.drift_net.net.net[-1].weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = flow.loss(x)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # the average of the last 5 single-batch losses against the first 5: the path KL of an
    # untrained 30-step chain is ~10 nats above the trained one (seen: 14 -> 4), far
    # beyond the batch noise (~0.3 nats)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 3.0


@pytest.mark.slow
def test_trained_diffflow_matches_gaussian_moments():
    torch.manual_seed(0)
    data = _gaussian("cpu")
    sde = VPSDE()
    flow = DiffFlow(sde, ScoreMLP(2, hidden=(64, 64), out_features=4), "shared")
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    iters = 1500
    for it in range(iters):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * (1 - 0.9 * it / iters)
        opt.zero_grad()
        flow.loss(data.sample((256,)).float()).backward()
        opt.step()
    with torch.no_grad():
        x = flow.sample((20000,), denoise=True).double()
    # The fit of a short training run dominates (Monte Carlo se ~0.01): the path KL is a
    # mass-covering fit and a 30-step chain trained this briefly keeps the covariance
    # 10-20% wide (seen: 1.12-1.17 for 1.0), so the tolerance is 0.25; a wrong sign or
    # scale anywhere in the chain is off by far more.
    assert torch.allclose(x.mean(0), data.mean, atol=0.15)
    assert torch.allclose(torch.cov(x.T), data.covariance_matrix, atol=0.25)


def test_bad_input():
    sde = VPSDE()
    with pytest.raises(ValueError, match="dimension 2"):
        DiffFlow(sde, ScoreMLP(2), ScoreMLP(3))
    with pytest.raises(ValueError, match="increasing grid"):
        DiffFlow(sde, ScoreMLP(2), grid=[0.0, 0.6, 0.5, 1.0])
    with pytest.raises(ValueError, match="num_steps"):
        DiffFlow(sde, ScoreMLP(2), num_steps=0)
    flow = DiffFlow(sde, ScoreMLP(2, hidden=(8,)), num_steps=4)
    with pytest.raises(ValueError, match=r"expected event shape \(2,\)"):
        flow.loss(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="num_particles"):
        flow.log_prob_iw(torch.zeros(3, 2), num_particles=0)
    with pytest.raises(ValueError, match="times"):
        path_log_weight(flow, torch.zeros(3, 2), [0.0, 0.5])
    assert flow.num_steps == 4 and flow.times[-1] == 1.0
