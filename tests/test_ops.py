"""pyro_relax.ops: the pure MCMC math (leapfrog, Langevin transitions, Metropolis, adaptation).

Statistical checks allow 5 standard errors of the quantity tested.
"""

import math

import pytest
import torch

from pyro_relax.ops import (
    DenseInverseMass,
    IntegratorState,
    LangevinState,
    dual_averaging_init,
    dual_averaging_update,
    euler_maruyama_step,
    gaussian_transition_log_prob,
    hamiltonian,
    kinetic_energy,
    langevin_log_transition,
    langevin_proposal,
    langevin_step,
    leapfrog,
    mala_log_accept_ratio,
    metropolis_accept,
    metropolis_log_ratio,
    partial_momentum_refresh,
    select,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def quartic(x):
    """A non-Gaussian log density and its gradient."""
    lp = -(0.25 * x**4 - x**2 + 0.3 * x).sum(-1)
    return lp, -(x**3 - 2 * x + 0.3)


def gaussian(prec):
    def f(x):
        return -0.5 * ((x @ prec) * x).sum(-1), -(x @ prec)

    return f


def _start(x, v, f):
    return IntegratorState(x, v, *f(x))


# ------------------------------------------------------------------------------- leapfrog
def test_leapfrog_is_reversible_to_rounding():
    torch.manual_seed(0)
    x, v = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    inv_mass = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    end = leapfrog(_start(x, v, quartic), quartic, 0.05, 20, inv_mass)
    back = leapfrog(_start(end.position, -end.momentum, quartic), quartic, 0.05, 20, inv_mass)
    torch.testing.assert_close(back.position, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(-back.momentum, v, atol=1e-10, rtol=0)
    assert not torch.allclose(end.position, x)  # it moved


@pytest.mark.parametrize("dense", [False, True])
def test_leapfrog_preserves_volume(dense):
    torch.manual_seed(1)
    inv_mass = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    inv_mass = DenseInverseMass(inv_mass) if dense else inv_mass.diagonal().clone()

    def flow(xv):
        end = leapfrog(_start(xv[:2], xv[2:], quartic), quartic, 0.1, 7, inv_mass)
        return torch.cat([end.position, end.momentum])

    jac = torch.autograd.functional.jacobian(flow, torch.randn(4, dtype=torch.float64))
    assert abs(float(torch.linalg.det(jac)) - 1.0) < 1e-10


def test_leapfrog_energy_error_is_second_order():
    # Over a fixed time T = 1, halving eps divides the energy error by about 4.
    torch.manual_seed(2)
    prec = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    f = gaussian(prec)
    x, v = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    start = _start(x, v, f)
    errors = []
    for n in (10, 20, 40):
        end = leapfrog(start, f, 1.0 / n, n)
        errors.append(float((hamiltonian(end) - hamiltonian(start)).abs().max()))
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 3.0 < coarse / fine < 5.0, errors


def test_leapfrog_follows_device_and_dtype_and_checks_shapes():
    x = torch.zeros(2, 3, dtype=torch.float64)
    end = leapfrog(_start(x, torch.ones_like(x), quartic), quartic, 0.1)
    assert end.position.dtype == torch.float64 and end.log_density.shape == (2,)
    with pytest.raises(ValueError, match=r"momentum of shape \(2, 3\)"):
        leapfrog(IntegratorState(x, torch.ones(3), *quartic(x)), quartic, 0.1)
    with pytest.raises(ValueError, match="num_steps >= 1"):
        leapfrog(_start(x, x, quartic), quartic, 0.1, 0)


def test_partial_refresh_keeps_the_momentum_distribution():
    torch.manual_seed(3)
    mass = torch.tensor([0.5, 4.0])
    v = mass.sqrt() * torch.randn(200_000, 2)
    out = partial_momentum_refresh(v, torch.tensor(0.6), torch.randn_like(v), mass)
    # var of a sample variance of n Gaussians: 2 var^2 / n
    se = (2 * mass.square() / v.shape[0]).sqrt()
    assert bool(((out.var(0) - mass).abs() < 5 * se).all()), out.var(0)


# ------------------------------------------------------------------------------- Gaussians
@pytest.mark.parametrize("device", DEVICES)
def test_gaussian_transition_matches_torch_diagonal_and_dense(device):
    torch.manual_seed(4)
    kw = dict(dtype=torch.float64, device=device)
    y, m = torch.randn(6, 3, **kw), torch.randn(6, 3, **kw)
    diag = torch.rand(3, **kw) + 0.5
    got = gaussian_transition_log_prob(y, m, 0.3, diag, normalized=True)
    ref = torch.distributions.Normal(m, (0.3 * diag).sqrt()).log_prob(y).sum(-1)
    torch.testing.assert_close(got, ref)
    a = torch.randn(3, 3, **kw)
    dense = a @ a.T + torch.eye(3, **kw)
    got = gaussian_transition_log_prob(y, m, 0.3, DenseInverseMass(dense), normalized=True)
    ref = torch.distributions.MultivariateNormal(m, 0.3 * dense).log_prob(y)
    torch.testing.assert_close(got, ref)
    assert got.device.type == torch.device(device).type
    # unnormalized: differs by a constant only
    diff = gaussian_transition_log_prob(y, m, 0.3, DenseInverseMass(dense)) - ref
    torch.testing.assert_close(diff, diff[:1].expand(6))
    with pytest.raises(ValueError, match=r"dense inv_mass of shape \(3, 3\)"):
        gaussian_transition_log_prob(y, m, 0.3, DenseInverseMass(diag))
    with pytest.raises(ValueError, match="mean of shape"):
        gaussian_transition_log_prob(y, m[:2], 0.3)


@pytest.mark.parametrize("dense", [False, True])
def test_langevin_step_transition_densities(dense):
    # log q(y|x) from the noise equals the Gaussian density of the move, and the backward
    # density is the Gaussian from y; both up to the same normalizer.
    torch.manual_seed(5)
    kw = dict(dtype=torch.float64)
    a = torch.randn(2, 2, **kw)
    inv_mass = a @ a.T + 0.5 * torch.eye(2, **kw)
    if not dense:
        inv_mass = inv_mass.diagonal().clone()
    metric = DenseInverseMass(inv_mass) if dense else inv_mass
    x, eps = torch.randn(8, 2, **kw), 0.2
    noise = torch.randn_like(x)
    new, info = langevin_step(LangevinState(x, *quartic(x)), quartic, eps, noise, metric)
    cov = 2 * eps * (inv_mass if dense else torch.diag(inv_mass))
    drift = (lambda g: g @ inv_mass.T) if dense else (lambda g: inv_mass * g)
    y = new.position
    fwd = torch.distributions.MultivariateNormal(x + eps * drift(quartic(x)[1]), cov).log_prob(y)
    back = torch.distributions.MultivariateNormal(y + eps * drift(new.grad), cov).log_prob(x)
    torch.testing.assert_close(info.log_backward - info.log_forward, back - fwd)
    direct = langevin_log_transition(y, LangevinState(x, *quartic(x)), eps, metric)
    torch.testing.assert_close(direct, info.log_forward)
    y2 = langevin_proposal(x, quartic(x)[1], eps, noise, metric)
    torch.testing.assert_close(y2, y)


def test_mala_ratio_is_reversible_and_rejects_non_finite():
    torch.manual_seed(6)
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    sx, sy = LangevinState(x, *quartic(x)), LangevinState(y, *quartic(y))
    r = mala_log_accept_ratio(sx, sy, 0.3)
    torch.testing.assert_close(r, -mala_log_accept_ratio(sy, sx, 0.3))
    bad_grad = sy.grad.clone()
    bad_grad[0, 0] = math.nan
    r = mala_log_accept_ratio(sx, LangevinState(y, sy.log_density, bad_grad), 0.3)
    assert r[0] == -math.inf and bool(torch.isfinite(r[1:]).all())


def test_euler_maruyama_density_ratio_closed_form():
    torch.manual_seed(7)
    y, drift, noise = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    v, a = 0.3, 0.8
    y_next, info = euler_maruyama_step(y, a, drift, v, noise)
    torch.testing.assert_close(y_next, a * y + drift + math.sqrt(v) * noise)
    expected = drift.square().sum(-1) / (2 * v) + (drift * noise).sum(-1) / math.sqrt(v)
    torch.testing.assert_close(info.log_controlled - info.log_reference, expected)


def test_kinetic_energy_dense_equals_quadratic_form():
    v = torch.tensor([[1.0, 2.0]])
    inv = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    expected = 0.5 * float(v @ inv @ v.T)
    assert float(kinetic_energy(v, DenseInverseMass(inv))) == pytest.approx(expected)


# ------------------------------------------------------------------------------- Metropolis
def test_metropolis_accept_rate_matches_min_one_exp_ratio():
    torch.manual_seed(8)
    ratios = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.7, math.inf, -math.inf, math.nan])
    expected = torch.tensor([math.exp(-3.0), math.exp(-1.0), math.exp(-0.2), 1, 1, 1, 0, 0])
    n = 100_000
    info = metropolis_accept(ratios.expand(n, -1).contiguous())
    rate = info.accepted.double().mean(0)
    se = (expected * (1 - expected) / n).sqrt().double()
    assert bool(((rate - expected.double()).abs() <= 5 * se + 1e-12).all()), rate
    assert not bool(torch.isnan(info.acceptance_probability).any())
    torch.testing.assert_close(info.acceptance_probability[0], expected)
    assert bool((info.log_ratio[:, -1] == -math.inf).all())


