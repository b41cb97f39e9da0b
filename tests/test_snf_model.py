"""Stochastic normalizing flows: unbiased weights, log Z, ESS, expectations, gradients."""

import math

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_relax.stochastic.annealing import LearnedSchedule, standard_normal_log_prob
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.langevin import MALABlock, OverdampedLangevin
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.snf import (
    StochasticNormalizingFlow,
    ess_from_log_weights,
    log_Z_from_log_weights,
    self_normalized_expectation,
)
from pyro_relax.stochastic.underdamped import UnderdampedLangevin

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOG_Z = 1.7  # the test target is a normalized Gaussian times exp(LOG_Z)
LOC, SCALE = 0.3, 1.2


def target_log_prob(x):
    """``log N(x; LOC, SCALE^2 I) + LOG_Z``: unnormalized, with ``Z = exp(LOG_Z)``."""
    z = (x - LOC) / SCALE
    d = x.shape[-1]
    return -0.5 * z.square().sum(-1) - d * (math.log(SCALE) + 0.5 * math.log(2 * math.pi)) + LOG_Z


def _layer(kind, dim, lam):
    anneal = dict(base=standard_normal_log_prob, lam=lam)
    if kind == "affine":
        return T.AffineTransform(torch.full((dim,), 0.2), torch.full((dim,), 1.3))
    if kind == "coupling":
        # Damp the random initialization (scale and shift up to ~exp(0.3)): a coupling with a
        # random large scale gives heavy-tailed weights, for which 5 estimated standard errors
        # are not a reliable bound at n = 20000.
        layer = T.affine_coupling(dim, hidden_dims=[8])
        with torch.no_grad():
            for p in layer.nn.layers[-1].parameters():
                p.mul_(0.3)
        return layer
    if kind == "ula":
        return OverdampedLangevin(target_log_prob, step_size=0.1, n_steps=2, **anneal)
    if kind == "mala":
        return MALABlock(target_log_prob, step_size=0.3, n_steps=2, **anneal)
    if kind == "underdamped":
        return UnderdampedLangevin(target_log_prob, step_size=0.3, n_steps=3, **anneal)
    if kind == "rwmh":
        return RandomWalkMH(target_log_prob, step_size=0.6, n_steps=2, **anneal)
    if kind == "hmc":
        return HMCBlock(target_log_prob, step_size=0.3, n_leapfrog=3, **anneal)
    raise AssertionError(kind)


BLOCK_KINDS = ["ula", "mala", "underdamped", "rwmh", "hmc"]
KINDS = ["affine", "coupling", *BLOCK_KINDS]


def _snf(kinds, dim=2, lams=None, base_scale=None):
    lams = lams or [0.5] * len(kinds)
    layers = [_layer(k, dim, lam) for k, lam in zip(kinds, lams, strict=True)]
    base = None
    if base_scale is not None:  # a base wider than the target keeps the weights light-tailed
        loc = torch.zeros(dim, dtype=torch.float64)
        base = dist.Normal(loc, torch.full_like(loc, base_scale)).to_event(1)
    return StochasticNormalizingFlow((dim,), layers, target_log_prob, base=base).double()


def _check_unbiased(log_w):
    """|log Z_hat - log Z| < 5 standard errors (delta method: se = sd(w) / (sqrt(n) mean w))."""
    est, se = log_Z_from_log_weights(log_w)
    assert abs(float(est) - LOG_Z) < 5 * float(se), (float(est), float(se))
    return est, se


@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=2, max_size=4).filter(
        lambda ks: any(k in BLOCK_KINDS for k in ks) and any(k not in BLOCK_KINDS for k in ks)
    ),
    lam=st.floats(0.2, 1.0),
    dim=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=12)
