"""Fuzz suite of the diffusion package: every sampler, model, SDE and likelihood.

Each call either returns a finite, correctly shaped result, or raises a
ValueError/TypeError/FloatingPointError whose message names the entry point;
a raw RuntimeError or a silent NaN fails. Default run: few examples per test;
``RELAX_SLOW=1`` runs many (see :mod:`pyro_relax.testing.fuzz`).
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from pyro_relax.diffusion import (
    DDPM,
    VESDE,
    VPSDE,
    DDPMSchedule,
    DiffFlow,
    DiffusionDistribution,
    GaussianScore,
    ScoreModel,
    SubVPSDE,
    ddim,
    ddpm_ancestral,
    euler_maruyama,
    ode_log_prob,
    path_log_weight,
    predictor_corrector,
    probability_flow,
)
from pyro_relax.nn.score import ScoreMLP
from pyro_relax.testing.fuzz import assert_clean_failure, fuzz_settings
from pyro_relax.testing.strategies import bad_inputs

ERRORS = (ValueError, TypeError, FloatingPointError)
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": lambda: VESDE(sigma_max=5.0)}


class BadNet(nn.Module):
    """A network returning ``value`` (NaN, inf) for times at or below ``t_bad``, else ``-x``."""

    def __init__(self, value: float, t_bad: float, out: int = 2) -> None:
        super().__init__()
        self.dim, self.value, self.t_bad, self.out = 2, value, t_bad, out
        self.anchor = nn.Parameter(torch.ones(()))

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[:-1]).unsqueeze(-1)
        good = -x.repeat_interleave(self.out // 2, -1) * self.anchor
        return torch.where(t > self.t_bad, good, torch.full_like(good, self.value))


def _score_model(sde="vp", parameterization="noise"):
    torch.manual_seed(0)
    return ScoreModel(SDES[sde](), ScoreMLP(2, hidden=(8,)), 2, parameterization)


def _exact(sde="vp"):
    s = SDES[sde]()
    return ScoreModel(s, GaussianScore(s, torch.zeros(2), torch.eye(2)), 2, "score")


def _diffflow():
    torch.manual_seed(0)
    return DiffFlow(VPSDE(), ScoreMLP(2, hidden=(8,)), ScoreMLP(2, hidden=(8,)), num_steps=4)


def _ddpm():
    torch.manual_seed(0)
    return DDPM(ScoreMLP(2, hidden=(8,)), schedule=DDPMSchedule(10))


def _batch(x):
    return tuple(x.shape[:-1])


# ---- bad inputs to every method that takes data ------------------------------------------------

METHODS = {
    "ScoreModel.score": lambda x: _score_model().score(x, 0.5),
    "ScoreModel.reverse_drift": lambda x: _score_model("ve").reverse_drift(x, 0.3),
    "ScoreModel.ode_drift": lambda x: _exact("subvp").ode_drift(x, 0.7),
    "ScoreModel.loss": lambda x: _score_model().loss(x),
    "ScoreModel.elbo": lambda x: _exact().elbo(x, num_times=2),
    "ode_log_prob": lambda x: ode_log_prob(_exact(), x, method="rk4", steps=4),
    "DDPM.loss": lambda x: _ddpm().loss(x),
    "DDPM.elbo": lambda x: _ddpm().elbo(x, num_terms=3),
    "DDPM.q_sample": lambda x: _ddpm().q_sample(x, torch.tensor(3)),
    "DiffFlow.loss": lambda x: _diffflow().loss(x),
    "DiffFlow.elbo": lambda x: _diffflow().elbo(x, num_particles=2),
    "path_log_weight": lambda x: path_log_weight(_exact(), x, [0.0, 0.5, 1.0]),
    "VPSDE.marginal": lambda x: VPSDE().marginal(x, 0.5)[0],
    "DiffusionDistribution.log_prob": lambda x: DiffusionDistribution(
        _exact(), log_prob_kwargs={"method": "euler", "steps": 3}
    ).log_prob(x),
}
SCALAR = {"ScoreModel.loss", "DDPM.loss", "DiffFlow.loss"}
SAME_SHAPE = {"ScoreModel.score", "ScoreModel.reverse_drift", "ScoreModel.ode_drift"}
SAME_SHAPE |= {"DDPM.q_sample", "VPSDE.marginal"}


@pytest.mark.parametrize("entry", sorted(METHODS))
@fuzz_settings(max_examples=8)
@given(case=bad_inputs((2,)))
def test_methods_refuse_bad_data_cleanly(entry, case):
    kind, x = case
    # the distribution delegates to ode_log_prob, whose overflow errors name it
    names = (entry.split(".")[0], "ode_log_prob")
    out = assert_clean_failure(lambda: METHODS[entry](x), names, errors=ERRORS)
    if isinstance(out, Exception):
        assert kind not in ("zeros",), f"{entry} refused good data ({kind}): {out}"
        return
    refused = {"nan", "inf", "neg_inf", "int", "bool"}
    if entry != "VPSDE.marginal":  # an SDE acts on any event size
        refused.add("wrong_event_shape")
    assert kind not in refused, f"{entry} accepted a {kind} input"
    want = () if entry in SCALAR else tuple(x.shape) if entry in SAME_SHAPE else _batch(x)
    assert tuple(out.shape) == want


# ---- every sampler: bad step counts, sample shapes, starts, times ------------------------------

SAMPLERS = {
    "euler_maruyama": lambda m, **kw: euler_maruyama(m, **kw),
    "predictor_corrector": lambda m, **kw: predictor_corrector(m, **kw),
    "probability_flow": lambda m, **kw: probability_flow(m, **kw),
}
DDPM_SAMPLERS = {"ddpm_ancestral": ddpm_ancestral, "ddim": ddim}
STEPS = st.one_of(
    st.integers(-2, 12), st.none(), st.booleans(), st.floats(-1, 5), st.just("10")
)
SHAPES = st.one_of(
    st.lists(st.integers(-1, 3), max_size=2).map(tuple), st.just("3"), st.just((1.5,))
)


@pytest.mark.parametrize("entry", sorted(SAMPLERS))
@fuzz_settings(max_examples=10)
@given(
    sde=st.sampled_from(sorted(SDES)),
    steps=STEPS,
    shape=SHAPES,
    t_min=st.one_of(st.none(), st.sampled_from([0.0, -0.1, 0.5, 1.0, math.nan, 1e-3])),
)
def test_sde_samplers_with_bad_options(entry, sde, steps, shape, t_min):
    model = _score_model(sde)
    kw = {"sample_shape": shape, "steps": steps, "t_min": t_min}
    out = assert_clean_failure(lambda: SAMPLERS[entry](model, **kw), entry, errors=ERRORS)
    if not isinstance(out, Exception):
        assert tuple(out.shape) == tuple(shape) + (2,)


@pytest.mark.parametrize("entry", sorted(DDPM_SAMPLERS))
@fuzz_settings(max_examples=10)
@given(steps=STEPS, shape=SHAPES, eta=st.sampled_from([0.0, 0.5, 1.0, -1.0, math.inf]))
def test_ddpm_samplers_with_bad_options(entry, steps, shape, eta):
    kw = {"sample_shape": shape, "steps": steps} | ({"eta": eta} if entry == "ddim" else {})
    out = assert_clean_failure(lambda: DDPM_SAMPLERS[entry](_ddpm(), **kw), entry, errors=ERRORS)
    if not isinstance(out, Exception):
        assert tuple(out.shape) == tuple(shape) + (2,)


@pytest.mark.parametrize("entry", sorted(SAMPLERS) + sorted(DDPM_SAMPLERS))
@fuzz_settings(max_examples=8)
@given(case=bad_inputs((2,)))
def test_samplers_refuse_bad_starts(entry, case):
    kind, x_T = case
    if entry in DDPM_SAMPLERS:
        call = lambda: DDPM_SAMPLERS[entry](_ddpm(), steps=3, x_T=x_T)  # noqa: E731
    else:
        call = lambda: SAMPLERS[entry](_exact(), steps=3, x_T=x_T)  # noqa: E731
    out = assert_clean_failure(call, entry, errors=ERRORS)
    if not isinstance(out, Exception):
        assert out.shape == x_T.shape


@fuzz_settings(max_examples=10)
@given(
    times=st.lists(st.one_of(st.floats(-0.5, 1.5), st.just(math.nan)), min_size=0, max_size=5)
)
def test_euler_maruyama_and_path_weight_with_bad_time_grids(times):
    x = torch.zeros(3, 2)
    out = assert_clean_failure(
        lambda: euler_maruyama(_exact(), (3,), times=times), "euler_maruyama", errors=ERRORS
    )
    if not isinstance(out, Exception):
        assert out.shape == (3, 2)
    out = assert_clean_failure(
        lambda: path_log_weight(_exact(), x, times), "path_log_weight", errors=ERRORS
    )
    if not isinstance(out, Exception):
        assert out.shape == (3,)


# ---- networks returning NaN or inf: a FloatingPointError naming the entry point ----------------


@fuzz_settings(max_examples=12)
@given(
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
    t_bad=st.floats(0.15, 0.95),  # above the first grid time (about 0.1): some step is bad
    parameterization=st.sampled_from(["noise", "score"]),
    entry=st.sampled_from(
        ["euler_maruyama", "predictor_corrector", "probability_flow", "ode_log_prob"]
    ),
)
def test_bad_score_networks_raise_naming_the_step(value, t_bad, parameterization, entry):
    model = ScoreModel(VPSDE(), BadNet(value, t_bad), 2, parameterization)
    calls = {
        "euler_maruyama": lambda: euler_maruyama(model, (3,), steps=10),
        "predictor_corrector": lambda: predictor_corrector(model, (3,), steps=10),
        "probability_flow": lambda: probability_flow(model, (3,), steps=10),
        "ode_log_prob": lambda: ode_log_prob(model, torch.zeros(3, 2), method="rk4", steps=10),
    }
    with pytest.raises(FloatingPointError, match=rf"{entry}: .* at step \d+ \(t="):
        calls[entry]()


@fuzz_settings(max_examples=10)
@given(
    value=st.sampled_from([math.nan, math.inf]),
    t_bad=st.floats(0.15, 0.95),  # the 8-step uniform grid's first time is 0.125
    entry=st.sampled_from(["DiffFlow.sample", "DiffFlow.elbo", "DiffFlow.loss", "ddim", "DDPM"]),
)
def test_bad_diffflow_and_ddpm_networks_raise(value, t_bad, entry):
    if entry.startswith("DiffFlow"):
        flow = DiffFlow(VPSDE(), BadNet(value, t_bad, 4), "shared", 2, num_steps=8, grid="uniform")
        with torch.no_grad():
            flow.drift_scale.fill_(1.0)
        call = {
            "DiffFlow.sample": lambda: flow.sample((3,)),
            "DiffFlow.elbo": lambda: flow.elbo(torch.zeros(3, 2)),
            "DiffFlow.loss": lambda: flow.loss(torch.zeros(3, 2)),
        }[entry]
    else:
        ddpm = DDPM(BadNet(value, t_bad), 2, DDPMSchedule(20))
        call = (lambda: ddim(ddpm, (3,), steps=20)) if entry == "ddim" else (
            lambda: ddpm.elbo(torch.zeros(3, 2))
        )
    with pytest.raises(FloatingPointError, match=entry):
        call()


# ---- times out of range, SDE pieces, constructors ----------------------------------------------


@fuzz_settings(max_examples=15)
@given(
    t=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.just(0.0),
        st.just("0.5"),
        st.just(None),
        st.lists(st.floats(-1, 2), min_size=1, max_size=4).map(torch.tensor),
    ),
    parameterization=st.sampled_from(["noise", "score"]),
    sde=st.sampled_from(sorted(SDES)),
)
def test_score_times_out_of_range(t, parameterization, sde):
    model = _score_model(sde, parameterization)
    x = torch.zeros(4, 2)
    out = assert_clean_failure(lambda: model.score(x, t), "ScoreModel.score", errors=ERRORS)
    if not isinstance(out, Exception):
        assert out.shape == (4, 2)
    out = assert_clean_failure(lambda: SDES[sde]().marginal(x, t), "SDE", errors=ERRORS)
    if not isinstance(out, Exception):
        assert out[0].shape == (4, 2)


@fuzz_settings(max_examples=15)
@given(
    dim=st.one_of(st.integers(-1, 3), st.none(), st.just(2.0)),
    parameterization=st.sampled_from(["noise", "score", "eps", 3]),
    t_min=st.one_of(st.none(), st.floats(-1, 2), st.just(math.nan), st.just("0.1")),
    steps=st.one_of(st.integers(-1, 4), st.just(True)),
)
def test_constructors_refuse_bad_options(dim, parameterization, t_min, steps):
    net = ScoreMLP(2, hidden=(4,))
    names = ("ScoreModel", "ScoreProcess")
    assert_clean_failure(
        lambda: ScoreModel(VPSDE(), net, dim, parameterization, t_min), names, finite=False
    )
    assert_clean_failure(
        lambda: DiffFlow(VPSDE(), net, None, dim, num_steps=steps, t_min=t_min),
        ("DiffFlow", "time_grid"),
        finite=False,
    )
    assert_clean_failure(lambda: DDPMSchedule(steps), "DDPMSchedule", finite=False)


def test_float64_models_and_empty_batches():
    model = _exact().double()
    x = torch.zeros(0, 2, dtype=torch.float64)
    assert euler_maruyama(model, (0,), steps=3).shape == (0, 2)
    assert ode_log_prob(model, x, method="euler", steps=2).shape == (0,)
    assert model.score(x, 0.5).shape == (0, 2)
    with pytest.raises(TypeError, match="ScoreModel.score: expected torch.float64"):
        model.score(torch.zeros(3, 2), 0.5)
    out = euler_maruyama(model, (4,), steps=5)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
