"""SNF blocks: path weights against direct formulas, limits, invariance, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_relax.stochastic.annealing import (
    AnnealedDensity,
    LearnedSchedule,
    geometric_schedule,
    linear_schedule,
    standard_normal_log_prob,
)
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.langevin import MALABlock, OverdampedLangevin
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.underdamped import UnderdampedLangevin
from pyro_relax.targets import Banana, DoubleWell
from pyro_relax.testing.cases_snf import GaussianLogDensity

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BLOCKS = [OverdampedLangevin, MALABlock, UnderdampedLangevin, RandomWalkMH, HMCBlock]


def _quartic(x):
    """A non-Gaussian log density (unnormalized double well in every coordinate)."""
    return -(0.25 * x**4 - x**2 + 0.3 * x).sum(-1)


def _annealed_log_pi(x, lam):
    return (1 - lam) * standard_normal_log_prob(x) + lam * _quartic(x)


def _grad(f, x):
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(f(x).sum(), x)[0]


# -- overdamped Langevin: Delta S against the Gaussian transition densities -------------------


@pytest.mark.parametrize("device", DEVICES)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 4),
    eps=st.floats(1e-3, 0.5),
    lam=st.floats(0.05, 1.0),
    per_dim=st.booleans(),
)
@settings(max_examples=20)
def test_langevin_delta_s_is_log_ratio_of_gaussian_transitions(
    device, seed, dim, eps, lam, per_dim
):
    torch.manual_seed(seed)
    step = eps * torch.linspace(0.5, 1.5, dim, dtype=torch.float64) if per_dim else eps
    block = OverdampedLangevin(_quartic, standard_normal_log_prob, step_size=step, lam=lam)
    block = block.double().to(device)
    x = torch.randn(7, dim, dtype=torch.float64, device=device)
    y, delta_s = block.decode(x)
    log_pi = lambda t: _annealed_log_pi(t, lam)  # noqa: E731
    lam = float(block.density.lam())  # the block stores lam and log eps in float32, then .double()
    step_t = block.positive("step_size", x)
    sd = (2 * step_t).sqrt()
    forward = torch.distributions.Normal(x + step_t * _grad(log_pi, x), sd).log_prob(y).sum(-1)
    backward = torch.distributions.Normal(y + step_t * _grad(log_pi, y), sd).log_prob(x).sum(-1)
    torch.testing.assert_close(delta_s, backward - forward, atol=1e-9, rtol=1e-9)


def test_langevin_encode_contribution_is_log_p_minus_log_q():
    # encode draws z ~ K(. | x) and returns V = log K(x | z) - log K(z | x).
    torch.manual_seed(1)
    block = OverdampedLangevin(_quartic, step_size=0.2).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    eps = float(block.positive("step_size", x))
    z, v = block.encode(x)
    sd = math.sqrt(2 * eps)
    log_p = torch.distributions.Normal(z + eps * _grad(_quartic, z), sd).log_prob(x).sum(-1)
    log_q = torch.distributions.Normal(x + eps * _grad(_quartic, x), sd).log_prob(z).sum(-1)
    torch.testing.assert_close(v, log_p - log_q, atol=1e-9, rtol=1e-9)


# Underdamped Langevin is left out: its velocity persists across steps by design (a chain of
# one-step blocks would refresh it); its weights are covered by the unbiasedness tests.
@pytest.mark.parametrize(
    "cls", [OverdampedLangevin, MALABlock, RandomWalkMH, HMCBlock], ids=lambda c: c.__name__
)
def test_multi_step_block_equals_chain_of_single_steps(cls):
    # Same seed, same noise order: n_steps=3 must equal three one-step blocks (gradient caching).
    x = torch.randn(6, 2, dtype=torch.float64)
    kw = dict(step_size=0.3, lam=0.7)
    torch.manual_seed(3)
    y3, d3 = cls(_quartic, standard_normal_log_prob, n_steps=3, **kw).double().decode(x)
    one = cls(_quartic, standard_normal_log_prob, n_steps=1, **kw).double()
    torch.manual_seed(3)
    y, total = x, 0.0
    for _ in range(3):
        y, d = one.decode(y)
        total = total + d
    torch.testing.assert_close(y3, y, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(d3, total, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cls", [OverdampedLangevin, UnderdampedLangevin], ids=lambda c: c.__name__)
def test_vanishing_step_size_gives_identity_and_zero_delta_s(cls):
    # Delta S = O(sqrt(eps)) (overdamped) and y - x = O(sqrt(eps)): shrinking eps by 1e4 must
    # shrink both by about 1e2; we require at least 1e1 at each stage and tiny values at the end.
    x = torch.randn(50, 3, dtype=torch.float64)
    sizes = [1e-2, 1e-6, 1e-10]
    moves, deltas = [], []
    for eps in sizes:
        torch.manual_seed(0)
        y, d = cls(_quartic, step_size=eps, n_steps=2).double().decode(x)
        moves.append(float((y - x).abs().max()))
        deltas.append(float(d.abs().max()))
    for a, b in zip(moves[:-1], moves[1:], strict=True):
        assert b < a / 10
    for a, b in zip(deltas[:-1], deltas[1:], strict=True):
        assert b < a / 10
    # |Delta S| ~ sqrt(eps / 2) |eta| |F(x) + F(y)| with |F| up to ~20 on this quartic.
    assert moves[-1] < 1e-3 and deltas[-1] < 1e-2


# -- MH, MALA, HMC: detailed balance weights and invariance ---------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [MALABlock, RandomWalkMH, HMCBlock], ids=lambda c: c.__name__)
def test_metropolis_delta_s_is_log_pi_difference(cls, device):
    torch.manual_seed(2)
    lam = 0.6
    block = cls(_quartic, standard_normal_log_prob, step_size=0.4, lam=lam, n_steps=4)
    block = block.double().to(device)
    x = torch.randn(200, 2, dtype=torch.float64, device=device)
    y, delta_s, info = block.decode_with_info(x)
    lam = float(block.density.lam())  # stored in float32, then cast by .double()
    expected = _annealed_log_pi(x, lam) - _annealed_log_pi(y, lam)
    torch.testing.assert_close(delta_s, expected, atol=1e-9, rtol=1e-9)
    acc = float(info.acceptance_rate)
    assert 0.0 < acc < 1.0  # both branches were exercised
    z, v = block.encode(x)  # encode: V = log pi(x) - log pi(z), the same formula
    torch.testing.assert_close(v, _annealed_log_pi(x, lam) - _annealed_log_pi(z, lam))


def _gaussian(dim=2, device="cpu"):
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64, device=device)
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64, device=device)
    return torch.distributions.MultivariateNormal(mean, cov)


def _max_moment_z(samples, mean, cov):
    """Largest |z| of the sample mean and covariance entries against the true ones.

    se(mean_i) = sqrt(cov_ii / n); se(cov_ij) = sqrt((cov_ii cov_jj + cov_ij^2) / n) for a
    Gaussian. Each output is an exact draw (the chain starts in equilibrium), so n is the number
    of independent particles.
    """
    n = samples.shape[0]
    m = samples.mean(0)
    c = torch.cov(samples.T)
    z_mean = (m - mean) / (cov.diagonal() / n).sqrt()
    var = cov.diagonal()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    return float(torch.cat([z_mean.abs(), ((c - cov) / se_cov).abs().flatten()]).max())


def _make(cls, target, base=None, lam=1.0):
    kw = {"HMCBlock": dict(step_size=0.4, n_leapfrog=4), "MALABlock": dict(step_size=0.3)}.get(
        cls.__name__, dict(step_size=0.8)
    )
    return cls(target, base, lam=lam, n_steps=5, **kw).double()


@pytest.mark.parametrize("cls", [RandomWalkMH, MALABlock, HMCBlock], ids=lambda c: c.__name__)
@pytest.mark.parametrize("n", [4000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_metropolis_blocks_keep_target_moments(cls, n):
    torch.manual_seed(4)
    p = _gaussian()
    block = _make(cls, p)
    y, _ = block.decode(p.sample((n,)))
    # 5 standard errors on each of the 5 moments (2 means, 3 covariance entries).
    assert _max_moment_z(y, p.mean, p.covariance_matrix) < 5.0


@pytest.mark.parametrize("cls", [RandomWalkMH, MALABlock, HMCBlock], ids=lambda c: c.__name__)
def test_metropolis_blocks_keep_annealed_gaussian_moments(cls):
    # pi_lam = N(0, I)^(1-lam) N(m, C)^lam is Gaussian: precision P = (1-lam) I + lam C^-1,
    # mean P^-1 lam C^-1 m. Started from exact draws of it, the block must keep it.
    torch.manual_seed(5)
    lam, n = 0.4, 4000
    p = _gaussian()
    prec = (1 - lam) * torch.eye(2, dtype=torch.float64) + lam * p.precision_matrix
    cov = torch.linalg.inv(prec)
    mean = cov @ (lam * p.precision_matrix @ p.mean)
    start = torch.distributions.MultivariateNormal(mean, cov).sample((n,))
    y, _ = _make(cls, p, standard_normal_log_prob, lam).decode(start)
    assert _max_moment_z(y, mean, cov) < 5.0


def test_invariance_check_detects_a_biased_kernel():
    # Negative control: unadjusted Langevin with a large step does not keep the target, and the
    # same check must flag it (its stationary covariance is inflated by O(eps)).
    torch.manual_seed(4)
    p = _gaussian()
    y, _ = OverdampedLangevin(p, step_size=0.4, n_steps=20).double().decode(p.sample((4000,)))
    assert _max_moment_z(y, p.mean, p.covariance_matrix) > 5.0


@pytest.mark.parametrize("cls", [RandomWalkMH, MALABlock, HMCBlock], ids=lambda c: c.__name__)
def test_metropolis_blocks_keep_banana_moments(cls):
    # Non-Gaussian target: compare with an independent exact sample. Per moment,
    # se = sqrt(var_a / n + var_b / n) from the two samples' own variances; 5 se.
    torch.manual_seed(6)
    target = Banana().double()
    n = 4000
    y, _ = _make(cls, target).decode(target.sample((n,)))
    ref = target.sample((n,))

    def feats(s):
        c = s - s.mean(0)
        return torch.cat([s, c[:, :1] * c, c[:, 1:] * c[:, 1:]], dim=1)

    fa, fb = feats(y), feats(ref)
    se = (fa.var(0) / n + fb.var(0) / n).sqrt()
    assert float(((fa.mean(0) - fb.mean(0)) / se).abs().max()) < 5.0


# -- annealing and schedules ------------------------------------------------------------------


def test_annealed_density_interpolates():
    x = torch.randn(5, 3)
    d = AnnealedDensity(_quartic, standard_normal_log_prob, lam=0.3)
    torch.testing.assert_close(d(x), 0.7 * standard_normal_log_prob(x) + 0.3 * _quartic(x))
    learned = AnnealedDensity(_quartic, standard_normal_log_prob, lam=0.3, learn_lam=True)
    torch.testing.assert_close(learned.lam().detach(), torch.tensor(0.3))
    learned(x).sum().backward()
    assert learned.lam_logit.grad is not None and learned.lam_logit.grad != 0


def test_schedules():
    assert linear_schedule(4) == [0.25, 0.5, 0.75, 1.0]
    g = geometric_schedule(5, start=1e-4)
    assert g[0] == pytest.approx(1e-4) and g[-1] == 1.0
    assert all(a < b for a, b in zip(g, g[1:], strict=False))
    s = LearnedSchedule(3, init=[0.1, 0.5, 1.0])
    torch.testing.assert_close(s().detach(), torch.tensor([0.1, 0.5, 1.0]))
    blocks = [MALABlock(_quartic, standard_normal_log_prob, lam=s.entry(k)) for k in range(3)]
    total = sum(b.decode(torch.randn(4, 2))[1].sum() for b in blocks[:2])
    total.backward()
    assert s.logits.grad is not None and bool(torch.isfinite(s.logits.grad).all())
    open_end = LearnedSchedule(2, end_at_one=False)
    assert float(open_end().detach()[-1]) < 1.0


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_step_size_raises(cls, bad):
    with pytest.raises(ValueError, match="step_size > 0"):
        cls(_quartic, step_size=bad)


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan")])
def test_lambda_outside_unit_interval_raises(cls, lam):
    with pytest.raises(ValueError, match=r"lam in \[0, 1\]"):
        cls(_quartic, standard_normal_log_prob, lam=lam)


def test_other_bad_configurations_raise():
    with pytest.raises(ValueError, match="needs a base"):
        MALABlock(_quartic, lam=0.5)
    with pytest.raises(ValueError, match="start in"):
        MALABlock(_quartic, standard_normal_log_prob, lam=1.0, learn_lam=True)
    with pytest.raises(ValueError, match="n_steps"):
        RandomWalkMH(_quartic, n_steps=0)
    with pytest.raises(ValueError, match="n_leapfrog"):
        HMCBlock(_quartic, n_leapfrog=0)
    with pytest.raises(ValueError, match="mass > 0"):
        HMCBlock(_quartic, mass=-1.0)
    with pytest.raises(ValueError, match="friction > 0"):
        UnderdampedLangevin(_quartic, friction=0.0)
    with pytest.raises(TypeError, match="callable"):
        MALABlock("not a density")
    with pytest.raises(TypeError, match="lam"):
        MALABlock(_quartic, standard_normal_log_prob, lam="0.5")
    with pytest.raises(ValueError, match="NaN"):
        MALABlock(_quartic).decode(torch.tensor([[float("nan"), 0.0]]))


def _nan_right_half(x):
    """-|x|^2/2, but NaN (value and gradient) where x_0 > 1."""
    return -0.5 * x.square().sum(-1) + torch.sqrt(1.0 - x[..., 0]) * 0.0


@pytest.mark.parametrize("cls", [RandomWalkMH, MALABlock, HMCBlock], ids=lambda c: c.__name__)
def test_nan_proposals_are_rejected(cls):
    torch.manual_seed(7)
    block = cls(_nan_right_half, step_size=1.0, n_steps=5)
    x = torch.rand(500, 2) * 0.5  # all start where the density is finite
    # validation on: would raise if anything went non-finite
    y, delta_s, info = block.decode_with_info(x)
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(delta_s).all())
    assert bool((y[:, 0] <= 1.0).all())  # no NaN proposal was ever accepted
    assert int(info.bad_step) == 0


@pytest.mark.parametrize("cls", [OverdampedLangevin, UnderdampedLangevin], ids=lambda c: c.__name__)
def test_unadjusted_langevin_nan_gradient_names_block_and_step(cls):
    block = cls(_nan_right_half, step_size=0.01, n_steps=3)
    x = torch.tensor([[0.0, 0.0], [1.5, 0.0]])  # the second point has a NaN gradient
    with pytest.raises(ValueError, match=rf"{cls.__name__}: step 1 of 3 produced NaN"):
        block.decode(x)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: step 1 of 3 produced NaN"):
        block.encode(x)


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_target_raising_mid_step_names_block_and_step(cls):
    calls = []

    def flaky(x):
        calls.append(1)
        if len(calls) > 2:
            raise ArithmeticError("boom")
        return _quartic(x)

    block = cls(flaky, step_size=0.1, n_steps=3)
    # a foreign error is wrapped (RuntimeError, which RelaxedLayer.decode may turn into a
    # ValueError naming the layer); either way the block and the step are named
    with pytest.raises(
        (RuntimeError, ValueError), match=rf"{cls.__name__}: step \d of 3: .*ArithmeticError: boom"
    ):
        block.decode(torch.zeros(4, 2))


def test_target_with_wrong_event_shape_names_block():
    # the target's own ValueError keeps its type (a clean input error), naming the block and step
    with pytest.raises(ValueError, match="HMCBlock: step 1 of 1.*expected event shape"):
        HMCBlock(DoubleWell()).decode(torch.zeros(4, 3))


def test_gaussian_log_density_helper():
    g = GaussianLogDensity(0.5, 1.5)
    x = torch.randn(3, 4)
    ref = torch.distributions.Normal(0.5, 1.5).log_prob(x).sum(-1)
    torch.testing.assert_close(g(x), ref)


# ---- a target's output shape is checked (issue 10, item 6) -------------------------------------


def _summed(x):
    """A common mistake: the log density summed over the batch too (a scalar)."""
    return -0.5 * x.square().sum()


def _unsummed(x):
    """Another: the event dimension left in (shape batch + event)."""
    return -0.5 * x.square()


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [_summed, _unsummed], ids=["summed", "unsummed"])
def test_target_with_wrong_output_shape_is_refused_by_every_block(cls, bad):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: step 1 of 2.*batch shape \(4,\)"):
        cls(bad, n_steps=2).decode(torch.zeros(4, 2))
    # the base of the annealing path is checked too
    with pytest.raises(ValueError, match=r"base log density to return the batch shape \(4,\)"):
        cls(_quartic, base=bad, lam=0.5).decode(torch.zeros(4, 2))


def test_annealed_density_checks_output_shapes_for_other_event_dims():
    d = AnnealedDensity(lambda x: x.sum((-2, -1)), lam=1.0, event_dim=2)
    assert d(torch.zeros(3, 2, 2)).shape == (3,)
    with pytest.raises(ValueError, match=r"AnnealedDensity: expected the target .* \(3, 2\)"):
        AnnealedDensity(lambda x: x.sum((-2, -1)))(torch.zeros(3, 2, 2))
    with pytest.raises(TypeError, match="AnnealedDensity: expected the target log density"):
        AnnealedDensity(lambda x: 0.0)(torch.zeros(3, 2))
