"""AutoHierarchicalGuide, the plate structure it reads and its conditional Gaussian blocks.

The statistical tests use centered Gaussian hierarchies whose posterior is known
by quadrature: ``theta_j | mu, tau, y`` is Gaussian in closed form and
``p(mu, log tau | y)`` is two-dimensional, integrated on a grid.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal

from pyro_relax.diagnostics.psis import psis_khat
from pyro_relax.infer.guides.conditional import ConditionalGaussianBlock
from pyro_relax.infer.guides.flow import AutoFlowGuide
from pyro_relax.infer.guides.hierarchy import conditional_prior, latent_structure
from pyro_relax.infer.guides.layout import unpack_latent
from pyro_relax.infer.guides.structured import AutoHierarchicalGuide

F64 = torch.float64
EIGHT_Y = torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12], dtype=F64)
EIGHT_S = torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18], dtype=F64)


@pytest.fixture(autouse=True)
def _clean_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def centered_model(y: torch.Tensor, s: torch.Tensor):
    """``mu ~ N(0, 5)``, ``tau ~ HalfNormal(5)``, ``theta_j ~ N(mu, tau)``, ``y_j ~ N(theta_j, s_j)``."""

    def model():
        mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
        tau = pyro.sample("tau", dist.HalfNormal(y.new_tensor(5.0)))
        with pyro.plate("J", y.shape[0]):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            pyro.sample("y", dist.Normal(theta, s), obs=y)

    return model


def quadrature(y: torch.Tensor, s: torch.Tensor, n: int = 800):
    """Posterior means and sds of ``(mu, log tau, theta)`` and ``log Z``, by a grid over (mu, log tau)."""
    mus = torch.linspace(-25.0, 25.0, n, dtype=F64)
    lts = torch.linspace(-14.0, 4.5, n, dtype=F64)
    mu, lt = torch.meshgrid(mus, lts, indexing="ij")
    tau = lt.exp()
    lp = dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfNormal(5.0).log_prob(tau) + lt
    lp = lp + dist.Normal(mu[..., None], (tau[..., None] ** 2 + s**2).sqrt()).log_prob(y).sum(-1)
    log_z = torch.logsumexp(lp.flatten(), 0) + math.log((mus[1] - mus[0]) * (lts[1] - lts[0]))
    w = (lp - lp.max()).exp()
    w = (w / w.sum())[..., None]
    prec = 1 / tau[..., None] ** 2 + 1 / s**2
    m = (mu[..., None] / tau[..., None] ** 2 + y / s**2) / prec
    first = torch.stack([mu, lt], -1)
    e_g = (w * first).sum((0, 1))
    sd_g = ((w * first**2).sum((0, 1)) - e_g**2).sqrt()
    e_t = (w * m).sum((0, 1))
    sd_t = ((w * (1 / prec + m**2)).sum((0, 1)) - e_t**2).sqrt()
    return torch.cat([e_g, e_t]), torch.cat([sd_g, sd_t]), float(log_z)


def fit(guide, steps: int, lr: float, particles: int = 16, seed: int = 0) -> None:
    """Adam on the reparametrized ELBO (lr decayed tenfold, gradients clipped at norm 10)."""
    pyro.set_rng_seed(seed)
    guide()
    params = list(guide.parameters())
    optim = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, 0.1 ** (1 / steps))
    for _ in range(steps):
        z, log_q = guide.rsample_unconstrained(particles)
        loss = -(guide.log_joint_unconstrained(z) - log_q).mean()
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optim.step()
        sched.step()


def summary(guide, means, sds, n: int = 4000, seed: int = 1) -> dict[str, float]:
    """Worst |mean error| in posterior sds, worst |sd ratio - 1|, PSIS k-hat and the ELBO."""
    pyro.set_rng_seed(seed)
    z, log_q = guide.sample_unconstrained(n)
    log_w = guide.log_joint_unconstrained(z) - log_q
    _, khat = psis_khat(log_w)
    z = z.to(F64)
    return {
        "mean_err": float(((z.mean(0) - means) / sds).abs().max()),
        "sd_err": float((z.std(0) / sds - 1).abs().max()),
        "khat": float(khat),
        "elbo": float(log_w.mean()),
    }


# -- the plate structure -----------------------------------------------------------


def test_structure_splits_globals_and_blocks_in_packing_order():
    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("c", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("county", 4):
            pyro.sample("a", dist.Normal(mu, 1.0))
            pyro.sample("w", dist.Dirichlet(torch.ones(3)))
        with pyro.plate("g", 3, dim=-2), pyro.plate("t", 5, dim=-1):
            pyro.sample("x", dist.Normal(0.0, 1.0))

    guide = AutoDiagonalNormal(model)
    guide()
    s = latent_structure(guide.prototype_trace)
    assert s.global_sites == ("mu", "c") and s.global_index.tolist() == [0, 1, 2]
    by_sites = {b.sites: b for b in s.blocks}
    county = by_sites[("a", "w")]
    assert (county.num_groups, county.group_dim) == (4, 3)  # a, and w's 2 unconstrained coords
    x = by_sites[("x",)]
    assert (x.plates, x.num_groups, x.group_dim) == (("g", "t"), 15, 1)
    # each row holds one member's coordinates: unpack a flat arange and compare
    values = unpack_latent(guide, torch.arange(float(s.latent_dim)))
    assert county.index[2].tolist()[0] == int(values["a"][2])
    assert county.index[2].tolist()[1:] == values["w"][2].long().tolist()
    assert x.index[7].tolist() == [int(values["x"][1, 2])]
    assert sorted(s.order().tolist()) == list(range(s.latent_dim))


def test_structure_rejects_a_non_trace():
    with pytest.raises(TypeError, match="expected a Pyro trace"):
        latent_structure({"mu": 1})


def test_conditional_prior_reads_loc_and_scale_given_globals():
    def model():
        tau = pyro.sample("tau", dist.LogNormal(0.0, 1.0))
        with pyro.plate("J", 3):
            pyro.sample("theta", dist.Normal(2.0, tau))
            pyro.sample("rate", dist.Gamma(2.0, tau))  # not location-scale on the reals
    got = conditional_prior(model, {"tau": torch.tensor(0.25)})
    assert set(got) == {"theta"}
    loc, scale = got["theta"]
    assert loc.tolist() == [2.0] * 3 and scale.tolist() == [0.25] * 3
    with pytest.raises(TypeError, match="expected a callable"):
        conditional_prior(3, {})


# -- the conditional Gaussian block ----------------------------------------------------


@pytest.mark.parametrize("m", [1, 3])
def test_block_log_q_is_the_gaussian_density_of_its_precision(m):
    torch.manual_seed(0)
    block = ConditionalGaussianBlock(torch.randn(4, m, dtype=F64), 0.7, num_features=2)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    h = torch.randn(5, 2, dtype=F64)
    eps = torch.randn(5, 4, m, dtype=F64)
    u, log_q = block(h, eps)
    prec, rhs = block.precision_and_mean(h)
    mean = torch.linalg.solve(prec, rhs.unsqueeze(-1)).squeeze(-1)
    ref = dist.MultivariateNormal(mean, precision_matrix=prec).log_prob(u).sum(-1)
    assert torch.allclose(log_q, ref, atol=1e-10)


def test_block_starts_at_its_loc_and_scale_and_checks_inputs():
    block = ConditionalGaussianBlock(torch.ones(3, 2), 0.5, num_features=1)
    prec, rhs = block.precision_and_mean(torch.zeros(1))
    assert torch.allclose(prec, 4 * torch.eye(2).expand(3, 2, 2))
    assert torch.allclose(rhs / 4, torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"expected a loc of shape \(G, m\)"):
        ConditionalGaussianBlock(torch.ones(3), 0.5, 1)
    with pytest.raises(ValueError, match="positive finite scale"):
        ConditionalGaussianBlock(torch.ones(3, 1), -1.0, 1)
    with pytest.raises(ValueError, match="expected shapes"):
        block.set_prior_expert(torch.zeros(2, 2), torch.zeros(2, 2, 1), torch.zeros(2, 2),
                               torch.zeros(2, 2, 1))


# -- the guide ----------------------------------------------------------------------


def test_guide_checks_its_arguments():
    model = centered_model(EIGHT_Y, EIGHT_S)
    with pytest.raises(TypeError, match="callable"):
        AutoHierarchicalGuide(3)
    with pytest.raises(ValueError, match="num_layers"):
        AutoHierarchicalGuide(model, num_layers=-1)
    with pytest.raises(ValueError, match="global_df"):
        AutoHierarchicalGuide(model, global_df=0.0)
    with pytest.raises(RuntimeError, match="run the guide once"):
        _ = AutoHierarchicalGuide(model).structure


def test_guide_starts_exact_on_the_locals_of_a_centered_hierarchy():
    """At the start, q(theta | mu, tau) is already the exact conditional posterior."""
    guide = AutoHierarchicalGuide(centered_model(EIGHT_Y, EIGHT_S))
    guide()
    g = torch.tensor([[4.0, 1.0], [-1.0, -3.0], [20.0, 3.0]], dtype=F64)
    [(mean, prec)] = guide.local_conditionals(g)
    tau = g[:, 1:].exp()
    true_prec = 1 / tau**2 + 1 / EIGHT_S**2
    true_mean = (g[:, :1] / tau**2 + EIGHT_Y / EIGHT_S**2) / true_prec
    assert torch.allclose(prec[..., 0, 0], true_prec, rtol=1e-6)
    assert torch.allclose(mean[..., 0], true_mean, rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected globals of shape \(..., 2\)"):
        guide.local_conditionals(torch.zeros(3))


def test_guide_runs_under_vectorized_particles_and_float32():
    y, s = EIGHT_Y.float(), EIGHT_S.float()
    guide = AutoHierarchicalGuide(centered_model(y, s))
    loss = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    value = loss.differentiable_loss(centered_model(y, s), guide)
    value.backward()
    assert torch.isfinite(value)
    assert all(p.dtype == torch.float32 for p in guide.parameters())
    assert all(p.grad is not None for p in guide.blocks.parameters())
    assert guide.structure.describe() == "globals mu, tau (2 dims); plate J: theta (8 x 1)"


def test_guide_without_globals_or_without_plates():
    def locals_only():
        with pyro.plate("J", 4):
            pyro.sample("x", dist.Normal(1.0, 2.0))

    def globals_only():
        pyro.sample("x", dist.Normal(1.0, 2.0).expand([3]).to_event(1))

    for model, d in ((locals_only, 4), (globals_only, 3)):
        pyro.clear_param_store()
        guide = AutoHierarchicalGuide(model)
        z, log_q = guide.sample_unconstrained(6)
        assert z.shape == (6, d) and log_q.shape == (6,) and torch.isfinite(log_q).all()


def test_parameters_grow_linearly_with_the_groups():
    counts = []
    for groups in (50, 100, 200):
        pyro.clear_param_store()
        y = torch.zeros(groups, dtype=F64)
        guide = AutoHierarchicalGuide(centered_model(y, torch.ones_like(y)))
        guide()
        counts.append(sum(p.numel() for p in guide.parameters()))
    # a, b, p, r, log_l, l_off (m = 1) and the slopes A, B, P (m x 2) and R (2): 14 per group
    assert counts[1] - counts[0] == 50 * 14 and counts[2] - counts[1] == 100 * 14


def test_importance_weights_are_unbiased_for_the_evidence():
    """E_q[p/q] = p(y) checks that log q is the exact density of the draws."""
    y, s = EIGHT_Y / 5, EIGHT_S / 5
    model = centered_model(y, s)
    _, _, log_z = quadrature(y, s)
    guide = AutoHierarchicalGuide(model)
    fit(guide, 300, 0.02)
    diag = guide.importance_diagnostics(4000)
    # log_Z_se is the delta-method Monte Carlo error of log mean w (4000 draws)
    assert abs(diag["log_Z"] - log_z) < 4 * diag["log_Z_se"] + 0.02
