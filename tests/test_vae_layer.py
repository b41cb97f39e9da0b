"""The VAE layer on a linear-Gaussian model, where log p(x) and the posterior are closed form.

Model: z ~ N(0, I_k), x | z ~ N(W z + b, Psi) with Psi diagonal, so
p(x) = N(b, W W^T + Psi) and p(z | x) = N(m(x), Sigma) with
Sigma = (I + W^T Psi^-1 W)^-1, m(x) = Sigma W^T Psi^-1 (x - b).
A linear encoder q(z | x) = N(A x + c, diag(s^2)) gives a bound whose mean falls
short of log p(x) by KL(q || p(z | x)); with q = p(z | x) (possible when Sigma is
diagonal) every single-sample bound equals log p(x).

Monte Carlo tolerances are 5 standard errors, se = sd / sqrt(n) of the averaged
quantity (a false alarm rate below 1e-6 per comparison).
"""

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_relax.distributions.flow import FlowDistribution
from pyro_relax.stochastic.vae import VAELayer
from pyro_relax.surjections.augment import ConditionalNormal

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
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


class LinearGaussian:
    """A linear-Gaussian VAE with known marginal and posterior (float64)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, psi_scale: torch.Tensor) -> None:
        self.w, self.b, self.psi = w, b, psi_scale.square()
        d, k = w.shape
        self.d, self.k = d, k
        self.marginal = dist.MultivariateNormal(b, w @ w.T + torch.diag(self.psi))
        self.post_cov = torch.linalg.inv(torch.eye(k, dtype=F64) + w.T @ (w / self.psi[:, None]))
        self.gain = self.post_cov @ w.T / self.psi  # m(x) = gain (x - b)
        self.layer = VAELayer(d, k, hidden=()).double()
        set_linear_gaussian(self.layer.decoder, w, b, psi_scale.log())
        self.base = dist.Normal(torch.zeros(k, dtype=F64), 1.0).to_event(1)

    def set_encoder(self, a: torch.Tensor, c: torch.Tensor, scale: torch.Tensor) -> None:
        set_linear_gaussian(self.layer.encoder, a, c, scale.log())
        self.a, self.c, self.scale = a, c, scale

    def set_exact_encoder(self) -> None:
        """q = p(z | x); needs a diagonal posterior covariance."""
        cov = self.post_cov
        assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-12)
        self.set_encoder(self.gain, -self.gain @ self.b, torch.diagonal(cov).sqrt())

    def flow(self) -> FlowDistribution:
        return FlowDistribution(self.base, [self.layer])

    def kl_to_posterior(self, x: torch.Tensor) -> torch.Tensor:
        q = dist.MultivariateNormal(x @ self.a.T + self.c, torch.diag(self.scale.square()))
        post = dist.MultivariateNormal((x - self.b) @ self.gain.T, self.post_cov)
        return kl_divergence(q, post)


def orthogonal_model() -> LinearGaussian:
    # orthonormal columns scaled by d and isotropic noise: W^T Psi^-1 W is diagonal
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 0.2], [0.5, -1.0], [-0.3, 0.4]], dtype=F64))
    w = q * torch.tensor([1.5, 0.7], dtype=F64)
    return LinearGaussian(w, torch.tensor([0.1, -0.2, 0.3], dtype=F64),
                          torch.full((3,), 0.5, dtype=F64))


def general_model() -> LinearGaussian:
    w = torch.tensor([[1.0, 0.4], [-0.6, 0.9], [0.3, 0.2]], dtype=F64)
    return LinearGaussian(w, torch.tensor([0.5, 0.0, -1.0], dtype=F64),
                          torch.tensor([0.4, 0.8, 0.6], dtype=F64))


XS = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [-2.0, 0.3, 1.5]], dtype=F64)


def test_exact_posterior_encoder_gives_exact_log_prob():
    model = orthogonal_model()
    model.set_exact_encoder()
    with torch.no_grad():
        bound = model.flow().log_prob(XS.expand(200, 3, 3))
    assert torch.allclose(bound, model.marginal.log_prob(XS).expand(200, 3), atol=1e-10)


def test_bound_gap_equals_kl_to_true_posterior():
    torch.manual_seed(10)
    model = general_model()
    a = model.gain + torch.tensor([[0.2, -0.1, 0.0], [0.0, 0.3, -0.2]], dtype=F64)
    model.set_encoder(a, torch.tensor([0.1, -0.3], dtype=F64), torch.tensor([0.5, 0.8], dtype=F64))
    n = 20_000
    with torch.no_grad():
        mean, se = mc_mean(model.flow().log_prob(XS.expand(n, 3, 3)))
    log_p = model.marginal.log_prob(XS)
    kl = model.kl_to_posterior(XS)
    assert bool((kl > 0.05).all())  # the gap is real, not a trivially exact case
    assert bool(((mean - (log_p - kl)).abs() < 5 * se).all()), (mean, log_p - kl, se)


def test_iw_bound_increases_with_particles_and_converges():
    torch.manual_seed(11)
    model = general_model()
    # q wider than the posterior (whose variances are < 1): bounded importance weights
    model.set_encoder(model.gain, -model.gain @ model.b + 0.3, torch.full((2,), 1.2, dtype=F64))
    flow = model.flow()
    log_p = model.marginal.log_prob(XS)
    repeats = 1000
    means, ses = [], []
    with torch.no_grad():
        for k in (1, 10, 100, 1000):
            est = flow.log_prob_iw(XS.expand(repeats, 3, 3), k) - log_p  # (repeats, 3)
            m, se = mc_mean(est)
            means.append(m.mean())
            ses.append(se.square().sum().sqrt() / 3)
    means, ses = torch.stack(means), torch.stack(ses)
    diffs, diff_se = means[1:] - means[:-1], (ses[1:].square() + ses[:-1].square()).sqrt()
    assert bool((diffs > -3 * diff_se).all()), (means, ses)  # never significantly down
    assert bool((diffs[:2] > 5 * diff_se[:2]).all()), (means, ses)  # clearly up at first
    assert bool((means < 5 * ses).all())  # never above log p(x)
    assert abs(float(means[-1])) < 5 * float(ses[-1]) + 2e-3  # K = 1000: bias ~ var(w)/2000


def test_decode_path_weight_is_unbiased():
    # z ~ p(z), x ~ p(x | z); log w = log p(x) - (log p(z) - S) = log q(z | x) - log p(z | x),
    # so E[w] = 1, and w = 1 exactly when q is the posterior.
    torch.manual_seed(12)
    model = orthogonal_model()
    model.set_exact_encoder()
    n = 20_000
    with torch.no_grad():
        x, log_q = model.flow().rsample_and_log_q((n,))
        assert torch.allclose(model.marginal.log_prob(x) - log_q, torch.zeros(n, dtype=F64),
                              atol=1e-9)
        # a shifted, slightly narrower q (variance ratio in (1/2, 1): finite var(w))
        sd = torch.diagonal(model.post_cov).sqrt()
        model.set_encoder(model.gain, -model.gain @ model.b + 0.2 * sd, 0.9 * sd)
        x, log_q = model.flow().rsample_and_log_q((n,))
        mean, se = mc_mean(torch.exp(model.marginal.log_prob(x) - log_q))
    assert abs(float(mean) - 1.0) < 5 * float(se), (mean, se)


def test_decode_contribution_matches_direct_formula():
    torch.manual_seed(13)
    model = general_model()
    model.set_encoder(model.gain, torch.zeros(2, dtype=F64), torch.tensor([0.5, 0.8], dtype=F64))
    z = torch.randn(50, 2, dtype=F64)
    x, s = model.layer.decode(z)
    log_p = dist.Normal(z @ model.w.T + model.b, model.psi.sqrt()).log_prob(x).sum(-1)
    log_q = dist.Normal(x @ model.a.T + model.c, model.scale).log_prob(z).sum(-1)
    assert torch.allclose(s, -(log_p - log_q), atol=1e-10)
    _, v = model.layer.encode(x)
    assert v.shape == (50,)


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_latent_size_differs_and_batches(device):
    layer = VAELayer(4, latent_dim=6, hidden=(8,)).to(device)
    x = torch.randn(2, 3, 4, device=device)
    z, v = layer.encode(x)
    assert z.shape == (2, 3, 6) and v.shape == (2, 3)
    x2, s = layer.decode(z)
    assert x2.shape == (2, 3, 4) and s.shape == (2, 3)
    assert layer.latent_shape(torch.Size([4])) == (6,) and layer.data_shape(torch.Size([6])) == (4,)
    base = dist.Normal(torch.zeros(6, device=device), 1.0).to_event(1)
    flow = FlowDistribution(base, [layer])
    assert flow.event_shape == (4,) and flow.sample((5,)).shape == (5, 4)
    assert flow.log_prob_iw(x, 7).shape == (2, 3)


def test_conditional_layer_uses_and_broadcasts_context():
    torch.manual_seed(14)
    layer = VAELayer(2, 3, hidden=(8,), context_dim=2)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x, ctx = torch.randn(5, 2), torch.randn(5, 2)
    torch.manual_seed(0)
    _, v1 = layer.encode(x, ctx)
    torch.manual_seed(0)
    _, v2 = layer.encode(x, ctx + 1.0)
    assert not torch.allclose(v1, v2)
    z, v = layer.encode(x.expand(7, 5, 2), ctx)  # particles share the context
    assert z.shape == (7, 5, 3) and v.shape == (7, 5)


def test_training_tightens_the_bound():
    # Fit a 2-D correlated Gaussian with a 1-D latent by maximizing the mean bound.
    # The bound starts far below the true mean log-density and ends close to it
    # (probabilistic PCA with 1 factor represents this Gaussian exactly).
    torch.manual_seed(15)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    data = dist.MultivariateNormal(torch.zeros(2), cov).sample((512,))
    exact = float(dist.MultivariateNormal(torch.zeros(2), cov).log_prob(data).mean())
    layer = VAELayer(2, 1, hidden=())
    base = dist.Normal(torch.zeros(1), 1.0).to_event(1)
    flow = FlowDistribution(base, [layer])
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    with torch.no_grad():
        start = float(flow.log_prob(data).mean())
    for _ in range(300):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = flow.log_prob(data.expand(20, 512, 2))  # 20 draws per point
    mean, se = float(end.mean()), float(end.std() / math.sqrt(end.numel()))
    assert start < exact - 0.3
    # at the optimum the gap is the KL of a 1-D Gaussian q to the exact 1-D posterior: 0;
    # allow 0.1 nats for the finite training run on top of 5 se
    assert exact - 0.1 - 5 * se < mean < exact + 0.1, (start, mean, exact)


def test_bad_input_raises():
    layer = VAELayer(3, 2, hidden=(4,))
    with pytest.raises(ValueError, match=r"expected event shape \(3,\), got \(2,\)"):
        layer.encode(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"expected event shape \(2,\), got \(3,\)"):
        layer.decode(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        layer.encode(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        layer.decode(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match=r"expected data shape \(3,\), got \(4,\)"):
        layer.latent_shape(torch.Size([4]))
    cond = VAELayer(3, 2, hidden=(4,), context_dim=2)
    with pytest.raises(ValueError, match="expected a context of size 2, got None"):
        cond.encode(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"context: expected event shape \(2,\), got \(3,\)"):
        cond.encode(torch.zeros(5, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="positive int latent_dim"):
        VAELayer(3, 0)
    with pytest.raises(ValueError, match="positive int dim"):
        VAELayer(1.5, 2)
