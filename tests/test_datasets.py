"""The 2-D toy data sets and their true log-densities (the reference of the NLL gap)."""

import math

import pytest
import torch

from pyro_relax import datasets


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_true_density_integrates_to_one(name):
    """Importance sampling from a wide Gaussian: the weights' sd is at most about 4 on these
    sets (the thin rings are the worst), so the mean of 20000 has a Monte Carlo sd of about
    0.03; the tolerance is 0.12 (4 sd). A density off by a factor (a wrong normalizer, a
    missing mirror image) fails."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(20000, 2, generator=g, dtype=torch.float64) * 1.6
    log_q = -(y**2).sum(-1) / (2 * 1.6**2) - math.log(2 * math.pi * 1.6**2)
    w = (datasets.log_density(name, y) - log_q).exp()
    assert float(w.mean()) == pytest.approx(1.0, abs=0.12)


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_true_density_is_finite_on_its_samples_and_beats_a_gaussian(name):
    x = datasets.load(name, 2000, seed=3).double()
    lp = datasets.log_density(name, x)
    assert lp.shape == (2000,) and bool(lp.isfinite().all())
    gauss = torch.distributions.MultivariateNormal(x.mean(0), torch.cov(x.T))
    assert float(lp.mean()) > float(gauss.log_prob(x).mean())  # the truth fits better


def test_closed_forms():
    assert torch.equal(datasets.log_density("checkerboard", torch.tensor([[0.5, 0.5], [0.5, 1.5]])),
                       torch.tensor([-math.log(8.0), -math.inf]))
    centre = torch.tensor([[2.0, 0.0]], dtype=torch.float64)  # one of the eight components
    expected = -math.log(8.0) - math.log(2 * math.pi * 0.15**2)
    assert float(datasets.log_density("eight_gaussians", centre)) == pytest.approx(expected, 1e-6)


def test_log_density_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown data set 'moons'"):
        datasets.log_density("moons", torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"expected points of shape \(n, 2\), got \(2, 3\)"):
        datasets.log_density("rings", torch.zeros(2, 3))
    with pytest.raises(TypeError, match="expected a floating tensor"):
        datasets.log_density("rings", torch.zeros(2, 2, dtype=torch.long))
