"""Annealing in a flow's base space: PulledBackDensity, annealed HMC levels, the pilot tuner,
and ``AutoSNFGuide.from_flow_guide`` (annealed importance sampling from a flow guide)."""

import pyro.distributions.transforms as T
import pytest
import torch
from test_guides import DEVICES, Problem, _check_bound

from pyro_relax.infer.guides.flow import AutoFlowGuide, LocScaleTransform
from pyro_relax.infer.guides.snf import AutoSNFGuide
from pyro_relax.stochastic import StochasticNormalizingFlow, ess_from_log_weights
from pyro_relax.stochastic.annealing import standard_normal_log_prob
from pyro_relax.stochastic.pullback import (
    PulledBackDensity,
    annealed_hmc_levels,
    tune_step_sizes,
)
from pyro_relax.surjections.abs import AbsSurjection


def _gauss(loc, scale):
    """log N(x; loc, diag(scale^2)), normalized (Z = 1)."""
    scale = torch.as_tensor(scale)

    def log_prob(x):
        s = scale.to(x)
        return standard_normal_log_prob((x - loc) / s) - s.log().expand(x.shape[-1:]).sum()

    return log_prob


@pytest.mark.parametrize("device", DEVICES)
def test_pulled_back_density_is_the_change_of_variables(device):
    torch.manual_seed(0)
    loc = torch.tensor([1.0, -2.0, 0.5], device=device, dtype=torch.float64)
    scale = torch.tensor([0.5, 2.0, 3.0], device=device, dtype=torch.float64)
    target = _gauss(torch.zeros_like(loc), torch.ones_like(loc) * 1.5)
    d = PulledBackDensity([T.AffineTransform(loc, scale, event_dim=1)], target)
    u = torch.randn(4, 5, 3, device=device, dtype=torch.float64)
    want = target(loc + scale * u) + scale.log().sum()
    got = d(u)
    assert got.shape == (4, 5) and got.dtype == torch.float64 and got.device.type == device
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(d.log_prob(u), want, atol=1e-12)


def test_pulled_back_density_rejects_bad_layers():
    with pytest.raises(ValueError, match="exact bijective"):
        PulledBackDensity([AbsSurjection()], standard_normal_log_prob)
    with pytest.raises(TypeError, match="list of layers"):
        PulledBackDensity(T.ExpTransform(), standard_normal_log_prob)
    with pytest.raises(TypeError, match="callable target"):
        PulledBackDensity([], 3.0)


def test_annealed_levels_schedule_and_errors():
    blocks = annealed_hmc_levels(_gauss(0.0, 1.0), levels=5, n_leapfrog=2)
    lams = [float(b.density.lam()) for b in blocks]
    assert lams == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    made = annealed_hmc_levels(_gauss(0.0, 1.0), 4, schedule="geometric")
    geo = [float(b.density.lam()) for b in made]
    assert geo[0] < 0.1 and geo[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(geo, geo[1:], strict=False))
    with pytest.raises(ValueError, match="levels >= 1"):
        annealed_hmc_levels(_gauss(0.0, 1.0), levels=0)
    with pytest.raises(ValueError, match="schedule"):
        annealed_hmc_levels(_gauss(0.0, 1.0), schedule="cosine")


def test_pilot_moves_the_acceptance_toward_the_goal():
    """A step size 20x too large (acceptance near 0) is tuned to an acceptance near 0.7.

    The tolerance 0.2 is wide against the acceptance's Monte Carlo error
    (sd of a mean of 512 indicators <= 0.5 / sqrt(512) = 0.022) and narrow
    against the untuned rate (below 0.1).
    """
    torch.manual_seed(0)
    target = _gauss(torch.zeros(4), torch.full((4,), 0.3))
    blocks = annealed_hmc_levels(target, levels=3, step_size=6.0)
    snf = StochasticNormalizingFlow((4,), blocks, target)
    before = [float(i.acceptance_rate) for _, _, i in snf.sample_with_trace(512)[2].entries]
    assert max(before) < 0.1, before
    steps = tune_step_sizes(snf, rounds=30, batch_size=256)
    assert len(steps) == 3 and all(s < 6.0 for s in steps)
    after = [float(i.acceptance_rate) for _, _, i in snf.sample_with_trace(512)[2].entries]
    assert all(abs(a - 0.7) < 0.2 for a in after), after
    with pytest.raises(ValueError, match="target_accept"):
        tune_step_sizes(snf, target_accept=1.5)
    with pytest.raises(ValueError, match="rounds"):
        tune_step_sizes(snf, rounds=0)
    with pytest.raises(TypeError, match="blocks="):
        tune_step_sizes(lambda n: None)


