"""Generative surjections (augment, dequantization, generative abs/sort) and the random permutation.

Closed forms: uniform dequantization ``V = -D log K``; ``decode(encode(x)) = x``;
the bound equals ``log p(x)`` sample by sample when ``q`` is the exact posterior;
its mean falls short of ``log p(x)`` by ``KL(q || posterior)``; the importance-weighted
estimate rises with the number of particles towards ``log p(x)``.

Monte Carlo tolerances are 5 standard errors, ``se = sd / sqrt(n)`` of the
averaged quantity (a false alarm rate below 1e-6 per comparison).
"""

import itertools
import math

import pyro.distributions as dist
import pytest
import torch
from scipy.stats import beta as scipy_beta

from pyro_relax.distributions.flow import FlowDistribution
from pyro_relax.surjections.augment import AugmentSurjection, ConditionalNormal
from pyro_relax.surjections.dequantization import UniformDequantization, VariationalDequantization
from pyro_relax.surjections.generative_abs import GenerativeAbs
from pyro_relax.surjections.generative_sort import GenerativeSort, plackett_luce_log_prob
from pyro_relax.surjections.permutation import StochasticPermutation

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def set_linear_gaussian(cn: ConditionalNormal, loc_weight, loc_bias, log_scale) -> None:
    """Make a ``hidden=()`` ConditionalNormal into ``N(W h + b, diag(exp(log_scale))^2)``."""
    lin = cn.net.net[-1]
    out = cn.out_features
    bound = cn.LOG_SCALE_BOUND
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[:out] = torch.as_tensor(loc_weight, dtype=lin.weight.dtype)
        lin.bias[:out] = torch.as_tensor(loc_bias, dtype=lin.bias.dtype)
        ls = torch.as_tensor(log_scale, dtype=lin.bias.dtype)
        lin.bias[out:] = bound * torch.atanh(ls / bound)


