"""Benchmark targets: log normalizers, exact samplers, shapes, dtypes, devices, validation.

Tolerances:

* Moment checks compare a sample mean of a statistic ``f(X)`` with its known
  value and allow 5 standard errors, ``se = sd(f(X)) / sqrt(n)`` (sample sd);
  a correct sampler fails one such check with probability ~6e-7.
* Grid quadratures use the trapezoid rule on smooth, fast-decaying integrands,
  which converges geometrically in the spacing; the spacings below give errors
  far below the ``1e-8`` allowed on ``log Z`` (``test_quadrature_is_converged``
  shows halving the spacing changes the result by less than 1e-10).
"""

import io
import math

import numpy as np
import pytest
import torch
from scipy import integrate

import pyro_relax
from pyro_relax.targets import (
    TARGETS,
    Banana,
    DoubleWell,
    GaussianMixture40,
    ManyWell,
    NealFunnel,
    Target,
    get_target,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Small instances of every target, by registry name.
FACTORIES = {
    "double_well": lambda: DoubleWell(),
    "funnel": lambda: NealFunnel(dim=5),
    "gmm40": lambda: GaussianMixture40(),
    "many_well": lambda: ManyWell(dim=6),
    "banana": lambda: Banana(dim=3),
}
NAMES = sorted(FACTORIES)
N_SE = 5.0


def assert_expectation(values: torch.Tensor, expected: float, what: str) -> None:
    """Sample mean of ``values`` within 5 standard errors (sd / sqrt(n)) of ``expected``."""
    values = values.double().flatten()
    se = float(values.std()) / math.sqrt(values.numel())
    mean = float(values.mean())
    assert abs(mean - expected) < N_SE * se, f"{what}: mean {mean:.5g}, expected {expected:.5g}"


def log_trapezoid_2d(log_f: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """log of the 2-D trapezoid integral of exp(log_f) on the grid x (rows) by y (columns)."""
    shift = log_f.max()
    inner = torch.trapezoid(torch.exp(log_f - shift), y, dim=-1)
    return float(torch.log(torch.trapezoid(inner, x)) + shift)


def grid_points(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack(torch.meshgrid(x, y, indexing="ij"), dim=-1)


def quartic_moments(a: float, b: float, c: float) -> dict[str, float]:
    """Z_1, E x1, E x1^2 and P(x1 < 0) of exp(-u_1) by adaptive quadrature (scipy)."""
    u_min = min(a / 4 * x**4 - b / 2 * x**2 + c * x for x in np.linspace(-10, 10, 20001))

    def dens(x: float) -> float:
        return math.exp(-(a / 4 * x**4 - b / 2 * x**2 + c * x - u_min))

    kw = {"limit": 400, "epsabs": 0.0, "epsrel": 1e-12}
    pts = [-3.0, -1.5, 0.0, 1.5, 3.0]
    z = integrate.quad(dens, -12, 12, points=pts, **kw)[0]
    m1 = integrate.quad(lambda x: x * dens(x), -12, 12, points=pts, **kw)[0] / z
    m2 = integrate.quad(lambda x: x * x * dens(x), -12, 12, points=pts, **kw)[0] / z
    p_neg = integrate.quad(dens, -12, 0, points=pts[:2], **kw)[0] / z
    return {"log_z1": math.log(z) - u_min, "m1": m1, "m2": m2, "p_neg": p_neg}


WELL_PARAMS = [(1.0, 6.0, 1.0, 1.0), (4.0, 12.0, -0.5, 1.0), (2.0, 3.0, -0.7, 4.0)]


# ---------------------------------------------------------------- registry


def test_get_target_names():
    assert sorted(TARGETS) == ["banana", "double_well", "funnel", "gmm40", "many_well"]
    for name, cls in TARGETS.items():
        assert isinstance(get_target(name), cls)
    assert get_target("funnel", dim=4).dim == 4


def test_get_target_unknown_name():
    with pytest.raises(ValueError, match="valid names.*double_well"):
        get_target("gmm")
    with pytest.raises(TypeError, match="expected a str"):
        get_target(3)


# ---------------------------------------------------------------- generic checks


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_shapes_and_device(name, device):
    target = FACTORIES[name]().to(device)
    d = target.dim
    for batch in [(), (7,), (3, 4)]:
        out = target.log_prob(torch.randn(batch + (d,), device=device))
        assert out.shape == batch and out.device.type == device
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    x = torch.randn(3, 4, d, device=device)
    # Batch consistency: the batched result equals the row-by-row one.
    rows = torch.stack([target.log_prob(x[i, j]) for i in range(3) for j in range(4)])
    torch.testing.assert_close(target.log_prob(x).flatten(), rows)
    norm = target.normalized_log_prob(x)
    torch.testing.assert_close(norm, target.log_prob(x) - target.log_Z)
    assert target(x).shape == (3, 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_samples_shape_device_dtype(name, device):
    target = FACTORIES[name]().to(device)
    assert target.has_exact_samples
    s = target.sample((3, 4))
    assert s.shape == (3, 4, target.dim) and s.device.type == device
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    assert target.sample().shape == (target.dim,)
    assert target.sample(torch.Size([0])).shape == (0, target.dim)
    with pytest.raises(TypeError, match="sample_shape"):
        target.sample(5)
    with pytest.raises(ValueError, match="non-negative"):
        target.sample((-1,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_float64(name, device):
    target = FACTORIES[name]().to(device)
    x = torch.randn(5, target.dim, device=device, dtype=torch.float64)
    # float64 in, float64 out, even from a float32 module.
    assert target.log_prob(x).dtype == torch.float64
    target64 = FACTORIES[name]().to(torch.float64).to(device)
    assert all(b.dtype == torch.float64 for b in target64.buffers() if b.is_floating_point())
    assert target64.log_Z == target.log_Z
    assert target64.sample((2,)).dtype == torch.float64
    out64 = target64.log_prob(x)
    assert out64.dtype == torch.float64
    # The float32 module agrees to float32 precision (relative to the magnitude).
    torch.testing.assert_close(target.log_prob(x.float()).double(), out64, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_differentiable(name, device):
    target = FACTORIES[name]().to(device=device, dtype=torch.float64)
    x = target.sample((4, 2)).requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_prob(x).sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    # Against central differences along one random direction (float64).
    v, eps = torch.randn_like(x), 1e-6
    with torch.no_grad():
        fd = (target.log_prob(x + eps * v) - target.log_prob(x - eps * v)) / (2 * eps)
    torch.testing.assert_close((grad * v).sum(-1), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_input_validation(name):
    target = FACTORIES[name]()
    d = target.dim
    with pytest.raises(ValueError, match=rf"expected event shape \({d},\), got \({d + 1},\)"):
        target.log_prob(torch.zeros(3, d + 1))
    with pytest.raises(ValueError, match="expected event shape"):
        target.log_prob(torch.tensor(1.0))
    bad = torch.zeros(2, d)
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="expected finite values, got 1 NaN"):
        target.log_prob(bad)
    with pytest.raises(ValueError, match="finite"):
        target.normalized_log_prob(torch.full((d,), float("inf")))
    with pytest.raises(TypeError, match="floating-point"):
        target.log_prob(torch.zeros(2, d, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        target.log_prob(np.zeros((2, d)))
    # The global switch turns the (host-synchronizing) finiteness check off.
    with pyro_relax.validation(False):
        assert torch.isnan(target.log_prob(bad)[1])


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name):
    target = FACTORIES[name]()
    buf = io.BytesIO()
    torch.save(target, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.randn(4, target.dim)
    torch.testing.assert_close(loaded.log_prob(x), target.log_prob(x))
    assert loaded.log_Z == target.log_Z and repr(loaded) == repr(target)


def test_bad_configurations():
    with pytest.raises(ValueError, match="even dim"):
        ManyWell(dim=5)
    with pytest.raises(ValueError, match="a > 0"):
        DoubleWell(a=0.0)
    with pytest.raises(ValueError, match="d > 0"):
        ManyWell(dim=4, d=-1.0)
    with pytest.raises(TypeError, match="real number b"):
        DoubleWell(b="6")
    with pytest.raises(ValueError, match="finite c"):
        DoubleWell(c=float("nan"))
    with pytest.raises(ValueError, match="dim >= 2"):
        NealFunnel(dim=1)
    with pytest.raises(ValueError, match="scale > 0"):
        NealFunnel(scale=0.0)
    with pytest.raises(ValueError, match="n_modes >= 1"):
        GaussianMixture40(n_modes=0)
    with pytest.raises(TypeError, match="int seed"):
        GaussianMixture40(seed=1.5)
    with pytest.raises(ValueError, match="dim >= 2"):
        Banana(dim=1)
    with pytest.raises(ValueError, match="sigma2 > 0"):
        Banana(sigma2=-1.0)


def test_target_without_sampler():
    class Flat(Target):
        def __init__(self) -> None:
            super().__init__(2)
            self._log_Z = math.log(2 * math.pi)

        def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
            return -0.5 * (x**2).sum(-1)

    target = Flat()
    assert not target.has_exact_samples
    with pytest.raises(NotImplementedError, match="no exact sampler"):
        target.sample((3,))
    assert target.normalized_log_prob(torch.zeros(2)).item() == pytest.approx(
        -math.log(2 * math.pi)
    )


# ---------------------------------------------------------------- double well


@pytest.mark.parametrize("params", WELL_PARAMS)
def test_double_well_log_Z_by_2d_quadrature(params):
    a, b, c, d = params
    target = DoubleWell(a, b, c, d).double()
    x1 = torch.linspace(-8, 8, 1601, dtype=torch.float64)  # spacing 0.01
    x2 = torch.linspace(-12, 12, 1201, dtype=torch.float64) / math.sqrt(d)  # 12 sd
    log_z = log_trapezoid_2d(target.log_prob(grid_points(x1, x2)), x1, x2)
    assert abs(log_z - target.log_Z) < 1e-8
    # Against scipy's adaptive quadrature of the x1 marginal, times the Gaussian integral.
    ref = quartic_moments(a, b, c)["log_z1"] + 0.5 * math.log(2 * math.pi / d)
    assert abs(ref - target.log_Z) < 1e-8


def test_quadrature_is_converged():
    target = DoubleWell().double()
    x2 = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    results = []
    for n in (1601, 3201):
        x1 = torch.linspace(-8, 8, n, dtype=torch.float64)
        results.append(log_trapezoid_2d(target.log_prob(grid_points(x1, x2)), x1, x2))
    assert abs(results[0] - results[1]) < 1e-10


def test_double_well_fab_constant():
    # FAB's code states Z_1 = 11784.50927 for log p = -x1^4 + 6 x1^2 + x1/2 (10 significant
    # figures, so a relative error of at most 5e-10 in Z_1).
    target = DoubleWell(a=4.0, b=12.0, c=-0.5, d=1.0)
    assert abs(target.log_Z_x1 - math.log(11784.50927)) < 1e-8
    assert ManyWell.fab(dim=32).log_Z == pytest.approx(16 * target.log_Z, rel=1e-14)


@pytest.mark.parametrize("device", DEVICES)
def test_double_well_free_energy(device):
    target = DoubleWell().to(device=device, dtype=torch.float64)
    x1 = torch.linspace(-8, 8, 3201, dtype=torch.float64, device=device)
    f = target.free_energy_x1(x1)
    assert f.shape == x1.shape and f.device.type == device
    # exp(-F) is a normalized density ...
    assert abs(float(torch.trapezoid(torch.exp(-f), x1)) - 1.0) < 1e-10
    # ... equal to the x2-integral of the normalized 2-D density (trapezoid in x2).
    x2 = torch.linspace(-12, 12, 1201, dtype=torch.float64, device=device)
    # (|x1| <= 6 keeps the density above float64 underflow.)
    x1c = torch.linspace(-6, 6, 61, dtype=torch.float64, device=device)
    joint = torch.exp(target.normalized_log_prob(grid_points(x1c, x2)))
    marginal = torch.trapezoid(joint, x2, dim=-1)
    torch.testing.assert_close(-torch.log(marginal), target.free_energy_x1(x1c), rtol=0, atol=1e-9)
    assert target.free_energy_x1(torch.zeros(2, 3, dtype=torch.float32, device=device)).dtype == (
        torch.float32
    )
    with pytest.raises(ValueError, match="finite"):
        target.free_energy_x1(torch.tensor([0.0, float("nan")], device=device))
    with pytest.raises(TypeError, match="floating-point"):
        target.free_energy_x1(torch.zeros(3, dtype=torch.long))


def _check_well_samples(x1: torch.Tensor, x2: torch.Tensor, params) -> None:
    a, b, c, d = params
    ref = quartic_moments(a, b, c)
    assert_expectation(x1, ref["m1"], "E x1")
    assert_expectation(x1**2, ref["m2"], "E x1^2")
    assert_expectation((x1 < 0).double(), ref["p_neg"], "P(x1 < 0)")
    assert_expectation(x2, 0.0, "E x2")
    assert_expectation(x2**2, 1.0 / d, "E x2^2")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("params", WELL_PARAMS[:2])
def test_double_well_sample_moments(params, device):
    torch.manual_seed(1)
    s = DoubleWell(*params).to(device).sample((200_000,)).cpu()
    _check_well_samples(s[:, 0], s[:, 1], params)


def _ks_statistic(samples: torch.Tensor, target: DoubleWell) -> float:
    """sup |F_n - F| for the x1 samples, F from an independent fine trapezoid CDF."""
    x = np.linspace(-10.0, 10.0, 400_001)
    dens = np.exp(-target.free_energy_x1(torch.from_numpy(x)).numpy())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(x))])
    s = np.sort(samples.double().numpy())
    f = np.interp(s, x, cdf)
    n = s.size
    return float(max((np.arange(1, n + 1) / n - f).max(), (f - np.arange(n) / n).max()))


def test_double_well_ks():
    # Kolmogorov's critical value at level 1e-3 is 1.95 / sqrt(n).
    torch.manual_seed(2)
    target = DoubleWell()
    n = 100_000
    assert _ks_statistic(target.sample((n,))[:, 0], target) < 1.95 / math.sqrt(n)


@pytest.mark.slow
def test_double_well_ks_large():
    torch.manual_seed(3)
    target = DoubleWell(a=4.0, b=12.0, c=-0.5, d=1.0).double()
    n = 4_000_000
    assert _ks_statistic(target.sample((n,))[:, 0], target) < 1.95 / math.sqrt(n)


# ---------------------------------------------------------------- many well


def test_many_well_factorizes():
    target = ManyWell(dim=6, a=2.0, b=3.0, c=-0.7, d=4.0).double()
    well = DoubleWell(2.0, 3.0, -0.7, 4.0).double()
    x = torch.randn(5, 6, dtype=torch.float64) * 2
    expected = sum(well.log_prob(x[:, 2 * i : 2 * i + 2]) for i in range(3))
    torch.testing.assert_close(target.log_prob(x), expected)
    assert target.log_Z == pytest.approx(3 * well.log_Z, rel=1e-14)
    assert ManyWell(dim=2).log_Z == DoubleWell().log_Z


@pytest.mark.parametrize("device", DEVICES)
def test_many_well_samples(device):
    torch.manual_seed(4)
    params = WELL_PARAMS[1]
    s = ManyWell.fab(dim=6).to(device).sample((100_000,)).cpu().double()
    for i in range(3):
        _check_well_samples(s[:, 2 * i], s[:, 2 * i + 1], params)
    # Pairs are independent: E[x1 x3] = (E x1)^2.
    m1 = quartic_moments(*params[:3])["m1"]
    assert_expectation(s[:, 0] * s[:, 2], m1**2, "E x1 x3")


# ---------------------------------------------------------------- funnel


def test_funnel_matches_torch_distributions():
    target = NealFunnel(dim=4, scale=2.5).double()
    x = target.sample((6,))
    v = x[:, 0]
    expected = torch.distributions.Normal(0.0, 2.5).log_prob(v)
    expected = expected + torch.distributions.Normal(0.0, torch.exp(v / 2)).log_prob(
        x[:, 1:].T
    ).sum(0)
    torch.testing.assert_close(target.log_prob(x), expected)


def test_funnel_2d_quadrature():
    target = NealFunnel(dim=2).double()
    # v to +-13 sd with spacing 0.02; x on a v-dependent grid x = exp(v/2) t, t to +-15,
    # with Jacobian dx = exp(v/2) dt.
    v = torch.linspace(-40, 40, 4001, dtype=torch.float64)
    t = torch.linspace(-15, 15, 601, dtype=torch.float64)
    x = torch.exp(v / 2)[:, None] * t
    pts = torch.stack([v[:, None].expand_as(x), x], dim=-1)
    log_f = target.log_prob(pts) + (v / 2)[:, None]
    assert abs(log_trapezoid_2d(log_f, v, t) - target.log_Z) < 1e-8


def test_funnel_importance_sampling_log_Z():
    # Proposal: the funnel with every standard deviation widened by r = 1.1, so the weights
    # have E_q[w^2] = (r^2 / sqrt(2 r^2 - 1))^dim ~ 1.17 (dim 10): se ~ 0.4 / sqrt(n).
    torch.manual_seed(5)
    target = NealFunnel(dim=10).double()
    n, r = 100_000, 1.1
    eps = torch.randn(n, 10, dtype=torch.float64) * r
    v = 3.0 * eps[:, :1]
    x = torch.cat([v, torch.exp(v / 2) * eps[:, 1:]], dim=-1)
    normal = torch.distributions.Normal(0.0, r)
    log_q = normal.log_prob(eps).sum(-1) - math.log(3.0) - 4.5 * v[:, 0]
    w = torch.exp(target.normalized_log_prob(x) - log_q)
    assert_expectation(w, 1.0, "Z by importance sampling")
    assert float(w.std()) / math.sqrt(n) < 0.005  # the check has power


@pytest.mark.parametrize("device", DEVICES)
def test_funnel_samples(device):
    torch.manual_seed(6)
    s = NealFunnel(dim=5).to(device).sample((200_000,)).cpu().double()
    v = s[:, 0]
    assert_expectation(v, 0.0, "E v")
    assert_expectation(v**2, 9.0, "E v^2")
    z = s[:, 1:] * torch.exp(-v / 2)[:, None]  # standard normal, independent of v
    for i in range(4):
        assert_expectation(z[:, i], 0.0, f"E z{i}")
        assert_expectation(z[:, i] ** 2, 1.0, f"E z{i}^2")
        assert_expectation(z[:, i] ** 2 * v, 0.0, f"E z{i}^2 v")


# ---------------------------------------------------------------- gaussian mixture


def test_gmm_locs():
    target = GaussianMixture40()
    assert target.locs.shape == (40, 2) and target.n_modes == 40
    assert target.locs.abs().max() <= 40.0 and target.locs.abs().max() > 35.0
    torch.testing.assert_close(GaussianMixture40(seed=0).locs, target.locs, rtol=0, atol=0)
    assert not torch.allclose(GaussianMixture40(seed=1).locs, target.locs)
    assert GaussianMixture40.fab().scale.item() == pytest.approx(1.3132616875)


def test_gmm_matches_torch_distributions():
    target = GaussianMixture40(n_modes=7, loc_scale=5.0, scale=1.7, seed=3).double()
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(7, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(target.locs, 1.7), 1),
    )
    x = torch.randn(11, 2, dtype=torch.float64) * 5
    torch.testing.assert_close(target.log_prob(x), mix.log_prob(x))


@pytest.mark.parametrize("scale", [1.0, math.log1p(math.e)])
def test_gmm_log_Z_by_2d_quadrature(scale):
    target = GaussianMixture40(scale=scale).double()
    # Means within +-40; 10 sd margins; spacing 0.2 (error ~ exp(-2 pi^2 s^2 / h^2)).
    x = torch.linspace(-55, 55, 551, dtype=torch.float64)
    log_f = torch.cat([target.log_prob(grid_points(x[i : i + 100], x)) for i in range(0, 551, 100)])
    assert abs(log_trapezoid_2d(log_f, x, x) - target.log_Z) < 1e-8


@pytest.mark.parametrize("device", DEVICES)
def test_gmm_samples(device):
    torch.manual_seed(7)
    target = GaussianMixture40(scale=1.5).to(device)
    s = target.sample((200_000,)).cpu().double()
    locs = target.locs.cpu().double()
    mean = locs.mean(0)
    cov = 1.5**2 * torch.eye(2, dtype=torch.float64) + (locs - mean).T @ (locs - mean) / 40
    for i in range(2):
        assert_expectation(s[:, i], float(mean[i]), f"E x{i}")
        for j in range(i + 1):
            prod = (s[:, i] - mean[i]) * (s[:, j] - mean[j])
            assert_expectation(prod, float(cov[i, j]), f"Cov x{i} x{j}")


# ---------------------------------------------------------------- banana


def test_banana_2d_quadrature():
    target = Banana().double()
    # x1 to +-8 sd (spacing 0.02); x2 covers b (x1^2 - s1^2) +- 12 sigma2 (spacing 0.05).
    x1 = torch.linspace(-16, 16, 1601, dtype=torch.float64)
    x2 = torch.linspace(-14, 140, 3081, dtype=torch.float64)
    assert abs(log_trapezoid_2d(target.log_prob(grid_points(x1, x2)), x1, x2)) < 1e-8


def test_banana_matches_definition():
    target = Banana(dim=4, sigma1=1.5, sigma2=0.7, b=-0.3).double()
    x = torch.randn(9, 4, dtype=torch.float64) * 2
    normal = torch.distributions.Normal
    expected = (
        normal(0.0, 1.5).log_prob(x[:, 0])
        + normal(-0.3 * (x[:, 0] ** 2 - 1.5**2), 0.7).log_prob(x[:, 1])
        + normal(0.0, 1.0).log_prob(x[:, 2:]).sum(-1)
    )
    torch.testing.assert_close(target.log_prob(x), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_banana_samples(device):
    torch.manual_seed(8)
    s = Banana(dim=3).to(device).sample((200_000,)).cpu().double()
    x1, x2, x3 = s.unbind(-1)
    s1, s2, b = 2.0, 1.0, 0.5
    assert_expectation(x1, 0.0, "E x1")
    assert_expectation(x1**2, s1**2, "E x1^2")
    assert_expectation(x2, 0.0, "E x2")
    assert_expectation(x2**2, s2**2 + 2 * b**2 * s1**4, "E x2^2")
    assert_expectation(x1 * x2, 0.0, "E x1 x2")
    assert_expectation(x1**2 * x2, 2 * b * s1**4, "E x1^2 x2")
    assert_expectation(x3, 0.0, "E x3")
    assert_expectation(x3**2, 1.0, "E x3^2")


class _SummedTarget(Target):
    """A subclass breaking the contract: its _log_prob sums over the batch."""

    def __init__(self):
        super().__init__(2)
        self._log_Z = 0.0

    def _log_prob(self, x):
        return -0.5 * x.square().sum()


def test_target_subclass_with_wrong_output_shape_is_refused():
    # issue 10, item 6: the base class checks the subclass's output once per call
    with pytest.raises(ValueError, match=r"_SummedTarget.log_prob: expected .* batch shape \(4,\)"):
        _SummedTarget().log_prob(torch.zeros(4, 2))


def test_double_well_energy_is_minus_log_prob_and_many_well_sums_it():
    well = DoubleWell(a=2.0, b=3.0, c=-0.7, d=4.0).double()
    x = torch.randn(7, 2, dtype=torch.float64)
    torch.testing.assert_close(well.energy(x), -well.log_prob(x))
    target = ManyWell(dim=6, a=2.0, b=3.0, c=-0.7, d=4.0).double()
    y = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(target.log_prob(y), -well.energy(y.reshape(5, 3, 2)).sum(-1))
    with pytest.raises(TypeError):
        ManyWell(dim=4, e=1.0)


def test_register_constants_makes_buffers_that_follow_the_module():
    target = NealFunnel(dim=3)
    target.register_constants(tilt=0.25)
    assert "tilt" in dict(target.named_buffers())
    assert target.double().tilt.dtype == torch.float64