def test_weights_are_unbiased_for_mixed_flows(kinds, lam, dim, seed):
    if dim == 1 and "coupling" in kinds:
        kinds = ["affine" if k == "coupling" else k for k in kinds]
    torch.manual_seed(seed)
    snf = _snf(kinds, dim, [lam] * len(kinds), base_scale=1.6)
    with torch.no_grad():
        _, log_w = snf.sample_with_log_weights(20_000)
    _check_unbiased(log_w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_each_block_gives_unbiased_weights(kind, device):
    torch.manual_seed(11)
    snf = _snf(["affine", kind, "affine", kind], lams=[1.0, 0.4, 1.0, 1.0]).to(device)
    est, se = snf.log_Z_estimate(20_000)
    assert est.device.type == torch.device(device).type
    assert abs(float(est) - LOG_Z) < 5 * float(se)
    assert float(se) < 0.05  # the estimate is informative, not unbiased by being vague


@pytest.mark.slow
@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_each_block_gives_unbiased_weights_large(kind):
    torch.manual_seed(12)
    snf = _snf(["coupling", kind, "affine", kind], lams=[1.0, 0.3, 1.0, 0.8])
    with torch.no_grad():
        _, log_w = snf.sample_with_log_weights(400_000)
    _check_unbiased(log_w)


def test_backward_path_gives_unbiased_likelihood():
    # Base N(0, 1), one ULA step on N(LOC, SCALE^2): y = (1 - e/s^2) x + e LOC / s^2 + sqrt(2e) eta
    # is Gaussian, so p_model(y) is known. exp(log_prob bound) is unbiased for it:
    # mean over K backward paths within 5 standard errors (se from the K draws).
    torch.manual_seed(13)
    snf = _snf(["ula"], dim=1, lams=[1.0])
    block = snf.layers[0]
    x = torch.tensor([[-1.0], [0.0], [0.7], [2.0]], dtype=torch.float64)
    eps = float(block.positive("step_size", x))
    k = 1 - eps / SCALE**2
    mean, sd = eps * LOC / SCALE**2, math.sqrt(k**2 + 2 * eps)
    # n_steps=2: apply the linear map twice.
    mean, sd = k * mean + eps * LOC / SCALE**2, math.sqrt(k**2 * sd**2 + 2 * eps)
    exact = torch.distributions.Normal(mean, sd).log_prob(x[:, 0]).exp()
    reps = 40_000
    with torch.no_grad():
        bounds = snf.log_prob(x.expand(reps, 4, 1))  # (reps, 4)
    est = bounds.exp().mean(0)
    se = bounds.exp().std(0) / math.sqrt(reps)
    assert bool(((est - exact).abs() < 5 * se).all()), (est, exact, se)
    assert bool((bounds.mean(0) <= exact.log() + 1e-9).all())  # a lower bound on average


def test_metropolis_block_at_base_density_gives_exact_log_prob():
    # With the base density as the block's pi, V = log pi(x) - log pi(z) telescopes:
    # log q0(z) + V = log pi(x) exactly, for every backward draw.
    torch.manual_seed(14)
    block = HMCBlock(standard_normal_log_prob, step_size=0.3, n_leapfrog=3, n_steps=2).double()
    snf = StochasticNormalizingFlow((2,), [block], target_log_prob).double()
    x = torch.randn(50, 2, dtype=torch.float64)
    torch.testing.assert_close(snf.log_prob(x), standard_normal_log_prob(x))


def test_ess_log_z_and_expectation_on_exact_flow():
    # Flow = target exactly (affine map of the base): every log w equals log Z.
    aff = T.AffineTransform(torch.full((2,), LOC, dtype=torch.float64), SCALE)
    snf = StochasticNormalizingFlow((2,), [aff], target_log_prob).double()
    x, log_w = snf.sample_with_log_weights(500)
    torch.testing.assert_close(log_w, torch.full_like(log_w, LOG_Z))
    assert float(ess_from_log_weights(log_w)) == pytest.approx(500)
    assert float(snf.ess(100)) == pytest.approx(1.0)
    est, se = snf.log_Z_estimate(100)
    assert float(est) == pytest.approx(LOG_Z) and float(se) < 1e-6


def test_self_normalized_expectation_of_mixed_flow():
    torch.manual_seed(15)
    snf = _snf(["affine", "mala", "hmc"], lams=[1.0, 0.5, 1.0])
    x, log_w = snf.sample_with_log_weights(20_000)
    mean = snf.expectation(lambda t: t, 20_000)
    ess = float(ess_from_log_weights(log_w))
    # se of a self-normalized mean ~ sd / sqrt(ESS); 5 se.
    assert bool(((mean - LOC).abs() < 5 * SCALE / math.sqrt(ess)).all()), mean
    second = self_normalized_expectation((x.detach() - LOC).square(), log_w.detach())
    assert bool(((second - SCALE**2).abs() < 5 * math.sqrt(2) * SCALE**2 / math.sqrt(ess)).all())


def test_weight_statistics_by_hand():
    log_w = torch.log(torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64))
    w = log_w.exp()
    est, se = log_Z_from_log_weights(log_w)
    assert float(est) == pytest.approx(math.log(3.0))
    assert float(se) == pytest.approx(float(w.std() / (2 * 3.0)))
    assert float(ess_from_log_weights(log_w)) == pytest.approx(144 / 50)
    assert float(ess_from_log_weights(log_w, relative=True)) == pytest.approx(144 / 200)
    vals = torch.tensor([[1.0], [0.0], [0.0], [1.0]], dtype=torch.float64)
    assert float(self_normalized_expectation(vals, log_w)) == pytest.approx(7 / 12)


