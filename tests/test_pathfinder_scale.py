"""Pathfinder at scale: the low-rank factor, memory bounds, batching, far modes, whitening.

The low-rank Gaussian is checked against the dense compact BFGS matrix it
factors (exact to round-off), the memory bound by recording every tensor that
torch's dispatcher produces during a ``d = 3000`` run (a ``d x d`` one would be
``9 * 10^6`` elements), and the whitening layers against autograd.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_relax.infer.guides.whitening import (
    CholeskyAffineTransform,
    LowRankAffineTransform,
    whitening_layer,
)
from pyro_relax.infer.pathfinder import pathfinder, pathfinder_for_model
from pyro_relax.infer.pathfinder.gaussian import (
    Gaussian,
    check_memory,
    gaussian_at,
    low_rank_gaussian_at,
)
from pyro_relax.infer.pathfinder.lbfgs import LBFGSHistory

F64 = torch.float64


def history_on_quadratic(d: int, pairs: int, seed: int) -> tuple[LBFGSHistory, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=F64)
    A = m @ m.T / d + 0.1 * torch.eye(d, dtype=F64)
    hist = LBFGSHistory(torch.zeros(d, dtype=F64), size=6)
    for _ in range(pairs):
        s = torch.randn(d, generator=g, dtype=F64)
        assert hist.update(s, A @ s)
    return hist, g


def test_low_rank_factor_matches_dense_d30() -> None:
    d = 30
    hist, g = history_on_quadratic(d, pairs=8, seed=0)
    x = torch.randn(d, generator=g, dtype=F64)
    grad = torch.randn(d, generator=g, dtype=F64)
    H = hist.inverse_hessian()
    dense = gaussian_at(x, grad, H)
    low = low_rank_gaussian_at(x, grad, *hist.factors())
    assert dense is not None and low is not None and low.rank == 12
    torch.testing.assert_close(low.loc, dense.loc, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(low.covariance(), H, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(low.variance, torch.diagonal(H), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(low.scale_tril, dense.scale_tril, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(hist.apply(grad), H @ grad, rtol=1e-10, atol=1e-10)
    z = torch.randn(7, d, generator=g, dtype=F64)
    ref = torch.distributions.MultivariateNormal(dense.loc, scale_tril=dense.scale_tril)
    torch.testing.assert_close(low.log_prob(z), ref.log_prob(z), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dense.log_prob(z), ref.log_prob(z), rtol=1e-9, atol=1e-9)
    u = torch.randn(5, d, generator=g, dtype=F64)
    zs, log_q = low.sample_from(u)
    torch.testing.assert_close(low.whiten(zs), u, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(log_q, ref.log_prob(zs), rtol=1e-9, atol=1e-9)


def test_pathfinder_lbfgs_result_is_low_rank_and_consistent() -> None:
    d = 30
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    cov = q @ torch.diag(torch.logspace(0, 1, d, dtype=F64)) @ q.T
    target = torch.distributions.MultivariateNormal(torch.ones(d, dtype=F64), cov)
    fit = pathfinder(target.log_prob, torch.zeros(d), num_paths=2, num_draws=100,
                     hessian="lbfgs", generator=torch.Generator().manual_seed(0))
    assert fit.gaussian.rank is not None and fit.gaussian.rank <= 12
    L = fit.scale_tril
    torch.testing.assert_close(L @ L.T, fit.gaussian.covariance())
    torch.testing.assert_close(fit.variance, L.square().sum(-1))
    z, log_q = fit.draw(6, generator=torch.Generator().manual_seed(2))
    ref = torch.distributions.MultivariateNormal(fit.loc, scale_tril=L)
    torch.testing.assert_close(log_q, ref.log_prob(z))


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_dense_matrix_at_d3000() -> None:
    # An AR(1) Gaussian with an O(d) log density; 2 paths x 100 draws pool 600,000
    # numbers, the ELBO draws 2 x 25 x 3000; any d x d matrix would be 9,000,000.
    d = 3000
    sd = torch.logspace(-0.3, 0.3, d, dtype=F64)

    def log_p(z: torch.Tensor) -> torch.Tensor:
        x = z / sd
        return -0.5 * (x[..., 0] ** 2 + ((x[..., 1:] - 0.5 * x[..., :-1]) ** 2 / 0.75).sum(-1))

    with LargestTensor() as mode:
        fit = pathfinder(log_p, torch.zeros(d), num_paths=2, num_draws=100, max_iters=15,
                         generator=torch.Generator().manual_seed(0))
    assert fit.gaussian.rank is not None and fit.gaussian.basis is not None
    assert fit.variance.shape == (d,) and bool((fit.variance > 0).all())
    assert mode.largest <= 2 * 100 * d  # the pooled draws
    with LargestTensor() as mode:
        fit.scale_tril  # noqa: B018 - on demand, the dense factor is made
    assert mode.largest >= d * d  # the check above can fail
    with pytest.raises(ValueError, match=r"3000 x 3000 float64\) needs about 0.2 GB"):
        fit.gaussian.dense_scale_tril(limit=1e8)


def test_memory_check_raises_before_allocating() -> None:
    with pytest.raises(ValueError, match=r"pathfinder: the pooled draws \(4000 x 100000 float64"):
        pathfinder(lambda z: -0.5 * (z * z).sum(-1), torch.zeros(100_000), num_paths=4,
                   num_draws=1000)
    with pytest.raises(ValueError, match="needs about 3.2 GB, above the limit of 1.0 GB"):
        check_memory((20_000, 20_000), "f", "x", limit=1e9)


def test_paths_are_evaluated_as_one_batch() -> None:
    # 4 paths in lockstep: each call of log p carries the rows of several paths.
    rows: list[int] = []

    def log_p(z: torch.Tensor) -> torch.Tensor:
        rows.append(z.shape[0])
        return -0.5 * (z * z).sum(-1)

    fit = pathfinder(log_p, torch.zeros(5), num_paths=4, num_draws=50, hessian="lbfgs",
                     generator=torch.Generator().manual_seed(0))
    assert fit.num_evals == sum(rows)
    assert max(rows[:-1]) >= 4 * 25  # the 4 paths' ELBO draws in one call
    assert len(rows) < sum(p.num_iters for p in fit.paths) * 2


def test_speed_budget_in_evaluations_d30() -> None:
    # A d = 30 Gaussian with the exact Hessian: Newton reaches the mode at once and the
    # paths stop after `patience` iterations; the evaluations stay a few hundred per path
    # besides the 4 x 1000 pooled draws.
    d = 30
    prec = torch.diag(torch.logspace(-1, 1, d, dtype=F64))
    fit = pathfinder(lambda z: -0.5 * ((z - 3) @ prec * (z - 3)).sum(-1), torch.zeros(d),
                     generator=torch.Generator().manual_seed(0))
    assert fit.num_evals - 4 * 1000 < 4 * 300
    torch.testing.assert_close(fit.loc, torch.full((d,), 3.0, dtype=F64))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:_ModelLayout")
def test_growth_curve_intercept_far_from_origin() -> None:
    # A rats-like growth curve: 30 groups x 5 times, intercepts around 242 with flat
    # (Uniform(0, 100)) priors on the three scales. From 0, L-BFGS used to fall into the
    # funnel s_a -> 0 with mu_a near 0; Newton's curvature-scaled steps reach the mode.
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([8.0, 15.0, 22.0, 29.0, 36.0], dtype=F64) - 22.0
    a0 = 242.5 + 14.6 * torch.randn(30, generator=g, dtype=F64)
    b0 = 6.19 + 0.51 * torch.randn(30, generator=g, dtype=F64)
    y = a0[:, None] + b0[:, None] * t + 6.1 * torch.randn(30, 5, generator=g, dtype=F64)

    def model() -> None:
        mu_a = pyro.sample("mu_a", dist.Normal(torch.tensor(0.0, dtype=F64), 1e4))
        mu_b = pyro.sample("mu_b", dist.Normal(torch.tensor(0.0, dtype=F64), 1e4))
        s_a, s_b, s_y = (pyro.sample(n, dist.Uniform(torch.tensor(0.0, dtype=F64), 100.0))
                         for n in ("s_a", "s_b", "s_y"))
        with pyro.plate("groups", 30, dim=-1):
            a = pyro.sample("a", dist.Normal(mu_a, s_a))
            b = pyro.sample("b", dist.Normal(mu_b, s_b))
            loc = a[..., None] + b[..., None] * t
            pyro.sample("y", dist.Normal(loc, s_y[..., None, None]).to_event(1), obs=y)

    fit = pathfinder_for_model(model, num_paths=4, num_draws=200,
                               generator=torch.Generator().manual_seed(0))
    # The posterior of mu_a: about mean(y) = 242 +- s_a / sqrt(30) ~ 2.8; allow 3 sd.
    mu_a = fit.samples["mu_a"]
    assert abs(float(mu_a.mean()) - float(y.mean())) < 3 * 2.8
    assert max(p.elbo for p in fit.paths) > -700  # the mode's ELBO (-590); the funnel's < -1300


@pytest.mark.parametrize("k", [0, 3])
def test_low_rank_whitening_layer_matches_autograd(k: int) -> None:
    d = 7
    g = torch.Generator().manual_seed(k)
    Q, _ = torch.linalg.qr(torch.randn(d, max(k, 1), generator=g, dtype=F64))
    core = torch.eye(k, dtype=F64) + 0.3 * torch.randn(k, k, generator=g, dtype=F64).tril(-1)
    layer = LowRankAffineTransform(torch.randn(d, generator=g, dtype=F64),
                                   torch.rand(d, generator=g, dtype=F64) + 0.5, Q[:, :k], core)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=F64))
    u = torch.randn(4, d, generator=g, dtype=F64)
    x = layer(u)
    torch.testing.assert_close(layer.inv(x), u)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v), u[0])
    ladj = layer.log_abs_det_jacobian(u, x)
    assert ladj.shape == (4,)
    torch.testing.assert_close(ladj[0], torch.linalg.slogdet(jac)[1])
    torch.testing.assert_close(layer.variance, jac.square().sum(-1))
    (x.sum() + ladj.sum()).backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_whitening_layer_picks_dense_or_low_rank() -> None:
    d, k = 40, 4
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))
    q = Gaussian(torch.randn(d, generator=g, dtype=F64), torch.rand(d, generator=g, dtype=F64)
                 + 0.5, Q, torch.eye(k, dtype=F64) + 0.2 * torch.ones(k, k, dtype=F64).tril(-1))
    dense, low = whitening_layer(q), whitening_layer(q, max_dense_dim=10)
    assert isinstance(dense, CholeskyAffineTransform) and isinstance(low, LowRankAffineTransform)
    u = torch.randn(5, d, generator=g, dtype=F64)
    # same Gaussian, different square roots: same log q at the same points
    z = low(u)
    lq_low = -0.5 * u.square().sum(-1) - low.log_abs_det_jacobian(u, z)
    ud = dense.inv(z)
    lq_dense = -0.5 * ud.square().sum(-1) - dense.log_abs_det_jacobian(ud, z)
    torch.testing.assert_close(lq_low, lq_dense)
    torch.testing.assert_close(q.sample_from(u)[0], z)
    with pytest.raises(TypeError, match="expected a Pathfinder Gaussian"):
        whitening_layer((q.loc, q.core))
    with pytest.raises(ValueError, match="expected sqrt_diag"):
        LowRankAffineTransform(q.loc, q.sqrt_diag[:3], Q, torch.eye(k, dtype=F64))
    fit = pathfinder(lambda z: -0.5 * (z * z).sum(-1), torch.zeros(3), num_paths=2,
                     num_draws=20, generator=torch.Generator().manual_seed(0))
    assert isinstance(whitening_layer(fit), CholeskyAffineTransform)  # a result works too
    ladj = whitening_layer(fit).log_abs_det_jacobian(u[:, :3], None)
    assert not math.isnan(float(ladj[0].detach()))


def test_scaling_benchmark_smoke(tmp_path: object) -> None:
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    import pathfinder_scaling

    out = Path(str(tmp_path)) / "pf.json"
    pathfinder_scaling.main(["--dims", "3", "--num-paths", "2", "--num-draws", "20",
                             "--json", str(out)])
    rows = json.loads(out.read_text())["pathfinder"]
    assert rows[0]["d"] == 3 and rows[0]["num_evals"] > 40 and rows[0]["peak_rss_mb"] > 0
