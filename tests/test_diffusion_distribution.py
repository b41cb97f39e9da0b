"""Diffusion models as Pyro distributions: pyro.sample, base of a flow, data model in SVI."""

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_relax.diffusion import (
    DDPM,
    VPSDE,
    DDPMSchedule,
    DiffFlow,
    DiffusionDistribution,
    GaussianScore,
    ScoreModel,
    ode_log_prob,
)
from pyro_relax.nn.score import ScoreMLP

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _exact(device="cpu"):
    sde = VPSDE()
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64, device=device)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64, device=device)
    model = ScoreModel(sde, GaussianScore(sde, mean, cov), 2, "score")
    return model, torch.distributions.MultivariateNormal(mean, cov)


@pytest.mark.parametrize("device", DEVICES)
def test_pyro_sample_and_log_prob(device):
    torch.manual_seed(0)
    model, data = _exact(device)
    d = DiffusionDistribution(model, steps=50)
    assert d.event_shape == (2,) and d.batch_shape == () and d.has_rsample
    x = pyro.sample("x", d, sample_shape=(4000,))
    assert x.shape == (4000, 2) and x.device.type == device and not x.requires_grad
    # 5 standard errors sqrt(C_ii / n) plus 0.02 for 50 Euler steps
    assert (
        (x.mean(0) - data.mean).abs() < 5 * (data.covariance_matrix.diagonal() / 4000).sqrt() + 0.02
    ).all()
    y = data.sample((3, 5))
    assert torch.allclose(d.log_prob(y), ode_log_prob(model, y))
    # the ODE log density is the Gaussian's up to the prior mismatch (< 0.05 nats here)
    assert torch.allclose(d.log_prob(y), data.log_prob(y), atol=0.05)
    with pytest.raises(ValueError, match=r"expected event shape \(2,\)"):
        d.log_prob(torch.zeros(3, 3, dtype=torch.float64, device=device))


def test_as_the_base_distribution_of_a_flow():
    torch.manual_seed(0)
    model, data = _exact()
    base = DiffusionDistribution(model, sampler="ode", steps=20)
    spline = T.Spline(2, count_bins=4).double()
    flow = dist.TransformedDistribution(base, [spline])
    y = flow.sample((6,))
    assert y.shape == (6, 2)
    lp = flow.log_prob(y)
    x = spline.inv(y)
    manual = base.log_prob(x) - spline.log_abs_det_jacobian(x, y).sum(-1)  # elementwise spline
    assert torch.allclose(lp, manual, atol=1e-6)
    assert flow.rsample((3,)).requires_grad  # through the spline and the ODE sampler


def test_as_a_data_model_in_svi():
    torch.manual_seed(0)
    pyro.clear_param_store()
    _, data = _exact()
    x = data.sample((128,)).float()
    net = ScoreMLP(2, hidden=(16,))
    model = ScoreModel(VPSDE(), net)

    def pyro_model(obs):
        pyro.module("score", model)
        with pyro.plate("data", obs.shape[0]):
            pyro.sample("x", DiffusionDistribution(model, log_prob="elbo"), obs=obs)

    def guide(obs):
        pass

    svi = SVI(pyro_model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    before = [p.detach().clone() for p in net.parameters()]
    losses = [svi.step(x) for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    # the plate expanded the distribution: one log density term per data point
    tr = pyro.poutine.trace(pyro_model).get_trace(x)
    tr.compute_log_prob()
    assert tr.nodes["x"]["log_prob"].shape == (128,)


def test_diffflow_and_ddpm_distributions():
    torch.manual_seed(0)
    flow = DiffFlow(
        VPSDE(), ScoreMLP(2, hidden=(8,)), ScoreMLP(2, hidden=(8,), zero_last=True), num_steps=5
    )
    d = DiffusionDistribution(flow, log_prob_kwargs={"method": "rk4", "steps": 10})
    assert d.sampler == "diffflow" and d.sample((3,)).shape == (3, 2)
    assert d.log_prob(torch.zeros(4, 2)).shape == (4,)  # ODE
    assert DiffusionDistribution(flow, log_prob="elbo").log_prob(torch.zeros(4, 2)).shape == (4,)
    ddpm = DDPM(ScoreMLP(2, hidden=(8,)), schedule=DDPMSchedule(10))
    d = DiffusionDistribution(ddpm, log_prob_kwargs={"num_terms": 3})
    assert d.log_prob_method == "elbo" and d.sample((2, 3)).shape == (2, 3, 2)
    assert d.log_prob(torch.zeros(5, 2)).shape == (5,)
    assert DiffusionDistribution(ddpm, sampler="ddim", steps=4).rsample((2,)).requires_grad
    assert "DDPM" in repr(d)


def test_bad_configuration():
    model, _ = _exact()
    with pytest.raises(ValueError, match="sampler"):
        DiffusionDistribution(model, sampler="ancestral")
    with pytest.raises(ValueError, match="steps >= 1"):
        DiffusionDistribution(model, steps=0)
    with pytest.raises(ValueError, match="log_prob"):
        DiffusionDistribution(model, log_prob="exact")
    ddpm = DDPM(ScoreMLP(2, hidden=(8,)), schedule=DDPMSchedule(10))
    with pytest.raises(ValueError, match="log_prob"):
        DiffusionDistribution(ddpm, log_prob="ode")
    with pytest.raises(TypeError, match="ScoreModel, DiffFlow or DDPM"):
        DiffusionDistribution(torch.nn.Linear(2, 2))
