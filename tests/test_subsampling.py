"""Models with a subsampled plate: SVI on mini-batches, and clear refusals elsewhere."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_relax.infer.runner import fit_guide, guide_draws, run_mcmc

N, B = 20000, 200
_gen = torch.Generator().manual_seed(0)
Y = 1.5 + 2.0 * torch.randn(N, generator=_gen, dtype=torch.float64)
# conjugate: mu ~ N(0, 10^2), y_i ~ N(mu, 2^2): the exact posterior of mu
POST_PREC = 1 / 100 + N / 4
POST_MEAN = float(Y.sum() / 4 / POST_PREC)
POST_SD = 1 / math.sqrt(POST_PREC)


def minibatch_model():
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
    with pyro.plate("data", N, subsample_size=B) as ind:
        pyro.sample("y", dist.Normal(mu, 2.0), obs=Y[ind])


def test_auto_trains_on_minibatches_and_matches_the_exact_posterior():
    fit = fit_guide(minibatch_model, "auto", steps=3000, progress=False, seed=0)
    assert fit.extra["method"].endswith("(mini-batches)") and "data" in fit.extra["subsampled"]
    samples, _ = guide_draws(fit, minibatch_model, 2000)
    mu = samples["mu"].double()
    # guide draws (no reweighting: mini-batch weights are noisy); 2000 draws give a mean
    # se of 0.02 posterior sd; the mini-batch gradient noise is allowed 0.3 sd more
    assert abs(float(mu.mean()) - POST_MEAN) < 0.35 * POST_SD, (float(mu.mean()), POST_MEAN)
    assert 0.8 < float(mu.std()) / POST_SD < 1.2  # 2000 draws: se of the sd ratio 0.016


def test_methods_that_need_the_exact_density_refuse_a_subsampled_plate():
    with pytest.raises(ValueError, match=r"subsamples the plate 'data' \(200 of 20000\).*'auto'"):
        fit_guide(minibatch_model, "pathfinder", progress=False)
    with pytest.raises(ValueError, match="subsamples the plate"):
        run_mcmc(minibatch_model, "nuts", num_samples=5, warmup_steps=5, progress=False)


def test_a_local_latent_in_a_subsampled_plate_is_refused_by_name():
    def model():
        with pyro.plate("groups", 100, subsample_size=10):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'z' sits in the subsampled plate 'groups'"):
        fit_guide(model, "normal", steps=2, progress=False)