def test_annealing_from_a_poor_flow_estimates_Z_and_raises_the_ess():
    """AIS from a mis-scaled affine flow: E[w] = Z (here Z = 1) and a much larger ESS.

    Check of log Z: within 5 delta-method standard errors of 0. The ESS claim is
    a large effect (the flow alone has a few percent ESS, 20 levels of HMC bring
    it above 30%), far beyond the ESS's sampling noise at n = 4000.
    """
    torch.manual_seed(3)
    dim = 4
    target = _gauss(torch.full((dim,), 2.0), torch.full((dim,), 0.4))
    flow = [T.AffineTransform(torch.full((dim,), 1.5), torch.full((dim,), 1.0), event_dim=1)]
    plain = StochasticNormalizingFlow((dim,), flow, target)
    with torch.no_grad():
        _, lw_plain = plain.sample_with_log_weights(4000)
    blocks = annealed_hmc_levels(PulledBackDensity(flow, target), levels=20, n_leapfrog=3)
    ais = StochasticNormalizingFlow((dim,), [*blocks, *flow], target)
    tune_step_sizes(ais, rounds=10, batch_size=256)
    with torch.no_grad():
        x, lw = ais.sample_with_log_weights(4000)
    log_z, se = ais.log_Z_estimate(4000)
    assert abs(float(log_z)) < 5 * float(se) + 1e-3, (float(log_z), float(se))
    ess_plain = float(ess_from_log_weights(lw_plain, relative=True))
    ess_ais = float(ess_from_log_weights(lw, relative=True))
    assert ess_plain < 0.1 and ess_ais > 0.3, (ess_plain, ess_ais)


@pytest.fixture(scope="module")
def problem():
    return Problem()


def test_from_flow_guide_is_an_exact_sampler_sharing_the_flow(problem):
    """Untrained flow guide near the posterior, wrapped in annealed HMC: log Z within 5 se."""
    torch.manual_seed(1)
    flow = AutoFlowGuide(
        problem.model, num_layers=1, hidden=8, kind="affine",
        init_loc_fn=problem.init_at_posterior(), init_scale=0.25,
    )
    flow(problem.y, problem.w)
    ais = AutoSNFGuide.from_flow_guide(flow, levels=4, tune_rounds=3, tune_batch=64)
    shared = {id(p) for p in flow.parameters()}
    assert shared <= {id(p) for p in ais.parameters()}
    assert len(ais.blocks) == 4 and ais.snf.layers[0] is ais.blocks[0]
    samples, log_w = ais.importance_weights(50, problem.y, problem.w)
    assert samples["mu"].shape == (50, 2) and bool((samples["tau"] > 0).all())
    _check_bound(ais, problem, n=4000)


def test_from_flow_guide_and_placement_errors(problem):
    flow = AutoFlowGuide(problem.model, num_layers=1, hidden=8, kind="affine")
    with pytest.raises(RuntimeError, match="run the flow guide once"):
        AutoSNFGuide.from_flow_guide(flow)
    with pytest.raises(TypeError, match="AutoFlowGuide"):
        AutoSNFGuide.from_flow_guide(object())
    flow(problem.y, problem.w)
    with pytest.raises(ValueError, match="levels >= 1"):
        AutoSNFGuide.from_flow_guide(flow, levels=0)
    with pytest.raises(ValueError, match="tune_rounds"):
        AutoSNFGuide.from_flow_guide(flow, tune_rounds=-1)
    with pytest.raises(ValueError, match="placement"):
        AutoSNFGuide(problem.model, placement="middle")
    # a flow part that is not exact cannot be pulled back
    from pyro_relax.surjections.augment import AugmentSurjection

    def layers(d):
        return [AugmentSurjection(d, 1, hidden=(4,)), LocScaleTransform(torch.zeros(d), 1.0)]

    guide = AutoSNFGuide(problem.model, layers, blocks=["hmc"], placement="base")
    with pytest.raises(ValueError, match="exact bijective"):
        guide(problem.y, problem.w)


def test_pulled_back_target_with_wrong_output_shape_is_refused():
    # issue 10, item 6: a summed target is a ValueError, not silently broadcast log weights
    layers = [T.AffineTransform(torch.ones(2), 2.0, event_dim=1)]
    density = PulledBackDensity(layers, lambda x: standard_normal_log_prob(x).sum())
    with pytest.raises(ValueError, match=r"PulledBackDensity: .*batch shape \(3,\)"):
        density(torch.zeros(3, 2))
    blocks = annealed_hmc_levels(density, levels=2)
    snf = StochasticNormalizingFlow((2,), blocks + layers, lambda x: standard_normal_log_prob(x))
    with pytest.raises(ValueError, match=r"HMCBlock \(layer 0\): step 1 of 1.*PulledBackDensity"):
        snf.sample_with_log_weights(4)


def test_pulled_back_density_sums_elementwise_log_dets():
    # an elementwise transform (event_dim 0) returns one log-det per coordinate: summed
    d = PulledBackDensity([T.ExpTransform()], standard_normal_log_prob)
    u = torch.randn(5, 3, dtype=torch.float64)
    x, log_det = d.push(u)
    assert log_det.shape == (5,)
    torch.testing.assert_close(log_det, u.sum(-1))
    torch.testing.assert_close(d(u), standard_normal_log_prob(u.exp()) + u.sum(-1))
    torch.testing.assert_close(d.target_log_prob(x), standard_normal_log_prob(x))


def test_pilot_uses_dual_averaging_and_keeps_blocks_without_acceptance():
    from pyro_relax.stochastic import OverdampedLangevin

    torch.manual_seed(4)
    target = _gauss(torch.zeros(2), torch.ones(2))
    ula = OverdampedLangevin(target, step_size=0.05)
    blocks = annealed_hmc_levels(target, levels=1, step_size=0.01)
    snf = StochasticNormalizingFlow((2,), [ula, *blocks], target)
    steps = tune_step_sizes(snf, rounds=15, batch_size=128)
    assert len(steps) == 1 and steps[0] > 0.05  # a step 100x too small grows
    assert float(ula.log_step_size.exp()) == pytest.approx(0.05)  # left alone