def mc_mean(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over dimension 0."""
    n = samples.shape[0]
    return samples.mean(0), samples.std(0) / math.sqrt(n)


# --------------------------------------------------------------------------- dequantization
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_bins", [256, 7, 2])
def test_uniform_dequantization_contribution_is_minus_d_log_k(device, num_bins):
    layer = UniformDequantization(num_bins)
    x = torch.randint(0, num_bins, (50, 40, 5), device=device).float()
    x[0, 0] = 0.0
    x[0, 1] = num_bins - 1.0
    z, v = layer.encode(x)
    assert torch.equal(v, torch.full((50, 40), -5 * math.log(num_bins), device=device))
    assert bool(((z >= 0) & (z < 1)).all())
    x2, s = layer.decode(z)
    assert torch.equal(x2, x)  # exact round trip, also at the edge bins
    assert torch.equal(s, -v)


def test_uniform_dequantization_event_dim_and_integer_input():
    layer = UniformDequantization(16, event_dim=3)
    x = torch.randint(0, 16, (4, 2, 3, 5))
    z, v = layer.encode(x)  # an integer tensor is accepted
    assert z.dtype == torch.get_default_dtype() and v.shape == (4,)
    assert torch.allclose(v, torch.full((4,), -30 * math.log(16)))
    assert torch.equal(layer.decode(z)[0], x.float())


def test_uniform_dequantization_noise_is_uniform_on_the_cell():
    # z K - x should be U[0, 1): mean 1/2 (se = sqrt(1/12 / n)), variance 1/12.
    n = 200_000
    layer = UniformDequantization(5)
    x = torch.full((n, 1), 3.0, dtype=F64)
    u = layer.encode(x)[0] * 5 - x
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    # var of U^2 is 1/5 - 1/9 = 4/45: se of the mean of u^2 is sqrt(4/45/n)
    assert abs(float(u.square().mean()) - 1 / 3) < 5 * math.sqrt(4 / 45 / n)


def _beta_cell_log_prob(x: torch.Tensor, num_bins: int, a: float, b: float) -> torch.Tensor:
    """log P(x) of integers x when z ~ Beta(a, b) and x = floor(K z), summed over the last dim."""
    hi = scipy_beta.cdf((x.numpy() + 1) / num_bins, a, b)
    lo = scipy_beta.cdf(x.numpy() / num_bins, a, b)
    return torch.as_tensor(hi - lo).log().sum(-1)


def test_uniform_dequantization_bound_and_iw_on_beta_model():
    # Model: z ~ Beta(2, 5)^2 on the unit square, x = floor(4 z); P(x) from the Beta CDF.
    torch.manual_seed(1)
    k, a, b = 4, 2.0, 5.0
    base = dist.Beta(torch.full((2,), a, dtype=F64), torch.full((2,), b, dtype=F64)).to_event(1)
    flow = FlowDistribution(base, [UniformDequantization(k)])
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [1.0, 1.0]], dtype=F64)
    exact = _beta_cell_log_prob(x, k, a, b)
    n = 20_000
    bound = flow.log_prob(x.expand(n, 3, 2))
    mean, se = mc_mean(bound)
    assert bool((mean < exact + 5 * se).all())  # a lower bound (Jensen)
    # unbiasedness of exp(bound): E[exp(bound - exact)] = 1
    ratio_mean, ratio_se = mc_mean(torch.exp(bound - exact))
    assert bool(((ratio_mean - 1).abs() < 5 * ratio_se).all())
    iw = torch.stack([flow.log_prob_iw(x, 1000) for _ in range(20)])
    iw_mean, iw_se = mc_mean(iw)
    # the K = 1000 bias is ~ var(w) / (2000 p^2) < 1e-3 here; allow it on top of 5 se
    assert bool(((iw_mean - exact).abs() < 5 * iw_se + 1e-3).all())
    samples = flow.sample((1000,))
    assert samples.shape == (1000, 2) and bool((samples == samples.floor()).all())
    assert bool(((samples >= 0) & (samples <= k - 1)).all())


def test_variational_dequantization_contribution_matches_logit_normal():
    torch.manual_seed(2)
    k, d = 6, 3
    layer = VariationalDequantization(d, k, hidden=()).double()
    w = torch.tensor([[0.5, -0.2, 0.1], [0.0, 0.3, 0.0], [-0.4, 0.0, 0.2]], dtype=F64)
    set_linear_gaussian(layer.noise, w, [0.2, -0.5, 1.0], [0.1, -0.3, 0.4])
    x = torch.randint(0, k, (1000, d)).to(F64)
    z, v = layer.encode(x)
    u = z * k - x
    feats = 2.0 * (x + 0.5) / k - 1.0  # the layer's documented input scaling
    q = dist.TransformedDistribution(
        dist.Normal(feats @ w.T + torch.tensor([0.2, -0.5, 1.0], dtype=F64),
                    torch.tensor([0.1, -0.3, 0.4], dtype=F64).exp()),
        [dist.transforms.SigmoidTransform()],
    ).to_event(1)
    expected = -q.log_prob(u) - d * math.log(k)
    assert torch.allclose(v, expected, atol=1e-8)
    x2, s = layer.decode(z)
    assert torch.equal(x2, x)
    assert torch.allclose(s, -v, atol=1e-8)


def test_variational_dequantization_is_a_lower_bound():
    torch.manual_seed(3)
    k, a, b = 4, 2.0, 5.0
    layer = VariationalDequantization(2, k, hidden=()).double()
    set_linear_gaussian(layer.noise, torch.zeros(2, 2), [-0.5, 0.3], [0.4, 0.4])
    base = dist.Beta(torch.full((2,), a, dtype=F64), torch.full((2,), b, dtype=F64)).to_event(1)
    flow = FlowDistribution(base, [layer])
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=F64)
    with torch.no_grad():
        bound = flow.log_prob(x.expand(20_000, 2, 2))
    mean, se = mc_mean(bound)
    exact = _beta_cell_log_prob(x, k, a, b)
    assert bool((mean < exact + 5 * se).all())
    # this q is not the Beta cell density: the bound is strictly loose (by > 5 se)
    assert bool((mean < exact - 5 * se).all())


# --------------------------------------------------------------------------- augment
def test_augment_exact_posterior_gives_exact_log_prob():
    # base N(0, [[1, r], [r, 1]]); x = z_1 ~ N(0, 1); p(e | x) = N(r x, 1 - r^2).
    r = 0.8
    cov = torch.tensor([[1.0, r], [r, 1.0]], dtype=F64)
    base = dist.MultivariateNormal(torch.zeros(2, dtype=F64), cov)
    layer = AugmentSurjection(1, 1, hidden=()).double()
    set_linear_gaussian(layer.encoder, [[r]], [0.0], [0.5 * math.log(1 - r * r)])
    flow = FlowDistribution(base, [layer])
    x = torch.linspace(-3, 3, 13, dtype=F64).unsqueeze(-1).expand(100, 13, 1)
    exact = dist.Normal(torch.zeros((), dtype=F64), 1.0).log_prob(x[..., 0])
    assert torch.allclose(flow.log_prob(x), exact, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_augment_bound_gap_is_kl_to_posterior(device):
    torch.manual_seed(4)
    r, a, c, s = 0.6, 0.3, 0.5, 1.5  # q(e | x) = N(a x + c, s^2)
    cov = torch.tensor([[1.0, r], [r, 1.0]], dtype=F64, device=device)
    base = dist.MultivariateNormal(torch.zeros(2, dtype=F64, device=device), cov)
    layer = AugmentSurjection(1, 1, hidden=()).double()
    set_linear_gaussian(layer.encoder, [[a]], [c], [math.log(s)])
    flow = FlowDistribution(base, [layer.to(device)])
    xs = torch.tensor([-2.0, 0.0, 1.0, 2.5], dtype=F64, device=device)
    n = 20_000
    with torch.no_grad():
        bound = flow.log_prob(xs.reshape(4, 1).expand(n, 4, 1))
    mean, se = mc_mean(bound)
    log_p = dist.Normal(torch.zeros((), dtype=F64, device=device), 1.0).log_prob(xs)
    q = dist.Normal(a * xs + c, s)
    post = dist.Normal(r * xs, math.sqrt(1 - r * r))
    kl = torch.distributions.kl_divergence(q, post)
    assert bool(((mean - (log_p - kl)).abs() < 5 * se).all()), (mean, log_p - kl, se)
    assert bool((mean < log_p).all())


def test_augment_iw_increases_with_particles_and_converges():
    torch.manual_seed(5)
    r, a, c, s = 0.6, 0.3, 0.5, 1.5  # q wider than the posterior: bounded weights
    cov = torch.tensor([[1.0, r], [r, 1.0]], dtype=F64)
    base = dist.MultivariateNormal(torch.zeros(2, dtype=F64), cov)
    layer = AugmentSurjection(1, 1, hidden=()).double()
    set_linear_gaussian(layer.encoder, [[a]], [c], [math.log(s)])
    flow = FlowDistribution(base, [layer])
    xs = torch.tensor([[-1.0], [0.5], [2.0]], dtype=F64)
    log_p = dist.Normal(torch.zeros((), dtype=F64), 1.0).log_prob(xs[:, 0])
    repeats = 2000
    means, ses = [], []
    with torch.no_grad():
        for k in (1, 10, 100, 1000):
            est = flow.log_prob_iw(xs.expand(repeats, 3, 1), k)  # (repeats, 3), independent
            m, se = mc_mean(est - log_p)
            means.append(m.mean())
            ses.append(se.square().sum().sqrt() / 3)
    means, ses = torch.stack(means), torch.stack(ses)
    diffs, diff_se = means[1:] - means[:-1], (ses[1:].square() + ses[:-1].square()).sqrt()
    assert bool((diffs > -3 * diff_se).all()), (means, ses)  # never significantly down
    assert bool((diffs[:2] > 5 * diff_se[:2]).all()), (means, ses)  # clearly up at first
    assert bool((means < 5 * ses).all())  # never above log p(x)
    assert abs(float(means[-1])) < 5 * float(ses[-1]) + 1e-3  # K = 1000: bias ~ var(w)/2000


def test_augment_conditional_uses_context_and_round_trips():
    layer = AugmentSurjection(2, 3, hidden=(8,), context_dim=2)
    torch.nn.init.normal_(layer.encoder.net.net[-1].weight)
    x, ctx = torch.randn(5, 2), torch.randn(5, 2)
    z, v = layer.encode(x, ctx)
    assert z.shape == (5, 5) and torch.equal(z[:, :2], x)
    x2, s = layer.decode(z, ctx)
    assert torch.equal(x2, x) and torch.allclose(s, -v, atol=1e-5)
    # S depends on the context
    assert not torch.allclose(layer.decode(z, ctx + 1.0)[1], s)
    # a broadcast context (importance-weighted particles share it)
    z, v = layer.encode(x.expand(7, 5, 2), ctx)
    assert z.shape == (7, 5, 5) and v.shape == (7, 5)


# --------------------------------------------------------------------------- generative abs / sort
def test_generative_abs_exact_posterior_and_kl_gap():
    torch.manual_seed(6)
    mu = torch.tensor([0.7, -0.3], dtype=F64)
    base = dist.Normal(mu, torch.ones(2, dtype=F64)).to_event(1)
    xs = torch.tensor([[0.1, 1.0], [2.0, 0.5], [0.0, 3.0]], dtype=F64)
    normal = dist.Normal(mu, 1.0)
    log_p = torch.logaddexp(normal.log_prob(xs), normal.log_prob(-xs)).sum(-1)
    # exact posterior: logit p(+ | x) = log N(x; mu) - log N(-x; mu) = 2 mu x
    layer = GenerativeAbs(2, hidden=()).double()
    with torch.no_grad():
        lin = layer.classifier.net[-1]
        lin.weight.copy_(torch.diag(2 * mu))
        lin.bias.zero_()
    flow = FlowDistribution(base, [layer])
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(xs.expand(200, 3, 2)), log_p.expand(200, 3), atol=1e-10)
        # a fixed sign classifier: the mean bound falls short by KL(Bern(q) || Bern(post))
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([0.4, -1.0]))
        n = 20_000
        mean, se = mc_mean(flow.log_prob(xs.expand(n, 3, 2)))
    q_pos = torch.sigmoid(torch.tensor([0.4, -1.0], dtype=F64))
    post = torch.sigmoid(2 * mu * xs)
    kl = (q_pos * (q_pos / post).log() + (1 - q_pos) * ((1 - q_pos) / (1 - post)).log()).sum(-1)
    assert bool(((mean - (log_p - kl)).abs() < 5 * se).all()), (mean, log_p - kl, se)


def test_generative_abs_round_trip_and_domain():
    layer = GenerativeAbs(3, hidden=(8,))
    torch.nn.init.normal_(layer.classifier.net[-1].weight)
    x = torch.randn(4, 2, 3).abs()
    z, v = layer.encode(x)
    assert torch.equal(z.abs(), x)
    x2, s = layer.decode(z)
    assert torch.equal(x2, x) and torch.allclose(s, -v, atol=1e-6)


def test_generative_sort_exact_posterior_two_items():
    # x sorted, p(x) = N(x; mu) + N(x swapped; mu); the posterior log-odds of keeping the
    # order is (x1 - x2)(mu1 - mu2), so scores s0 = (mu1 - mu2)(x1 - x2), s1 = 0 are exact.
    mu = torch.tensor([1.0, -0.5], dtype=F64)
    base = dist.Normal(mu, torch.ones(2, dtype=F64)).to_event(1)
    layer = GenerativeSort(2, hidden=()).double()
    delta = float(mu[0] - mu[1])
    with torch.no_grad():
        lin = layer.scorer.net[-1]
        lin.weight.copy_(torch.tensor([[delta, -delta], [0.0, 0.0]]))
        lin.bias.zero_()
    flow = FlowDistribution(base, [layer])
    xs = torch.tensor([[-1.0, 0.5], [0.0, 2.0], [1.0, 1.5]], dtype=F64)
    log_p = torch.logaddexp(base.log_prob(xs), base.log_prob(xs.flip(-1)))
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(xs.expand(200, 3, 2)), log_p.expand(200, 3), atol=1e-10)


def test_generative_sort_uniform_order_exact_for_exchangeable_base():
    # With an exchangeable base the uniform order (the initial layer) is the posterior:
    # log p(sorted x) = log D! + log p_z(x) for every sample.
    base = dist.Normal(torch.zeros(4, dtype=F64), 1.0).to_event(1)
    flow = FlowDistribution(base, [GenerativeSort(4, hidden=(8,)).double()])
    xs = torch.randn(50, 4, dtype=F64).sort(-1).values
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(xs), math.lgamma(5) + base.log_prob(xs), atol=1e-10)


def test_generative_sort_plackett_luce_sampling_frequencies():
    # Gumbel-top-k draws follow the Plackett-Luce law: compare the frequency of each of
    # the 6 orders of 3 items with exp(log-prob); binomial se = sqrt(p (1 - p) / n).
    torch.manual_seed(7)
    layer = GenerativeSort(3, hidden=())
    with torch.no_grad():
        layer.scorer.net[-1].bias.copy_(torch.tensor([1.0, 0.0, -0.7]))
    n = 60_000
    x = torch.tensor([0.0, 1.0, 2.0]).expand(n, 3)
    with torch.no_grad():
        z, v = layer.encode(x)
    perms = z.long()  # z_i = x_{perm_i} = perm_i
    scores = torch.tensor([1.0, 0.0, -0.7])
    for perm in itertools.permutations(range(3)):
        p = float(plackett_luce_log_prob(scores, torch.tensor(perm)).exp())
        freq = float((perms == torch.tensor(perm)).all(-1).float().mean())
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n), (perm, freq, p)
        hit = (perms == torch.tensor(perm)).all(-1)
        assert torch.allclose(v[hit], torch.tensor(-math.log(p)), atol=1e-5)


def test_generative_sort_round_trip_and_s_is_minus_v():
    layer = GenerativeSort(5, hidden=(8,))
    torch.nn.init.normal_(layer.scorer.net[-1].weight)
    x = torch.randn(3, 4, 5).sort(-1).values
    z, v = layer.encode(x)
    x2, s = layer.decode(z)
    assert torch.equal(x2, x) and torch.allclose(s, -v, atol=1e-5)


# --------------------------------------------------------------------------- stochastic permutation
def test_stochastic_permutation_uniform_and_zero_contribution():
    # each of the 6 orders of 3 items has probability 1/6: binomial se = sqrt(5/36 / n)
    torch.manual_seed(8)
    layer = StochasticPermutation()
    n = 30_000
    x = torch.tensor([0.0, 1.0, 2.0]).expand(n, 3)
    for out, contrib in (layer.encode(x), layer.decode(x)):
        assert torch.equal(contrib, torch.zeros(n))
        for perm in itertools.permutations(range(3)):
            freq = float((out == torch.tensor(perm, dtype=out.dtype)).all(-1).float().mean())
            assert abs(freq - 1 / 6) < 5 * math.sqrt(5 / 36 / n)


def test_stochastic_permutation_event2_moves_columns_together():
    layer = StochasticPermutation(event_dim=2)
    x = torch.arange(12.0).reshape(2, 6).expand(5, 2, 6)
    z, v = layer.encode(x)
    assert v.shape == (5,)
    assert torch.equal(z[:, 1] - z[:, 0], torch.full((5, 6), 6.0))  # columns moved as a block


def test_stochastic_permutation_bound_tight_only_for_exchangeable_base():
    torch.manual_seed(9)
    x = torch.tensor([[-1.0, 0.3, 2.0]], dtype=F64)
    perms = torch.tensor(list(itertools.permutations(range(3))))
    exch = dist.Normal(torch.zeros(3, dtype=F64), 1.0).to_event(1)
    flow = FlowDistribution(exch, [StochasticPermutation()])
    assert torch.allclose(flow.log_prob(x.expand(100, 1, 3)), exch.log_prob(x), atol=1e-12)
    base = dist.Normal(torch.tensor([1.0, 0.0, -1.0], dtype=F64), 1.0).to_event(1)
    flow = FlowDistribution(base, [StochasticPermutation()])
    per_perm = base.log_prob(x[0][perms])  # log p_z(x[perm]) for all 6 orders
    log_p = torch.logsumexp(per_perm, 0) - math.log(6)
    mean, se = mc_mean(flow.log_prob(x.expand(20_000, 1, 3))[:, 0])
    assert abs(float(mean - per_perm.mean())) < 5 * float(se)  # E_perm[log p_z(x[perm])]
    assert float(per_perm.mean()) < float(log_p) - 0.1  # strictly loose here (Jensen)


# --------------------------------------------------------------------------- bad input
def test_bad_input_raises():
    nan = float("nan")
    deq = UniformDequantization(4)
    with pytest.raises(ValueError, match="non-integer"):
        deq.encode(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\]"):
        deq.encode(torch.tensor([[4.0, 1.0]]))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\]"):
        deq.encode(torch.tensor([[-1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"latent values in \[0, 1\]"):
        deq.decode(torch.tensor([[1.5, 0.2]]))
    with pytest.raises(ValueError, match="NaN"):
        deq.encode(torch.tensor([[nan, 1.0]]))
    vd = VariationalDequantization(2, 4, hidden=(4,))
    with pytest.raises(ValueError, match="non-integer"):
        vd.encode(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"expected event shape \(2,\), got \(3,\)"):
        vd.encode(torch.zeros(1, 3))
    gabs = GenerativeAbs(2, hidden=(4,))
    with pytest.raises(ValueError, match="expected non-negative input"):
        gabs.encode(torch.tensor([[1.0, -0.1]]))
    with pytest.raises(ValueError, match=r"expected event shape \(2,\), got \(3,\)"):
        gabs.encode(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        gabs.encode(torch.tensor([[nan, 1.0]]))
    gsort = GenerativeSort(3, hidden=(4,))
    with pytest.raises(ValueError, match="sorted in ascending order"):
        gsort.encode(torch.tensor([[0.0, 2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"expected event shape \(3,\), got \(2,\)"):
        gsort.encode(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="NaN"):
        gsort.encode(torch.tensor([[0.0, 1.0, nan]]))
    aug = AugmentSurjection(2, 1, hidden=(4,))
    with pytest.raises(ValueError, match=r"expected event shape \(2,\), got \(3,\)"):
        aug.encode(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"expected event shape \(3,\), got \(2,\)"):
        aug.decode(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        aug.encode(torch.tensor([[nan, 1.0]]))
    cond = AugmentSurjection(2, 1, hidden=(4,), context_dim=3)
    with pytest.raises(ValueError, match="expected a context of size 3, got None"):
        cond.encode(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"context: expected event shape \(3,\), got \(2,\)"):
        cond.encode(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        cond.encode(torch.zeros(1, 2), torch.tensor([[nan, 0.0, 0.0]]))
    perm = StochasticPermutation()
    with pytest.raises(ValueError, match="NaN"):
        perm.encode(torch.tensor([[nan, 1.0]]))
    with pytest.raises(ValueError, match="event dimensions"):
        StochasticPermutation(event_dim=2).encode(torch.zeros(3))


def test_bad_data_through_flow_distribution_raises():
    base = dist.Uniform(torch.zeros(2), torch.ones(2)).to_event(1)
    flow = FlowDistribution(base, [UniformDequantization(4)])
    # a uniform base on the square: P(x) = 4^-2 exactly and the bound is exact
    log_p = flow.log_prob(torch.tensor([[1.0, 3.0]]))
    assert torch.allclose(log_p, torch.tensor([-2 * math.log(4)]))
    with pytest.raises(ValueError, match="non-integer"):
        flow.log_prob(torch.tensor([[1.5, 3.0]]))
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    with pytest.raises(ValueError, match="non-negative"):
        FlowDistribution(base, [GenerativeAbs(2)]).log_prob(torch.tensor([[-1.0, 0.0]]))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: UniformDequantization(0), "positive int num_bins"),
        (lambda: UniformDequantization(4, event_dim=0), "event_dim >= 1"),
        (lambda: VariationalDequantization(0, 4), "positive int dim"),
        (lambda: VariationalDequantization(2, 2.5), "positive int num_bins"),
        (lambda: AugmentSurjection(2, 0), "positive int extra"),
        (lambda: AugmentSurjection(2, 1, context_dim=-1), "context_dim >= 0"),
        (lambda: GenerativeAbs(0), "positive int dim"),
        (lambda: GenerativeSort(-1), "positive int dim"),
        (lambda: StochasticPermutation(event_dim=0), "event_dim >= 1"),
    ],
)
def test_bad_configuration_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_generative_abs_zero_input_keeps_s_equal_minus_v():
    # x = 0 with a drawn "-" sign becomes -0.0; decode reads the sign bit back.
    layer = GenerativeAbs(2, hidden=())
    with torch.no_grad():
        layer.classifier.net[-1].bias.copy_(torch.tensor([-1.0, 2.0]))
    x = torch.zeros(2000, 2)
    z, v = layer.encode(x)
    assert bool(torch.signbit(z).any()) and bool((~torch.signbit(z)).any())
    x2, s = layer.decode(z)
    assert torch.equal(x2, x) and torch.allclose(s, -v)
