"""Regression tests (issue 10, item 4): NaN from a network is a clear error naming the step."""

import pytest
import torch
from torch import nn

from pyro_relax import validation
from pyro_relax.diffusion import (
    DDPM,
    VPSDE,
    DDPMSchedule,
    DiffFlow,
    GaussianScore,
    ScoreModel,
    ddim,
    ddpm_ancestral,
    euler_maruyama,
    ode_log_prob,
    path_log_weight,
    predictor_corrector,
    probability_flow,
)
from pyro_relax.diffusion.guard import StepGuard


class NaNBelow(nn.Module):
    """Returns zeros for times above ``t_bad`` and NaN at or below it."""

    def __init__(self, dim: int = 2, t_bad: float = 0.5, value: float = float("nan")) -> None:
        super().__init__()
        self.dim, self.t_bad, self.value = dim, t_bad, value
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[:-1]).unsqueeze(-1)
        bad = torch.full_like(x, self.value)
        return torch.where(t > self.t_bad, x * self.anchor, bad)


def _model(parameterization: str = "noise", value: float = float("nan")) -> ScoreModel:
    return ScoreModel(VPSDE(), NaNBelow(value=value), 2, parameterization)


def test_euler_maruyama_names_the_first_bad_step():
    # grid t_k = k / 10 (t_min = 0): steps run t = 1.0, 0.9, ...; the first t <= 0.5 is step 6
    with pytest.raises(FloatingPointError, match=r"euler_maruyama: the score .* step 6 \(t=0\.5\)"):
        euler_maruyama(_model("score"), (4,), steps=10, t_min=0.0)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_predictor_corrector_and_probability_flow_raise(value):
    with pytest.raises(FloatingPointError, match="predictor_corrector: the score"):
        predictor_corrector(_model(value=value), (3,), steps=8)
    with pytest.raises(FloatingPointError, match="probability_flow: the score"):
        probability_flow(_model(value=value), (3,), steps=8)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_ode_log_prob_raises_for_fixed_and_adaptive_solvers(method):
    # the adaptive solver gives up on NaN ("underflow in dt"): still our error, naming the step
    steps = 8 if method == "rk4" else None
    with pytest.raises(FloatingPointError, match=r"ode_log_prob: the score .* step \d+"):
        ode_log_prob(_model(), torch.zeros(3, 2), method=method, steps=steps)


def test_score_model_loss_and_elbo_raise():
    model = _model()
    with pytest.raises(FloatingPointError, match="ScoreModel.loss: the loss is NaN"):
        model.loss(torch.zeros(64, 2))
    with pytest.raises(FloatingPointError, match="ScoreModel.elbo: the bound is NaN"):
        model.elbo(torch.zeros(64, 2), num_times=4)


def test_score_at_time_zero_is_a_value_error_for_the_noise_parameterization():
    model = _model()
    with pytest.raises(ValueError, match=r"ScoreModel.score: expected a time > 0"):
        model.score(torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="expected a time > 0"):
        ScoreModel(VPSDE(), NaNBelow(), 2, "noise", t_min=0.0)
    # with the score parameterization, t = 0 is inside the documented range and finite
    sde = VPSDE()
    exact = ScoreModel(sde, GaussianScore(sde, torch.zeros(2), torch.eye(2)), 2, "score")
    assert torch.isfinite(exact.score(torch.zeros(3, 2), 0.0)).all()


def test_ddpm_samplers_and_objectives_raise():
    ddpm = DDPM(NaNBelow(t_bad=0.5), 2, DDPMSchedule(20))
    # ancestral on all 20 steps: t = i / 20, first i / 20 <= 0.5 is i = 10, step 11
    with pytest.raises(FloatingPointError, match=r"ddpm_ancestral: the noise .* step 11 "):
        ddpm_ancestral(ddpm, (3,))
    with pytest.raises(FloatingPointError, match="ddim: the noise prediction"):
        ddim(ddpm, (3,), steps=5)
    with pytest.raises(FloatingPointError, match="DDPM.loss: the loss"):
        ddpm.loss(torch.zeros(200, 2))
    with pytest.raises(FloatingPointError, match="DDPM.elbo: the bound"):
        ddpm.elbo(torch.zeros(3, 2))


def test_diffflow_sampler_elbo_and_loss_raise():
    flow = DiffFlow(VPSDE(), NaNBelow(), None, 2, num_steps=6, grid="uniform")
    with pytest.raises(FloatingPointError, match="DiffFlow.sample: the score"):
        flow.sample((3,))
    with pytest.raises(FloatingPointError, match="DiffFlow.elbo: the score or drift"):
        flow.elbo(torch.zeros(3, 2))
    with pytest.raises(FloatingPointError, match="DiffFlow.loss: the score or drift"):
        flow.loss(torch.zeros(3, 2))
    pattern = r"path_log_weight: the score or drift .* at step 1 \(t=0.25\)"
    with pytest.raises(FloatingPointError, match=pattern):
        path_log_weight(flow, torch.zeros(3, 2), [0.0, 0.25, 1.0])


def test_guard_syncs_once_and_is_off_without_validation():
    guard = StepGuard("f")
    for k in range(5):
        guard.watch(torch.ones(2), k + 1, 0.1 * k, "the score")
    guard.check()  # all finite: no error
    with validation(False):
        quiet = StepGuard("f")
        quiet.watch(torch.tensor(float("nan")), 1, 0.0, "the score")
        quiet.check()
    # without validation the samplers return what they computed (the documented opt-out)
    with validation(False):
        out = euler_maruyama(_model("score"), (2,), steps=4, t_min=0.0)
    assert torch.isnan(out).all()


def test_finite_networks_still_sample():
    sde = VPSDE()
    exact = ScoreModel(sde, GaussianScore(sde, torch.zeros(2), torch.eye(2)), 2, "score")
    for sampler in (euler_maruyama, predictor_corrector, probability_flow):
        out = sampler(exact, (5,), steps=10)
        assert out.shape == (5, 2) and torch.isfinite(out).all()