def _without_grad(module):
    params = module.named_parameters()
    return [n for n, p in params if p.grad is None or not bool(p.grad.ne(0).any())]


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_reach_flow_and_block_parameters(device):
    torch.manual_seed(16)
    sched = LearnedSchedule(2, init=[0.5, 1.0])
    layers = [
        T.affine_coupling(2, hidden_dims=[8]),
        MALABlock(
            target_log_prob, standard_normal_log_prob, lam=sched.entry(0), learn_step_size=True
        ),
        T.affine_coupling(2, hidden_dims=[8]),
        UnderdampedLangevin(
            target_log_prob,
            standard_normal_log_prob,
            lam=0.5,
            learn_lam=True,
            learn_step_size=True,
            learn_friction=True,
            learn_mass=True,
            n_steps=2,
        ),
        HMCBlock(
            target_log_prob,
            standard_normal_log_prob,
            lam=sched.entry(1),
            learn_step_size=True,
            learn_mass=True,
        ),
        RandomWalkMH(target_log_prob, step_size=0.3, learn_step_size=True),
        OverdampedLangevin(target_log_prob, learn_step_size=True),
    ]
    snf = StochasticNormalizingFlow((2,), layers, target_log_prob).to(device)
    # reverse KL through the sampling path
    (-snf.sample_with_log_weights(256)[1].mean()).backward()
    missing = [
        n for n, p in snf.named_parameters() if p.grad is None or not bool(p.grad.ne(0).any())
    ]
    assert not missing, missing
    # forward KL through the backward path
    snf.zero_grad(set_to_none=True)
    (-snf.log_prob(torch.randn(256, 2, device=device) * SCALE + LOC).mean()).backward()
    missing = [
        n for n, p in snf.named_parameters() if p.grad is None or not bool(p.grad.ne(0).any())
    ]
    # the first coupling layer sits before every block on the data side: still reached
    assert not missing, missing


def _nan_right(x):
    return target_log_prob(x) + torch.sqrt(1.0 - x[..., 0]) * 0.0


def test_nan_in_unadjusted_block_names_layer_and_step():
    layers = [T.AffineTransform(torch.zeros(2), 3.0), OverdampedLangevin(_nan_right, n_steps=2)]
    snf = StochasticNormalizingFlow((2,), layers, target_log_prob)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"OverdampedLangevin \(layer 1\): step 1 of 2"):
        snf.sample_with_log_weights(100)


def test_nan_target_in_weights_raises():
    snf = StochasticNormalizingFlow(
        (2,), [T.AffineTransform(0.0, 1.0)], lambda x: x[..., 0] * math.nan
    )
    with pytest.raises(ValueError, match="finite log weights"):
        snf.sample_with_log_weights(4)


def test_bad_input_raises():
    snf = _snf(["affine", "mala"])
    for bad in [0, -3, (2, 0), 1.5, True]:
        with pytest.raises(ValueError, match="positive int"):
            snf.sample_with_log_weights(bad)
    with pytest.raises(TypeError, match="callable target"):
        StochasticNormalizingFlow((2,), [], 3.0)
    with pytest.raises(ValueError, match="NaN"):
        log_Z_from_log_weights(torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match="shape"):
        ess_from_log_weights(torch.tensor(0.0))
    with pytest.raises(ValueError, match="values of shape"):
        self_normalized_expectation(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="callable f"):
        snf.expectation(3, 10)


def test_sample_shapes():
    snf = _snf(["affine", "hmc", "ula"])
    x, log_w = snf.sample_with_log_weights((3, 4))
    assert x.shape == (3, 4, 2) and log_w.shape == (3, 4)


