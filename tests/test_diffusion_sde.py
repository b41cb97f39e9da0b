"""Noise SDEs: marginals against simulated forward paths, the variance ODE, bad input."""

import math

import pytest
import torch

from pyro_relax.diffusion import VESDE, VPSDE, SubVPSDE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SDES = {
    "vp": lambda: VPSDE(),
    "subvp": lambda: SubVPSDE(),
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=10.0),
}


def _simulate(sde, x0: torch.Tensor, t_end: float, steps: int) -> torch.Tensor:
    """Forward Euler-Maruyama paths written here from drift and g, independently of marginal()."""
    x = x0.clone()
    dt = t_end / steps
    for k in range(steps):
        t = x.new_full(x.shape[:-1], k * dt)
        noise = torch.randn_like(x)
        x = x + sde.drift(x, t) * dt + sde.diffusion(t).unsqueeze(-1) * math.sqrt(dt) * noise
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(SDES))
def test_marginals_match_simulated_forward_paths(name, device):
    torch.manual_seed(0)
    sde = SDES[name]()
    n = 4000
    x0 = torch.tensor([1.5, -2.0], dtype=torch.float64, device=device).expand(n, 2)
    for t_end in (0.2, 1.0):
        xt = _simulate(sde, x0, t_end, steps=500)
        mean, std = sde.marginal(x0[0], torch.tensor(t_end, dtype=torch.float64, device=device))
        var = std**2
        # mean: 5 standard errors sqrt(var / n); variance: 5 s.e. var sqrt(2 / (n - 1)) of
        # the sample variance, plus 2% for the left-point Euler-Maruyama bias in g^2
        # (relative bias ~ rate * dt / 2 <= 2 log(1000) / 1000 for this VE SDE, the fastest)
        assert torch.allclose(xt.mean(0), mean, atol=5 * float((var / n).sqrt()))
        tol = 5 * float(var) * math.sqrt(2 / (n - 1)) + 0.02 * float(var)
        assert (xt.var(0) - var).abs().max() < tol, (name, t_end, xt.var(0), var)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_coefficients_solve_the_moment_odes(name):
    # a' = c a, (s^2)' = 2 c s^2 + g^2: the marginal formulas against the SDE's own c and g^2
    sde = SDES[name]()
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64, requires_grad=True)
    a, s = sde.marginal_coefs(t)
    a = a + 0 * t  # the VE a(t) = 1 is a constant without a graph
    (da,) = torch.autograd.grad(a.sum(), t, create_graph=True)
    (dvar,) = torch.autograd.grad(s.square().sum(), t)
    c, g2 = sde.drift_coef(t), sde.diffusion_sq(t)
    assert torch.allclose(da, c * a, rtol=1e-8, atol=1e-10)
    assert torch.allclose(dvar, 2 * c * s.square() + g2, rtol=1e-8, atol=1e-10)
    a0, s0 = sde.marginal_coefs(torch.zeros((), dtype=torch.float64))
    assert float(a0) == 1.0 and float(s0) == 0.0


def test_subvp_variance_below_vp():
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    assert bool((SubVPSDE().marginal_coefs(t)[1] < VPSDE().marginal_coefs(t)[1]).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(SDES))
def test_shapes_dtype_device_and_prior(name, dtype, device):
    torch.manual_seed(0)
    sde = SDES[name]()
    x = torch.randn(4, 3, 5, dtype=dtype, device=device)
    t = torch.rand(4, 3, dtype=dtype, device=device)
    mean, std = sde.marginal(x, t)
    assert mean.shape == x.shape and std.shape == t.shape and mean.dtype == dtype
    assert sde.drift(x, t).shape == x.shape and sde.drift(x, 0.5).device == x.device
    xt = sde.sample_marginal(x, t)
    assert xt.shape == x.shape and xt.dtype == dtype and xt.device == x.device
    z = sde.prior_sample((20000, 2), x)
    # 5 standard errors of the sample variance: prior_std^2 sqrt(2 / n) relative
    assert abs(float(z.var()) / sde.prior_std**2 - 1) < 5 * math.sqrt(2 / z.numel())
    lp = sde.prior_log_prob(x)
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(x.double()).sum(-1)
    assert torch.allclose(lp.double(), ref, rtol=1e-5)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_times_outside_range_raise(name, bad):
    sde = SDES[name]()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"expected (times in \[0, 1\]|finite)"):
        sde.marginal(x, torch.tensor(bad))
    with pytest.raises(ValueError):
        sde.drift(x, bad)
    with pytest.raises(ValueError):
        sde.diffusion(torch.tensor([0.5, bad]))


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=0.0)
    with pytest.raises(ValueError, match="beta_min"):
        SubVPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(TypeError, match="time"):
        VPSDE().drift(torch.zeros(2), "0.5")
    with pytest.raises(ValueError, match="finite"):
        VPSDE().marginal(torch.tensor([float("inf"), 0.0]), 0.5)


def test_repr():
    assert "beta_max=20" in repr(VPSDE()) and "SubVPSDE" in repr(SubVPSDE())
    assert "sigma_max=10" in repr(VESDE(sigma_max=10.0))
