"""Tests of Pathfinder (pyro_relax.infer.pathfinder).

Gaussian targets: the exact-Hessian approximation at any iterate is the target
itself, so ``loc`` and ``scale_tril`` must match to round-off (``1e-6`` relative).
For the PSIS-resampled draws, whitened by the true covariance (coordinates
``w = L^{-1}(z - mean)`` are iid ``N(0, 1)`` under the target), the Monte Carlo
error is stated at each test. Statistical tests use fixed generators.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_relax.infer.pathfinder import PathfinderResult, pathfinder, pathfinder_for_model
from pyro_relax.infer.pathfinder.lbfgs import LBFGSHistory, strong_wolfe
from pyro_relax.testing.fuzz import fuzz_settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.posteriordb import load_model  # noqa: E402

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gaussian_target(d: int, cond: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, object]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    eig = torch.logspace(0.0, math.log10(cond), d, dtype=F64)
    cov = q @ torch.diag(eig) @ q.T
    cov = 0.5 * (cov + cov.T)
    mean = torch.randn(d, generator=g, dtype=F64)
    target = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return mean, cov, target.log_prob


def whitened(draws: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    chol = torch.linalg.cholesky(cov)
    return torch.linalg.solve_triangular(chol, (draws - mean).T, upper=False).T


def check_draws(fit: PathfinderResult, mean: torch.Tensor, cov: torch.Tensor, n: int) -> None:
    # n draws resampled with replacement from N = num_paths * n pooled iid target draws
    # (equal weights): a whitened mean has se sqrt(1/n + 1/N) <= sqrt(1.25 / n), a
    # whitened second-moment entry about sqrt(2) times that. 5 se per entry.
    w = whitened(fit.draws, mean, cov)
    se = math.sqrt(1.25 / n)
    assert w.mean(0).abs().max() < 5 * se
    second = w.T @ w / n
    eye = torch.eye(mean.shape[0], dtype=F64)
    assert (second - eye).abs().max() < 5 * math.sqrt(2) * se


@pytest.mark.parametrize(("d", "cond"), [(5, 10.0), (10, 1e5)], ids=["d5", "d10-cond1e5"])
def test_gaussian_target_exact_hessian(d: int, cond: float) -> None:
    mean, cov, log_p = gaussian_target(d, cond, seed=d)
    n = 1000
    fit = pathfinder(log_p, torch.zeros(d), num_paths=4, num_draws=n,
                     generator=torch.Generator().manual_seed(0))
    assert fit.loc.dtype == F64 and fit.scale_tril.shape == (d, d)
    torch.testing.assert_close(fit.loc, mean, rtol=0, atol=1e-6 * math.sqrt(cond))
    got = fit.scale_tril @ fit.scale_tril.T
    assert (got - cov).abs().max() < 1e-6 * cov.abs().max()
    # The normalized target at its exact Gaussian: every log weight is 0 (log Z = 0).
    assert abs(fit.elbo) < 1e-8
    assert torch.isfinite(fit.path_elbos).all()
    check_draws(fit, mean, cov, n)


def test_gaussian_target_lbfgs_factors() -> None:
    # Without the exact Hessian the L-BFGS factors are only an approximation; the PSIS
    # resampling corrects the rest. 4000 pooled draws with k-hat < 0.5.
    d = 5
    mean, cov, log_p = gaussian_target(d, 10.0, seed=3)
    n = 1000
    fit = pathfinder(log_p, torch.zeros(d), num_paths=4, num_draws=n, hessian="lbfgs",
                     generator=torch.Generator().manual_seed(0))
    assert {k for p in fit.paths for k in p.kinds} <= {"none", "lbfgs", "diagonal"}
    assert fit.khat < 0.5
    # The draws are resampled with unequal weights: allow an ESS of half the pooled draws,
    # i.e. se sqrt(1/n + 2/N) <= sqrt(1.5 / n); checked at 5 se on whitened coordinates.
    w = whitened(fit.draws, mean, cov)
    se = math.sqrt(1.5 / n)
    assert w.mean(0).abs().max() < 5 * se
    assert (w.T @ w / n - torch.eye(d, dtype=F64)).abs().max() < 5 * math.sqrt(2) * se
    # The best single Gaussian is close but not exact.
    assert (fit.loc - mean).abs().max() < 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_runs_in_float64_on_the_device_of_init(device: str) -> None:
    mean, cov, log_p = gaussian_target(3, 4.0, seed=2)
    mean_d, prec_d = mean.to(device), torch.linalg.inv(cov).to(device)

    def log_p_dev(z: torch.Tensor) -> torch.Tensor:
        assert z.device.type == device and z.dtype == F64
        diff = z - mean_d
        return (-0.5 * (diff @ prec_d) * diff).sum(-1).float()  # float32 out: cast back

    fit = pathfinder(log_p_dev, torch.zeros(3, device=device, dtype=torch.float32),
                     num_paths=2, num_draws=50, generator=torch.Generator(device).manual_seed(0))
    for t in (fit.loc, fit.scale_tril, fit.draws, fit.log_weights, fit.path_elbos):
        assert t.device.type == device and t.dtype == F64
    z, log_q = fit.draw(5, generator=torch.Generator(device).manual_seed(1))
    assert z.device.type == device and log_q.device.type == device
    torch.testing.assert_close(fit.loc.cpu(), mean, rtol=0, atol=1e-3)  # float32 density


def test_result_draw_and_importance_weights() -> None:
    mean, cov, log_p = gaussian_target(3, 4.0, seed=1)
    fit = pathfinder(log_p, torch.zeros(3), num_paths=1, num_draws=100,
                     generator=torch.Generator().manual_seed(0))
    z, log_q = fit.draw(50, generator=torch.Generator().manual_seed(1))
    assert z.shape == (50, 3) and log_q.shape == (50,)
    ref = torch.distributions.MultivariateNormal(fit.loc, scale_tril=fit.scale_tril)
    torch.testing.assert_close(log_q, ref.log_prob(z))
    z, log_w = fit.importance_weights(log_p, 40)
    assert z.shape == (40, 3)
    assert log_w.abs().max() < 1e-8  # exact approximation of a normalized density
    with pytest.raises(ValueError, match="NaN"):
        fit.importance_weights(lambda z: torch.full(z.shape[:-1], math.nan, dtype=F64), 10)
    with pytest.raises(ValueError, match="n >= 1"):
        fit.draw(0)


def test_two_mode_mixture_draws_cover_both_modes() -> None:
    def log_p(z: torch.Tensor) -> torch.Tensor:
        x = z[..., 0]
        comps = torch.stack([-0.5 * ((x + 3) / 0.5) ** 2, -0.5 * ((x - 3) / 0.5) ** 2])
        return torch.logsumexp(comps, 0)

    # Three paths start near the right mode, one near the left: the mixture of the paths'
    # Gaussians puts 3/4 of the pooled draws right; PSIS weights bring it back to 1/2.
    init = torch.tensor([[-2.0], [1.0], [2.0], [4.0]], dtype=F64)
    n = 2000
    fit = pathfinder(log_p, init, num_paths=4, num_draws=n,
                     generator=torch.Generator().manual_seed(0))
    right = float((fit.draws[:, 0] > 0).double().mean())
    # Importance weights 2/3 (right) and 2 (left): Kish ESS = (sum w)^2 / sum w^2 = 0.75 N
    # with N = 8000 pooled draws; the resampled fraction has se about
    # sqrt(0.25 / n + 0.25 / 6000) ~ 0.013. Allow 6 se.
    assert abs(right - 0.5) < 0.08
    left_means = fit.draws[fit.draws[:, 0] < 0, 0].mean()
    assert abs(float(left_means) + 3.0) < 0.1  # se 0.5 / sqrt(1000) = 0.016


def test_no_finite_start_raises() -> None:
    def log_p(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z.sum(-1) > 100.0, 0.0, -math.inf).to(z.dtype)

    with pytest.raises(ValueError, match="no finite point found from 3 initial points"):
        pathfinder(log_p, torch.zeros(2), num_paths=3, num_draws=20)
    with pytest.raises(ValueError, match="no finite point found"):
        pathfinder(lambda z: torch.full(z.shape[:-1], math.nan, dtype=z.dtype),
                   torch.zeros(2), num_paths=2, num_draws=20)


def test_model_with_no_finite_start_raises() -> None:
    def model() -> None:
        lo = pyro.sample("lo", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Uniform(lo - 10.0, lo - 9.0), obs=torch.tensor(0.5))

    with pytest.raises(ValueError, match="no finite point found from 2 initial points"):
        pathfinder_for_model(model, num_paths=2, num_draws=20)


def test_model_conjugate_posterior_and_samples() -> None:
    # y_i ~ N(mu, 1), mu ~ N(0, 2^2): posterior N(sum y / (n + 1/4), 1 / (n + 1/4)).
    y = torch.tensor([0.3, -0.2, 1.1, 0.7], dtype=F64)

    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), 2.0))
        s = pyro.sample("s", dist.LogNormal(torch.tensor(0.0), 0.3))
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        pyro.sample("z", dist.Normal(s, 0.1), obs=torch.tensor(1.2))

    fit = pathfinder_for_model(model, num_paths=2, num_draws=500,
                               generator=torch.Generator().manual_seed(0))
    prec = 4 + 0.25
    assert abs(float(fit.loc[0]) - float(y.sum()) / prec) < 1e-6
    assert abs(float(fit.scale_tril[0, 0]) ** 2 - 1 / prec) < 1e-6
    assert fit.samples is not None and fit.constrain is not None
    assert fit.samples["mu"].shape == (500,) and fit.samples["s"].shape == (500,)
    assert fit.samples["mu"].dtype == F64
    assert bool((fit.samples["s"] > 0).all())
    z, _ = fit.draw(7)
    assert fit.constrain(z)["s"].shape == (7,)
    assert torch.get_default_dtype() == torch.float32  # restored


def test_model_that_does_not_vectorize_falls_back() -> None:
    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), 1.0))
        loc = mu.reshape(())  # fails under a particle plate with two rows or more
        pyro.sample("y", dist.Normal(loc, 1.0), obs=torch.tensor(1.0))

    with pytest.warns(RuntimeWarning, match="does not vectorize"):
        fit = pathfinder_for_model(model, num_paths=1, num_draws=50,
                                   generator=torch.Generator().manual_seed(0))
    assert abs(float(fit.loc[0]) - 0.5) < 1e-6  # posterior N(1/2, 1/2)


def test_centered_eight_schools_finite_approximation() -> None:
    # No mode (log p -> inf as tau -> 0): each path keeps its best-ELBO iterate.
    module = load_model("eight_schools_centered")
    fit = pathfinder_for_model(module.model, num_paths=2, num_draws=200,
                               generator=torch.Generator().manual_seed(0))
    assert fit.loc.shape == (10,) and torch.isfinite(fit.loc).all()
    assert torch.isfinite(fit.scale_tril).all() and math.isfinite(fit.elbo)
    assert bool((torch.diagonal(fit.scale_tril) > 0).all())
    assert bool((fit.samples["tau"] > 0).all()) and torch.isfinite(fit.draws).all()
    for path in fit.paths:
        assert path.best_iter < len(path.elbos)
        assert path.elbo == max(path.elbos)


def test_line_search_meets_strong_wolfe_and_backs_off_from_inf() -> None:
    a = torch.tensor([1.0, 100.0], dtype=F64)

    def fg(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if float(x[0]) > 0.5:  # a wall: beyond it the objective is not finite
            return torch.tensor(math.inf, dtype=F64), torch.full_like(x, math.nan)
        return 0.5 * (a * x * x).sum(), a * x

    x = torch.tensor([-1.0, 0.01], dtype=F64)
    f0, g0 = fg(x)
    p = -g0
    for step in (1.0, 10.0):  # the first trial is past the wall for step=10
        res, evals = strong_wolfe(fg, x, f0, g0, p, step)
        assert res is not None and evals >= 1
        d0 = float(g0 @ p)
        assert float(res.f) <= float(f0) + 1e-4 * res.step * d0
        assert abs(float(res.g @ p)) <= 0.9 * abs(d0)
    res, evals = strong_wolfe(fg, x, f0, g0, g0, 1.0)  # not a descent direction
    assert res is None and evals == 0


@fuzz_settings(max_examples=10, slow_examples=200)
@given(d=st.integers(1, 8), pairs=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_lbfgs_inverse_hessian_secant_and_positive(d: int, pairs: int, seed: int) -> None:
    # On a random positive-definite quadratic every pair passes the curvature test; the
    # compact BFGS matrix is symmetric positive definite and meets the last secant equation.
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=F64)
    A = m @ m.T + 0.1 * torch.eye(d, dtype=F64)
    hist = LBFGSHistory(torch.zeros(d, dtype=F64), size=6)
    for _ in range(pairs):
        s = torch.randn(d, generator=g, dtype=F64)
        assert hist.update(s, A @ s)
    H = hist.inverse_hessian()
    torch.testing.assert_close(H, H.T)
    assert bool((torch.linalg.eigvalsh(H) > 0).all())
    torch.testing.assert_close(H @ hist.y[-1], hist.s[-1], rtol=1e-6, atol=1e-8)
    assert len(hist) == min(pairs, 6)
    assert not hist.update(torch.ones(d, dtype=F64), -torch.ones(d, dtype=F64))  # s.y < 0


def _quad(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z * z).sum(-1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_paths": 0}, ValueError, "num_paths >= 1"),
        ({"num_paths": 1.5}, TypeError, "int num_paths"),
        ({"max_iters": 0}, ValueError, "max_iters >= 1"),
        ({"num_draws": 0}, ValueError, "num_draws >= 1"),
        ({"num_paths": 1, "num_draws": 10}, ValueError, "num_paths \\* num_draws >= 25"),
        ({"init_radius": -1.0}, ValueError, "init_radius >= 0"),
        ({"hessian": "bfgs"}, ValueError, "hessian in"),
        ({"num_elbo_draws": 1}, ValueError, "num_elbo_draws >= 2"),
        ({"patience": 0}, ValueError, "patience >= 1"),
        ({"history_size": 0}, ValueError, "history_size >= 1"),
        ({"ftol": float("nan")}, ValueError, "finite ftol"),
        ({"generator": 3}, TypeError, "torch.Generator"),
        ({"init": torch.tensor([0.0, math.nan])}, ValueError, "finite init"),
        ({"init": torch.zeros(2, 2, 2)}, ValueError, "shape \\(d,\\) or"),
        ({"init": torch.zeros(3, 2)}, ValueError, "num_paths=4"),
        ({"init": torch.zeros(2, dtype=torch.long)}, TypeError, "floating init"),
        ({"init": [0.0, 0.0]}, TypeError, "torch.Tensor"),
        ({"log_p": 3}, TypeError, "callable log_p"),
        ({"log_p": lambda z: z}, ValueError, "expected log_p to map shape"),
    ],
)
def test_bad_inputs_raise(kwargs: dict, error: type, match: str) -> None:
    args = {"log_p": _quad, "init": torch.zeros(2), **kwargs}
    with pytest.raises(error, match=match):
        pathfinder(args.pop("log_p"), args.pop("init"), **args)


def test_model_bad_inputs_raise() -> None:
    def model() -> None:
        pyro.sample("mu", dist.Normal(torch.tensor(0.0), 1.0))

    with pytest.raises(TypeError, match="callable"):
        pathfinder_for_model(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating torch.dtype"):
        pathfinder_for_model(model, dtype=torch.int64)
    with pytest.raises(ValueError, match="d=1"):
        pathfinder_for_model(model, init=torch.zeros(3))
    with pytest.raises(ValueError, match="num_paths >= 1"):
        pathfinder_for_model(model, num_paths=0)