@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_no_host_sync_inside_block_steps(kind, monkeypatch):
    # Inside the steps nothing converts a tensor to a Python number or branches on one.
    block = _layer(kind, 2, 0.5)
    z = torch.randn(8, 2)
    calls = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name: calls.append(_n) or 1)
    from pyro_relax import validation

    with validation(False):
        block.decode(z)
        block.encode(z)
    assert not calls, calls


def test_unbiasedness_check_detects_missing_path_weights():
    # Negative control: the same flow with the blocks' Delta S dropped is biased, and the
    # 5-standard-error check must see it.
    class NoWeightLangevin(OverdampedLangevin):
        def _step(self, state):
            new, delta, acc = super()._step(state)
            return new, delta * 0.0, acc

    torch.manual_seed(17)
    layers = [
        T.AffineTransform(torch.zeros(2), 1.0),
        NoWeightLangevin(
            target_log_prob, standard_normal_log_prob, lam=0.5, step_size=0.2, n_steps=3
        ),
    ]
    snf = StochasticNormalizingFlow((2,), layers, target_log_prob).double()
    est, se = snf.log_Z_estimate(20_000)
    assert abs(float(est) - LOG_Z) > 5 * float(se)


@pytest.mark.parametrize(
    "bad", [lambda x: target_log_prob(x).sum(), lambda x: target_log_prob(x)[..., None]]
)
def test_target_with_wrong_output_shape_is_refused(bad):
    # issue 10, item 6: a summed (scalar) target used to broadcast into wrong log weights
    snf = StochasticNormalizingFlow((2,), [T.AffineTransform(0.0, 1.0)], bad)
    with pytest.raises(ValueError, match=r"StochasticNormalizingFlow: .*batch shape \(5,\)"):
        snf.sample_with_log_weights(5)
    with pytest.raises(ValueError, match=r"batch shape \(2, 3\)"):
        snf.sample_with_log_weights((2, 3))


# ---- issue 11: blocks return their infos; the flow does not touch the layers ---------------


def test_flow_does_not_rename_or_mutate_its_blocks():
    block = MALABlock(target_log_prob, step_size=0.3)
    before = dict(block.__dict__)
    snf = StochasticNormalizingFlow((2,), [T.AffineTransform(0.0, 1.0), block], target_log_prob)
    assert snf.block_labels == ["MALABlock (layer 1)"]
    assert not hasattr(block, "name") and not hasattr(block, "last_acceptance")
    snf.sample_with_log_weights(16)
    assert block.__dict__.keys() == before.keys()
    # the same block in a second flow gets that flow's label, the first is unchanged
    other = StochasticNormalizingFlow((2,), [block], target_log_prob)
    assert other.block_labels == ["MALABlock (layer 0)"]
    assert snf.block_labels == ["MALABlock (layer 1)"]


def test_sample_with_trace_returns_one_info_per_block():
    torch.manual_seed(18)
    snf = _snf(["affine", "mala", "ula", "hmc"])
    x, log_w, trace = snf.sample_with_trace(64)
    labels = [label for _, label, _ in trace.entries]
    assert labels == ["MALABlock (layer 1)", "OverdampedLangevin (layer 2)", "HMCBlock (layer 3)"]
    infos = [info for _, _, info in trace.entries]
    assert infos[1].acceptance_rate is None  # unadjusted
    for info in (infos[0], infos[2]):
        assert 0.0 < float(info.acceptance_rate) <= 1.0
        assert 0.0 < float(info.acceptance_probability) <= 1.0
        assert info.acceptance_rate.dtype == x.dtype
    assert all(int(info.bad_step) == 0 for info in infos)


def test_decode_with_info_reports_the_first_bad_step_without_validation():
    from pyro_relax import validation

    block = OverdampedLangevin(_nan_right, n_steps=3, step_size=0.01)
    x = torch.tensor([[0.0, 0.0], [1.5, 0.0]])
    with validation(False):
        _, _, info = block.decode_with_info(x)
    assert int(info.bad_step) == 1
    with pytest.raises(ValueError, match=r"OverdampedLangevin: step 1 of 3 produced NaN"):
        block.raise_if_nonfinite(info)
    with pytest.raises(ValueError, match=r"my label: step 1 of 3"):
        block.raise_if_nonfinite(info, "my label")
    block.raise_if_nonfinite(None)  # no info: nothing to check