def test_metropolis_log_ratio_rules_and_select():
    cur = torch.tensor([0.0, -math.inf, 0.0, 0.0])
    prop = torch.tensor([-1.0, 2.0, math.inf, math.nan])
    r = metropolis_log_ratio(cur, prop, torch.tensor([0.5, 0, 0, 0]), torch.tensor([1.0, 0, 0, 0]))
    assert r.tolist() == [-0.5, math.inf, -math.inf, -math.inf]
    out = select(torch.tensor([True, False]), torch.ones(2, 2, 2), torch.zeros(2, 2, 2), 2)
    assert out[0].eq(1).all() and out[1].eq(0).all()


# ------------------------------------------------------------------------------- adaptation
def test_dual_averaging_reaches_the_target_acceptance_on_a_gaussian():
    """HMC on a 10-d Gaussian with scales 0.5..2, started with a step 5x too large.

    Dual averaging drives the running mean of the acceptance probability to the
    target: over the second half of 400 updates it is within 0.03 of 0.7 (each
    value averages 128 chains; their spread is about 0.03, so the mean of 200 has
    se < 0.005). The averaged step it keeps is a little smaller (the average
    weights early iterates and the acceptance is concave in log eps here), so its
    acceptance errs on the safe side: between 0.65 and 0.9.
    """
    torch.manual_seed(9)
    scales = torch.linspace(0.5, 2.0, 10, dtype=torch.float64)
    prec = torch.diag(scales**-2)
    f = gaussian(prec)
    x = torch.randn(128, 10, dtype=torch.float64) * scales

    def hmc_step(x, eps):
        start = _start(x, torch.randn_like(x), f)
        end = leapfrog(start, f, eps, 5)
        info = metropolis_accept(hamiltonian(start) - hamiltonian(end))
        return select(info.accepted, end.position, x, 1), info.acceptance_probability.mean()

    state = dual_averaging_init(torch.tensor(5.0, dtype=torch.float64))
    during = []
    for _ in range(400):
        x, acc = hmc_step(x, state.log_step_size.exp())
        state = dual_averaging_update(state, acc, target=0.7)
        during.append(float(acc))
    late = sum(during[200:]) / 200
    assert abs(late - 0.7) < 0.03, late
    assert float(during[0]) < 0.3  # the start was far off
    eps = state.log_step_size_avg.exp()
    rates = []
    for _ in range(100):
        x, acc = hmc_step(x, eps)
        rates.append(float(acc))
    assert 0.65 < sum(rates) / len(rates) < 0.9, (float(eps), sum(rates) / len(rates))
    assert state.log_step_size.dtype == torch.float64


def test_dual_averaging_is_batched_and_checks_input():
    state = dual_averaging_init(torch.tensor([0.1, 1.0]))
    state = dual_averaging_update(state, torch.tensor([1.0, math.nan]), target=0.5)
    assert state.log_step_size.shape == (2,) and state.iteration == 1
    assert float(state.log_step_size[0]) > float(state.log_step_size[1]) - math.log(10)
    with pytest.raises(ValueError, match="target"):
        dual_averaging_update(state, 0.5, target=1.5)
    with pytest.raises(ValueError, match="step_size > 0"):
        dual_averaging_init(-1.0)
