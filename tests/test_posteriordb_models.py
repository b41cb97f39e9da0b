"""Tests of the posteriordb loader and the nineteen Pyro models in examples/posteriordb.

The density checks compare each Pyro model with an independent numpy/scipy
transcription of the Stan program, in the constrained parameters (the Stan
``target`` without the log-Jacobian Stan adds for its unconstrained sampling
space). Both sides drop different constants (``log 2`` of half-distributions,
normalizers of flat priors), so the check is on differences between draws:
``log p_pyro(a) - log p_pyro(b) == log p_np(a) - log p_np(b)``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.poutine.messenger import Messenger
from scipy import special, stats
from torch.distributions import biject_to

from pyro_relax.testing import posteriordb as pdb
from pyro_relax.testing.score_identity import (
    ScoreIdentityResult,
    effective_sample_size,
    score_identity,
    z_threshold,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.posteriordb import MODELS, load_model  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHORT = sorted(MODELS)
# the six larger hierarchical posteriors of issue 20 (references: 4 chains x 1000 draws)
HIERARCHICAL = ("pilots", "seeds", "glmm1", "mh", "butterfly", "hierarchical_gp")
# 8 reference draws spread over the 10 chains; draw 0 is the baseline "b".
DRAW_INDEX = np.array([0, 1237, 2519, 3841, 5003, 6172, 7777, 9998])


def _draw_index(name: str) -> np.ndarray:
    """DRAW_INDEX scaled to the number of stored draws (10000, or 4000 for the larger six)."""
    n = 4000 if name in pdb.HIERARCHICAL_NAMES else 10000
    return DRAW_INDEX * (n - 1) // 9999


@pytest.fixture
def float64() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ----------------------------------------------------------------------------------------------
# numpy/scipy transcriptions of the Stan programs, vectorized over draws (leading axis)


def _np_eight_schools(v: dict, d: dict, centered: bool) -> np.ndarray:
    mu, tau = v["mu"], v["tau"]
    lp = stats.norm.logpdf(mu, 0, 5) + stats.cauchy.logpdf(tau, 0, 5)
    if centered:
        theta = v["theta"]
        lp = lp + stats.norm.logpdf(theta, mu[:, None], tau[:, None]).sum(-1)
    else:
        theta = v["theta_trans"] * tau[:, None] + mu[:, None]
        lp = lp + stats.norm.logpdf(v["theta_trans"]).sum(-1)
    return lp + stats.norm.logpdf(d["y"], theta, d["sigma"]).sum(-1)


def _np_kilpisjarvi(v: dict, d: dict) -> np.ndarray:
    a, b, s = v["alpha"], v["beta"], v["sigma"]
    lp = stats.norm.logpdf(a, d["pmualpha"], d["psalpha"])
    lp = lp + stats.norm.logpdf(b, d["pmubeta"], d["psbeta"])
    return lp + stats.norm.logpdf(d["y"], a[:, None] + b[:, None] * d["x"], s[:, None]).sum(-1)


def _np_garch(v: dict, d: dict) -> np.ndarray:
    mu, a0 = v["mu"], v["alpha0"]
    a1, b1 = v["alpha1_beta1"][:, 0], v["alpha1_beta1"][:, 1]
    y = d["y"]
    sigma = np.full_like(mu, d["sigma1"])
    lp = stats.norm.logpdf(y[0], mu, sigma)
    for t in range(1, d["T"]):  # the Stan loop, literally
        sigma = np.sqrt(a0 + a1 * (y[t - 1] - mu) ** 2 + b1 * sigma**2)
        lp = lp + stats.norm.logpdf(y[t], mu, sigma)
    return lp  # flat priors on the triangle 0 < alpha1, 0 < beta1 < 1 - alpha1


def _np_gp(v: dict, d: dict) -> np.ndarray:
    rho, alpha, ft = v["rho"], v["alpha"], v["f_tilde"]
    x = d["x"].astype(float)
    cov = alpha[:, None, None] ** 2 * np.exp(
        -((x[:, None] - x[None, :]) ** 2) / (2 * rho[:, None, None] ** 2)
    ) + 1e-10 * np.eye(len(x))
    f = np.einsum("nij,nj->ni", np.linalg.cholesky(cov), ft)
    lp = stats.gamma.logpdf(rho, 25, scale=1 / 4) + stats.norm.logpdf(alpha, 0, 2)
    lp = lp + stats.norm.logpdf(ft).sum(-1)
    k = d["k"]
    return lp + (k * f - np.exp(f) - special.gammaln(k + 1)).sum(-1)


def _np_arK(v: dict, d: dict) -> np.ndarray:
    alpha, beta, sigma = v["alpha"], v["beta"], v["sigma"]
    lp = stats.norm.logpdf(alpha, 0, 10) + stats.norm.logpdf(beta, 0, 10).sum(-1)
    lp = lp + stats.cauchy.logpdf(sigma, 0, 2.5)
    y, K = d["y"], d["K"]
    for t in range(K, d["T"]):
        mu = alpha + sum(beta[:, k] * y[t - k - 1] for k in range(K))
        lp = lp + stats.norm.logpdf(y[t], mu, sigma)
    return lp


def _np_gauss_mix(v: dict, d: dict) -> np.ndarray:
    mu, sigma, theta = v["mu"], v["sigma"], v["theta"]
    lp = stats.norm.logpdf(sigma, 0, 2).sum(-1) + stats.norm.logpdf(mu, 0, 2).sum(-1)
    lp = lp + stats.beta.logpdf(theta, 5, 5)
    y = d["y"][None, :]
    one = np.log(theta)[:, None] + stats.norm.logpdf(y, mu[:, :1], sigma[:, :1])
    two = np.log1p(-theta)[:, None] + stats.norm.logpdf(y, mu[:, 1:], sigma[:, 1:])
    return lp + np.logaddexp(one, two).sum(-1)


def _np_regression(y: np.ndarray, loc: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return stats.norm.logpdf(y[None, :], loc, sigma[:, None]).sum(-1)


def _np_earnings(v: dict, d: dict) -> np.ndarray:
    b = v["beta"]
    loc = b[:, :1] + b[:, 1:] * d["height"][None, :]
    return _np_regression(d["earn"].astype(float), loc, v["sigma"])  # flat priors


def _np_kidiq(v: dict, d: dict) -> np.ndarray:
    b, sigma = v["beta"], v["sigma"]
    loc = b[:, :1] + b[:, 1:] * d["mom_iq"][None, :]
    return stats.cauchy.logpdf(sigma, 0, 2.5) + _np_regression(d["kid_score"], loc, sigma)


def _np_mesquite(v: dict, d: dict) -> np.ndarray:
    b = v["beta"].T[:, :, None]  # b[i] has shape (draws, 1)
    loc = (b[0] + b[1] * d["diam1"] + b[2] * d["diam2"] + b[3] * d["canopy_height"]
           + b[4] * d["total_height"] + b[5] * d["density"] + b[6] * d["group"])
    return _np_regression(d["weight"], loc, v["sigma"])


def _np_nes(v: dict, d: dict) -> np.ndarray:
    age = d["age_discrete"]
    age30_44, age45_64, age65up = (np.where(age == k, 1.0, 0.0) for k in (2, 3, 4))
    b = v["beta"].T[:, :, None]
    loc = (b[0] + b[1] * d["real_ideo"] + b[2] * d["race_adj"] + b[3] * age30_44
           + b[4] * age45_64 + b[5] * age65up + b[6] * d["educ1"] + b[7] * d["gender"]
           + b[8] * d["income"])
    return _np_regression(d["partyid7"], loc, v["sigma"])


def _np_sblri(v: dict, d: dict) -> np.ndarray:
    beta, sigma = v["beta"], v["sigma"]
    lp = stats.norm.logpdf(beta, 0, 10).sum(-1) + stats.norm.logpdf(sigma, 0, 10)
    return lp + _np_regression(d["y"], beta @ d["X"].T, sigma)


def _np_hmm(v: dict, d: dict) -> np.ndarray:
    theta = np.stack([v["theta1"], v["theta2"]], axis=1)  # (draws, j, k)
    phi, lam = v["phi"], v["lambda"]
    K, N = d["K"], d["N"]
    lp = np.zeros(len(phi))
    for k in range(K):
        lp = lp + np.array([stats.dirichlet.logpdf(t[k], d["alpha"][k]) for t in theta])
    lp = lp + stats.norm.logpdf(phi[:, 0], 0, 1) + stats.norm.logpdf(phi[:, 1], 3, 1)
    lp = lp + stats.norm.logpdf(lam[:, 0], 0, 1) + stats.norm.logpdf(lam[:, 1], 3, 1)

    def emit(t: int, k: int) -> np.ndarray:
        return (stats.norm.logpdf(d["u"][t], phi[:, k], d["tau"])
                + stats.norm.logpdf(d["v"][t], lam[:, k], d["rho"]))

    gamma = [emit(0, k) for k in range(K)]
    for t in range(1, N):  # the Stan forward loop, literally (vectorized over draws only)
        gamma = [
            special.logsumexp(
                [gamma[j] + np.log(theta[:, j, k]) + emit(t, k) for j in range(K)], axis=0
            )
            for k in range(K)
        ]
    return lp + special.logsumexp(gamma, axis=0)


def _np_pilots(v: dict, d: dict) -> np.ndarray:
    g, s = d["group_id"] - 1, d["scenario_id"] - 1
    mu_a, mu_b = v["mu_a"][:, None], v["mu_b"][:, None]
    lp = stats.norm.logpdf(v["mu_a"]) + stats.norm.logpdf(v["mu_b"])
    lp = lp + stats.norm.logpdf(v["a"], 10 * mu_a, v["sigma_a"][:, None]).sum(-1)
    lp = lp + stats.norm.logpdf(v["b"], 10 * mu_b, v["sigma_b"][:, None]).sum(-1)
    y_hat = v["a"][:, g] + v["b"][:, s]
    return lp + stats.norm.logpdf(d["y"], y_hat, v["sigma_y"][:, None]).sum(-1)  # U(0, 100)


def _np_seeds(v: dict, d: dict) -> np.ndarray:
    lp = sum(stats.norm.logpdf(v[k], 0, 1000) for k in ("alpha0", "alpha1", "alpha2", "alpha12"))
    tau = v["tau"]
    lp = lp + stats.gamma.logpdf(tau, 1e-3, scale=1e3)
    lp = lp + stats.norm.logpdf(v["b"], 0, 1 / np.sqrt(tau)[:, None]).sum(-1)
    x1, x2 = d["x1"], d["x2"]
    eta = (v["alpha0"][:, None] + v["alpha1"][:, None] * x1 + v["alpha2"][:, None] * x2
           + v["alpha12"][:, None] * x1 * x2 + v["b"])
    return lp + stats.binom.logpmf(d["n"], d["N"], special.expit(eta)).sum(-1)


def _np_glmm1(v: dict, d: dict) -> np.ndarray:
    mu, sd, alpha = v["mu_alpha"], v["sd_alpha"], v["alpha"]
    lp = stats.norm.logpdf(mu, 0, 10) + stats.norm.logpdf(alpha, mu[:, None], sd[:, None]).sum(-1)
    log_lambda = np.repeat(alpha[:, None, :], d["nyear"], axis=1)  # rep_matrix(alpha', nyear)
    rate = np.exp(log_lambda[:, d["obsyear"] - 1, d["obssite"] - 1])
    return lp + stats.poisson.logpmf(d["obs"], rate).sum(-1)  # sd_alpha ~ U(0, 5)


def _np_mh(v: dict, d: dict) -> np.ndarray:
    omega, y, T = v["omega"], d["y"], d["T"]
    eps = special.logit(v["mean_p"])[:, None] + v["sigma"][:, None] * v["eps_raw"]
    lp = stats.norm.logpdf(v["eps_raw"]).sum(-1)
    for i in range(d["M"]):  # the Stan loop, literally
        p = special.expit(eps[:, i])
        if y[i] > 0:
            lp = lp + np.log(omega) + stats.binom.logpmf(y[i], T, p)
        else:
            lp = lp + np.logaddexp(np.log(omega) + stats.binom.logpmf(0, T, p), np.log1p(-omega))
    return lp


def _np_butterfly(v: dict, d: dict) -> np.ndarray:
    alpha, beta, omega, rho, sig = v["alpha"], v["beta"], v["Omega"], v["rho_uv"], v["sigma_uv"]
    lp = stats.cauchy.logpdf(alpha, 0, 2.5) + stats.cauchy.logpdf(beta, 0, 2.5)
    lp = lp + stats.cauchy.logpdf(sig, 0, 2.5).sum(-1) + stats.beta.logpdf((rho + 1) / 2, 2, 2)
    lp = lp + stats.beta.logpdf(omega, 2, 2)
    uv = np.stack([v["uv1"], v["uv2"]], -1)
    for n in range(len(alpha)):  # multi_normal with cov_matrix_2d(sigma_uv, rho_uv)
        off = rho[n] * sig[n, 0] * sig[n, 1]
        cov = np.array([[sig[n, 0] ** 2, off], [off, sig[n, 1] ** 2]])
        lp[n] += stats.multivariate_normal.logpdf(uv[n], np.zeros(2), cov).sum()
    x, K, J = d["X"], d["K"], d["J"]
    psi, theta = special.expit(v["uv1"] + alpha[:, None]), special.expit(v["uv2"] + beta[:, None])
    for i in range(d["S"]):  # the Stan loops, literally
        lpsi, l1mpsi = np.log(psi[:, i]), np.log1p(-psi[:, i])
        never = np.logaddexp(lpsi + stats.binom.logpmf(0, K, theta[:, i]), l1mpsi)
        if i < d["n"]:
            lp = lp + np.log(omega)
            for j in range(J):
                if x[i, j] > 0:
                    lp = lp + lpsi + stats.binom.logpmf(x[i, j], K, theta[:, i])
                else:
                    lp = lp + never
        else:
            lp = lp + np.logaddexp(np.log1p(-omega), np.log(omega) + J * never)
    return lp


def _np_hierarchical_gp(v: dict, d: dict) -> np.ndarray:
    out = []
    years = np.arange(1, d["N_years"] + 1.0)
    sq = (years[:, None] - years[None, :]) ** 2
    for n in range(len(v["mu"])):  # one draw at a time, as Stan
        var = 17 * v["prop_var"][n] * v["tot_var"][n]
        gp = {}
        for kind, (i_long, i_short) in (("region", (12, 14)), ("state", (13, 15))):
            cov = sum(var[i] * np.exp(-sq / (2 * v[f"length_GP_{kind}_{w}"][n] ** 2))
                      for i, w in ((i_long, "long"), (i_short, "short")))
            chol = np.linalg.cholesky(cov + 1e-6 * np.eye(len(years)))
            gp[kind] = chol @ v[f"GP_{kind}_std"][n]
        year_re = np.sqrt(var[0]) * v["year_std"][n]
        region_re = np.sqrt(var[1]) * v["region_std"][n]
        state_re = np.sqrt(var[2:12])[d["state_region_ind"] - 1] * v["state_std"][n]
        t, s, r = d["year_ind"] - 1, d["state_ind"] - 1, d["region_ind"] - 1
        obs_mu = (v["mu"][n] + year_re[t] + state_re[s] + region_re[r] + gp["region"][t, r]
                  + gp["state"][t, s])
        lp = stats.norm.logpdf(d["y"], obs_mu, np.sqrt(var[16])).sum()
        for k in ("GP_region_std", "GP_state_std", "year_std", "state_std", "region_std"):
            lp += stats.norm.logpdf(v[k][n]).sum()
        lp += stats.norm.logpdf(v["mu"][n], 0.5, 0.5) + stats.gamma.logpdf(v["tot_var"][n], 3,
                                                                           scale=1 / 3)
        lp += stats.dirichlet.logpdf(v["prop_var"][n], np.full(17, 2.0))
        for kind in ("region", "state"):
            lp += stats.weibull_min.logpdf(v[f"length_GP_{kind}_long"][n], 30, scale=8)
            lp += stats.weibull_min.logpdf(v[f"length_GP_{kind}_short"][n], 30, scale=3)
        out.append(lp)
    return np.array(out)


NUMPY_DENSITY = {
    "pilots": _np_pilots,
    "seeds": _np_seeds,
    "glmm1": _np_glmm1,
    "mh": _np_mh,
    "butterfly": _np_butterfly,
    "hierarchical_gp": _np_hierarchical_gp,
    "arK": _np_arK,
    "earnings": _np_earnings,
    "hmm_drive": _np_hmm,
    "kidiq": _np_kidiq,
    "mesquite": _np_mesquite,
    "nes1976": _np_nes,
    "sblri": _np_sblri,
    "eight_schools_centered": lambda v, d: _np_eight_schools(v, d, centered=True),
    "eight_schools_noncentered": lambda v, d: _np_eight_schools(v, d, centered=False),
    "garch11": _np_garch,
    "gp_pois_regr": _np_gp,
    "kilpisjarvi": _np_kilpisjarvi,
    "low_dim_gauss_mix": _np_gauss_mix,
}


# ----------------------------------------------------------------------------------------------
# helpers


def _latent_sites(trace: poutine.Trace) -> dict[str, dict]:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _log_joint_per_draw(model: Callable[[], None], values: dict[str, torch.Tensor]) -> torch.Tensor:
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace()
    assert not _latent_sites(trace), "conditioning left latent sites unset"
    trace.compute_log_prob()
    total = torch.zeros(())
    for site in trace.nodes.values():
        if site["type"] == "sample":
            total = total + site["log_prob"].to(total)
    return total


def _draws(name: str, index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in pdb.load_reference_draws(name).items()}


# ----------------------------------------------------------------------------------------------
# loader


def test_find_posteriordb_paths(tmp_path, monkeypatch):
    found = pdb.find_posteriordb()
    assert sorted(p.name for p in found.iterdir() if p.is_dir()) == sorted(pdb.POSTERIOR_NAMES)
    assert pdb.find_posteriordb(str(found)) == found
    with pytest.raises(FileNotFoundError, match="does not hold"):
        pdb.find_posteriordb(tmp_path)
    monkeypatch.setenv(pdb.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=pdb.ENV_VAR):
        pdb.find_posteriordb()
    monkeypatch.setenv(pdb.ENV_VAR, str(found))
    assert pdb.find_posteriordb() == found
    with pytest.raises(TypeError):
        pdb.find_posteriordb(3)


def test_loader_rejects_bad_names():
    with pytest.raises(ValueError, match="expected a posterior name"):
        pdb.load_data("eight_schools")
    with pytest.raises(TypeError):
        pdb.load_reference_draws(7)
    with pytest.raises(TypeError):
        pdb.load_reference_draws("arK-arK", by_chain="yes")
    with pytest.raises(ValueError, match="expected one of"):
        load_model("nope")


def test_load_data_types():
    data = pdb.load_data("eight_schools-eight_schools_noncentered")
    assert data["J"] == 8 and isinstance(data["J"], int)
    assert data["y"].shape == (8,) and data["sigma"].shape == (8,)
    kilp = pdb.load_data("kilpisjarvi_mod-kilpisjarvi")
    assert isinstance(kilp["psbeta"], float) and kilp["x"].shape == (kilp["N"],)
    tensors = pdb.data_tensors("arK-arK", dtype=torch.float64)
    assert tensors["y"].dtype == torch.float64 and tensors["y"].shape == (200,)
    with pytest.raises(TypeError, match="floating"):
        pdb.data_tensors("arK-arK", dtype=torch.int64)


@pytest.mark.parametrize("name", pdb.POSTERIOR_NAMES)
def test_reference_draws_and_moments(name):
    flat = pdb.load_reference_draws(name)
    chains = pdb.load_reference_draws(name, by_chain=True)
    assert list(flat) == list(chains)
    m = 4 if name in pdb.HIERARCHICAL_NAMES else 10
    for k in flat:
        assert chains[k].shape == (m, 1000) and flat[k].shape == (m * 1000,)
        np.testing.assert_array_equal(chains[k].reshape(-1), flat[k])
        assert np.all(np.isfinite(flat[k]))
    moments = pdb.reference_moments(name)
    for k, (mean, sd) in moments.items():
        assert mean == pytest.approx(flat[k].mean(), rel=1e-12, abs=1e-12)
        assert sd == pytest.approx(flat[k].std(ddof=1), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("short", SHORT)
def test_model_sites_and_dimension(short, device):
    module = load_model(short)
    with torch.device(device):
        trace = poutine.trace(module.model).get_trace()
    latent = _latent_sites(trace)
    dim = 0
    for name, site in latent.items():
        support = site["fn"].support
        assert not support.is_discrete, f"{short}: site {name} is discrete"
        assert site["value"].device.type == device
        assert site["value"].dtype == torch.get_default_dtype()
        dim += biject_to(support).inv(site["value"]).numel()
    assert dim == module.LATENT_DIM
    # conditioning on a reference draw must set every latent site
    draw = {k: float(v[0]) for k, v in pdb.load_reference_draws(module.NAME).items()}
    with torch.device(device):
        assert set(module.site_values_from_reference(draw)) == set(latent)
    assert torch.isfinite(trace.log_prob_sum())


@pytest.mark.parametrize("short", SHORT)
def test_reference_name_round_trip(short, float64):
    module = load_model(short)
    draws = _draws(module.NAME, _draw_index(module.NAME))
    back = module.to_reference_names(module.site_values_from_reference(draws))
    assert list(back) == list(draws)
    # hierarchical_gp's reference is rounded to within sd/2000 and prop_var is renormalized
    # to sum to 1, so prop_var and the sigma_* computed from it agree to ~1e-4 relative only
    rtol = 1e-3 if short == "hierarchical_gp" else 1e-8
    for k in draws:
        # float64 round trip; gp_pois_regr goes through a Cholesky solve with condition
        # numbers up to ~2e11, whence the absolute tolerance (2e11 * 1e-16 * |f| ~ 1e-4 worst case)
        np.testing.assert_allclose(back[k], draws[k], rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("short", SHORT)
def test_log_joint_finite_at_reference_mean(short, dtype):
    module = load_model(short)
    means = {k: m for k, (m, _) in pdb.reference_moments(module.NAME).items()}
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        values = module.site_values_from_reference(means)
        conditioned = poutine.condition(module.model, data=values)
        log_joint = poutine.trace(conditioned).get_trace().log_prob_sum()
    finally:
        torch.set_default_dtype(old)
    assert torch.isfinite(log_joint)


@pytest.mark.parametrize("short", SHORT)
def test_density_matches_numpy_stan_transcription(short, float64):
    module = load_model(short)
    data = pdb.load_data(module.NAME)
    draws = _draws(module.NAME, _draw_index(module.NAME))
    values = module.site_values_from_reference(draws)
    lp_np = NUMPY_DENSITY[short]({k: v.numpy() for k, v in values.items()}, data)
    # batched: all 8 draws in one conditioned trace (exercises leading batch dimensions)
    lp_pyro = _log_joint_per_draw(module.model, values).numpy()
    assert lp_pyro.shape == (len(DRAW_INDEX),)
    diff_pyro, diff_np = lp_pyro - lp_pyro[0], lp_np - lp_np[0]
    # float64 sums of at most ~1000 terms: rounding error ~1e-12, far inside 1e-6 relative
    np.testing.assert_allclose(diff_pyro, diff_np, rtol=1e-6, atol=1e-6)
    # not a vacuous check: the draws differ in density
    assert np.ptp(diff_np) > 1e-3
    # and the unbatched form, two draws through log_prob_sum
    one = {k: v[0] for k, v in values.items()}
    two = {k: v[-1] for k, v in values.items()}
    lp_one = poutine.trace(poutine.condition(module.model, one)).get_trace().log_prob_sum()
    lp_two = poutine.trace(poutine.condition(module.model, two)).get_trace().log_prob_sum()
    assert float(lp_one - lp_two) == pytest.approx(lp_np[0] - lp_np[-1], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("short", SHORT)
def test_autoguide_and_vectorized_particles(short):
    module = load_model(short)
    pyro.clear_param_store()
    guide = AutoDiagonalNormal(module.model)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=0)
    loss = elbo.loss(module.model, guide)  # every site gets a leading particle dimension
    assert guide.latent_dim == module.LATENT_DIM
    assert np.isfinite(loss)
    with pyro.plate("draws", 4, dim=-1):
        ref = module.to_reference_names(guide())
    assert all(v.shape == (4,) and np.all(np.isfinite(v)) for v in ref.values())


def test_input_validation():
    es = load_model("eight_schools_noncentered")
    draw = {k: float(v[0]) for k, v in pdb.load_reference_draws(es.NAME).items()}
    with pytest.raises(KeyError, match="tau"):
        es.site_values_from_reference({k: v for k, v in draw.items() if k != "tau"})
    with pytest.raises(ValueError, match="tau"):
        es.site_values_from_reference({**draw, "tau": -1.0})
    with pytest.raises(ValueError, match="finite"):
        es.site_values_from_reference({**draw, "mu": float("nan")})
    bad = {"mu": torch.zeros(3), "tau": torch.ones(3), "theta_trans": torch.zeros(3, 7)}
    with pytest.raises(ValueError, match=r"expected event shape \(8,\)"):
        es.to_reference_names(bad)
    garch = load_model("garch11")
    gdraw = {"mu": 5.0, "alpha0": 0.1, "alpha1": 0.6, "beta1": 0.5}
    with pytest.raises(ValueError, match="alpha1 \\+ beta1"):
        garch.site_values_from_reference(gdraw)


# ----------------------------------------------------------------------------------------------
# NUTS smoke runs


def _nuts_smoke(short: str, warmup: int, samples: int, max_tree_depth: int = 10) -> None:
    module = load_model(short)
    pyro.set_rng_seed(0)
    kernel = NUTS(module.model, max_tree_depth=max_tree_depth)
    mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run()
    ref = module.to_reference_names(mcmc.get_samples())
    assert list(ref) == list(pdb.load_reference_draws(module.NAME))
    for k, v in ref.items():
        assert v.shape == (samples,), k
        assert np.all(np.isfinite(v)), k
    for k in ("tau", "sigma"):  # the positive parameters stay in their support
        if k in ref:
            assert np.all(ref[k] > 0), k


def test_nuts_smoke_eight_schools_noncentered():
    # about 7 s on one core
    _nuts_smoke("eight_schools_noncentered", warmup=50, samples=50)


def test_nuts_smoke_kilpisjarvi_short():
    # trees capped at depth 5: about 3 s on one core (the raw-year posterior needs full depth)
    _nuts_smoke("kilpisjarvi", warmup=30, samples=30, max_tree_depth=5)


@pytest.mark.slow
def test_nuts_smoke_kilpisjarvi():
    # the brief's 50 + 50 run at the default tree depth 10: about 170 s on one core
    _nuts_smoke("kilpisjarvi", warmup=50, samples=50)


# ----------------------------------------------------------------------------------------------
# the six models of issue 9: validation, batch dimensions, transformed data, NUTS check

NEW_SIX = ("earnings", "hmm_drive", "kidiq", "mesquite", "nes1976", "sblri")


@pytest.mark.parametrize("short", SHORT)
def test_log_density_two_batch_dims(short, float64):
    # a (2, 4) batch of draws gives a (2, 4) log density equal to the flat batch of 8
    module = load_model(short)
    draws = _draws(module.NAME, _draw_index(module.NAME))
    flat = _log_joint_per_draw(module.model, module.site_values_from_reference(draws))
    square = {k: v.reshape(2, 4) for k, v in draws.items()}
    lp = _log_joint_per_draw(module.model, module.site_values_from_reference(square))
    assert lp.shape == (2, 4)
    # the same float64 arithmetic up to summation order: rounding ~1e-12 relative
    torch.testing.assert_close(lp.reshape(-1), flat, rtol=1e-9, atol=1e-7)


def test_new_models_input_validation():
    from examples.posteriordb import _common

    for short in ("earnings", "kidiq", "mesquite", "nes1976", "sblri"):
        module = load_model(short)
        draw = {k: float(v[0]) for k, v in pdb.load_reference_draws(module.NAME).items()}
        with pytest.raises(ValueError, match="sigma"):
            module.site_values_from_reference({**draw, "sigma": 0.0})
        with pytest.raises(KeyError, match=r"beta\[2\]"):
            module.site_values_from_reference({k: v for k, v in draw.items() if k != "beta[2]"})
        with pytest.raises(ValueError, match=r"expected event shape"):
            module.to_reference_names({"beta": torch.zeros(3, 1), "sigma": torch.ones(3)})
    hmm = load_model("hmm_drive")
    draw = {k: float(v[0]) for k, v in pdb.load_reference_draws(hmm.NAME).items()}
    with pytest.raises(ValueError, match="sum of theta1"):
        hmm.site_values_from_reference({**draw, "theta1[1]": draw["theta1[1]"] - 0.01})
    with pytest.raises(ValueError, match="theta2"):
        hmm.site_values_from_reference({**draw, "theta2[1]": -0.01, "theta2[2]": 1.01})
    with pytest.raises(ValueError, match="increments of lambda"):
        hmm.site_values_from_reference({**draw, "lambda[1]": draw["lambda[2]"] + 1.0})
    with pytest.raises(ValueError, match="positive int"):
        _common.flat_real_vector(0)


def test_nes_age_dummies_follow_transformed_data():
    nes = load_model("nes1976")
    data = pdb.load_data(nes.NAME)
    x = nes.design_matrix(pdb.data_tensors(nes.NAME, dtype=torch.float64)).numpy()
    age = data["age_discrete"]
    assert x.shape == (data["N"], 9)
    for column, level in zip((3, 4, 5), (2, 3, 4), strict=True):
        np.testing.assert_array_equal(x[:, column], (age == level).astype(float))
    # the baseline group (age_discrete == 1) has no dummy; every level occurs
    np.testing.assert_array_equal(x[:, 3:6].sum(-1), (age != 1).astype(float))
    assert all(np.any(age == level) for level in (1, 2, 3, 4))
    np.testing.assert_array_equal(x[:, 0], 1.0)


def test_hmm_transitions_as_in_stan(float64):
    # Stan's gamma[1] has no transition before the first emission (a uniform first state);
    # Pyro's HMM makes one, so it must be uniform whatever theta is, and the other N - 1
    # must be log theta[j, k] (from state j to state k)
    hmm = load_model("hmm_drive")
    draws = _draws(hmm.NAME, DRAW_INDEX[:3])
    values = hmm.site_values_from_reference(draws)
    u = pdb.data_tensors(hmm.NAME)["u"]
    hmm_dist = hmm._hmm(values["theta1"], values["theta2"], values["phi"], values["lambda"], u)
    logits = hmm_dist.transition_logits
    assert logits.shape == (3, hmm.N, 2, 2)
    torch.testing.assert_close(logits[:, 0].exp(), torch.full_like(logits[:, 0], 0.5))
    theta = torch.stack([values["theta1"], values["theta2"]], dim=-2)
    torch.testing.assert_close(logits[:, 1:].exp(), theta[:, None].expand(3, hmm.N - 1, 2, 2))


def _np_design(short: str, d: dict) -> tuple[np.ndarray, np.ndarray]:
    """Design matrix and response of a flat-prior regression, written out from model.stan."""
    ones = np.ones(d["N"])
    if short == "earnings":
        return np.stack([ones, d["height"]], -1).astype(float), d["earn"].astype(float)
    if short == "mesquite":
        names = ("diam1", "diam2", "canopy_height", "total_height", "density", "group")
        return np.stack([ones, *(d[k] for k in names)], -1).astype(float), d["weight"]
    age = d["age_discrete"]
    columns = [ones, d["real_ideo"], d["race_adj"], age == 2, age == 3, age == 4,
               d["educ1"], d["gender"], d["income"]]
    return np.stack(columns, -1).astype(float), d["partyid7"].astype(float)


@pytest.mark.parametrize("short", ["earnings", "mesquite", "nes1976"])
def test_flat_prior_regression_reference_matches_closed_form(short):
    # With p(beta, sigma) flat, beta | y is multivariate t with nu = N - p - 1 degrees of
    # freedom around the least-squares fit, covariance S / (nu - 2) (X'X)^-1, and sigma^2 | y
    # is inverse gamma((N - p - 1) / 2, S / 2). This checks the reading of model.stan
    # (predictors, their order, the age dummies) against the reference draws, independently
    # of any sampler. 10,000 near-independent reference draws: the Monte Carlo sd of a mean is
    # 0.01 sd and of an sd 0.7 %, so the tolerances (0.06 sd, 4 %) are about 6 Monte Carlo sd.
    module = load_model(short)
    x, y = _np_design(short, pdb.load_data(module.NAME))
    n, p = x.shape
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    rss = float(((y - x @ beta) ** 2).sum())
    nu = n - p - 1
    beta_sd = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * rss / (nu - 2))
    a = nu / 2
    sigma_mean = np.sqrt(rss / 2) * np.exp(special.gammaln(a - 0.5) - special.gammaln(a))
    sigma_sd = np.sqrt(rss / 2 / (a - 1) - sigma_mean**2)
    ref = pdb.reference_moments(module.NAME)
    exact = {f"beta[{i + 1}]": (beta[i], beta_sd[i]) for i in range(p)}
    exact["sigma"] = (sigma_mean, sigma_sd)
    assert list(exact) == list(ref)
    for k, (mean, sd) in exact.items():
        ref_mean, ref_sd = ref[k]
        assert abs(mean - ref_mean) < 0.06 * ref_sd, (k, mean, ref_mean, ref_sd)
        assert sd == pytest.approx(ref_sd, rel=0.04), (k, sd, ref_sd)


@pytest.mark.slow
@pytest.mark.parametrize("short", NEW_SIX)
def test_nuts_reproduces_reference_means(short, float64):
    # 500 warmup + 500 draws, one chain (dense mass matrix for the regressions). The check
    # guards against a mis-transcription shared by the model and its numpy version. With an
    # ESS of at least ~150 per parameter (measured: more), the Monte Carlo sd of a mean is
    # at most 1/sqrt(150) = 0.08 reference sd, so 0.25 is about 3 Monte Carlo sd.
    module = load_model(short)
    pyro.set_rng_seed(0)
    kernel = NUTS(module.model, full_mass=short != "hmm_drive")
    mcmc = MCMC(kernel, num_samples=500, warmup_steps=500, disable_progbar=True)
    mcmc.run()
    got = module.to_reference_names(mcmc.get_samples())
    errors = {k: float((got[k].mean() - mean) / sd)
              for k, (mean, sd) in pdb.reference_moments(module.NAME).items()}
    bad = {k: round(e, 3) for k, e in errors.items() if abs(e) > 0.25}
    assert not bad, f"{short}: mean errors in reference sd {bad}"


# ----------------------------------------------------------------------------------------------
# the six larger hierarchical posteriors of issue 20: score identities at the reference draws


class _WidenPrior(Messenger):
    """Multiply the scale of one site's Normal (inside any ``to_event``) by ``factor``."""

    def __init__(self, site: str, factor: float) -> None:
        super().__init__()
        self.site, self.factor = site, factor

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] != self.site:
            return
        fn, event = msg["fn"], 0
        while isinstance(fn, dist.Independent):
            event += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        assert isinstance(fn, dist.Normal), f"{self.site} is not a normal site"
        msg["fn"] = dist.Normal(fn.loc, fn.scale * self.factor).to_event(event)


def _score_identity(
    short: str, model: Callable[[], None] | None = None, thin: int = 1
) -> ScoreIdentityResult:
    module = load_model(short)
    draws = pdb.load_reference_draws(module.NAME, by_chain=True)
    chains = len(next(iter(draws.values())))
    values = module.site_values_from_reference({k: v[:, ::thin].reshape(-1)
                                                for k, v in draws.items()})
    return score_identity(model or module.model, values, chains=chains)


# Measured max |z| (gradient coordinates and trace statistic) at the 4000 reference draws,
# float64, seed 0: pilots 2.32, seeds 2.32, glmm1 2.78, mh 2.90, butterfly 2.47,
# hierarchical_gp 3.50 (Bonferroni thresholds 4.04 to 4.88 at a 1e-3 family-wise rate).
@pytest.mark.parametrize(
    "short",
    [pytest.param(s, marks=() if s in ("pilots", "butterfly") else pytest.mark.slow)
     for s in HIERARCHICAL],
)
def test_score_identities_hold_at_reference_draws(short, float64):
    # E[g] = 0 and E[|g|^2 + tr H] = 0 in the unconstrained space. Each z-score is a mean over
    # the 4000 draws divided by its Monte Carlo sd (sd / sqrt(ESS), ESS estimated from the
    # 4 chains, near 4000 as the stored draws are thinned): under a correct transcription each
    # is about N(0, 1), so max |z| over the d + 1 statistics stays below the Bonferroni bound
    # for a family-wise false-alarm rate of 1e-3 (4.0 for d = 18, 4.9 for d = 933). Costs:
    # butterfly 1 s, pilots 2 s (the default run), mh 2 s, seeds 3 s, glmm1 6 s,
    # hierarchical_gp 10 s (slow).
    result = _score_identity(short)
    assert result.dim == load_model(short).LATENT_DIM
    assert result.grad_n_eff.min() > 1000 and result.trace_n_eff > 1000
    assert result.max_abs_z < z_threshold(result.dim), (
        f"{short}: worst gradient z at {result.worst()}: {result.grad_z.abs().max():.2f}, "
        f"trace z {result.trace_z:.2f}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("short", sorted(set(SHORT) - set(HIERARCHICAL)))
def test_score_identities_hold_for_the_earlier_thirteen(short, float64):
    # the same check on posteriordb's own references (10 chains x 1000 draws): measured max |z|
    # 0.8 to 2.6 against thresholds 3.7 to 3.9. Thinned where a draw is costly: garch11's
    # T x T variance recursion takes 8 min for 10000 draws (10x thinned: ~50 s), hmm_drive's
    # and low_dim_gauss_mix's 50 s and 65 s (5x thinned: ~10 s).
    thin = {"garch11": 10, "hmm_drive": 5, "low_dim_gauss_mix": 5}.get(short, 1)
    result = _score_identity(short, thin=thin)
    assert result.dim == load_model(short).LATENT_DIM
    assert result.max_abs_z < z_threshold(result.dim), (result.worst(), result.trace_z)


@pytest.mark.parametrize(("short", "site"), [("pilots", "b"), ("seeds", "b")])
def test_score_identity_catches_a_wrong_prior_scale(short, site, float64):
    # the prior scale of the centered effects doubled (b ~ normal(10 mu_b, 2 sigma_b) in
    # pilots, b ~ normal(0, 2 sigma) in seeds): measured max |z| 329 and 498, against a
    # threshold near 4 and a null spread of about 1
    module = load_model(short)

    def wrong() -> None:
        with _WidenPrior(site, 2.0):
            module.model()

    result = _score_identity(short, wrong)
    assert result.max_abs_z > 10 * z_threshold(result.dim)


def test_score_identity_exact_and_hutchinson_on_a_gaussian(float64):
    # a correlated Gaussian through positive and interval supports: exact draws pass with the
    # exact Hessian trace and with Hutchinson's estimate; a scale off by 1.5x fails both
    gen = torch.Generator().manual_seed(1)
    chol = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.4, 0.5]])

    def model(scale: float = 1.0) -> None:
        x = pyro.sample("x", dist.MultivariateNormal(torch.zeros(3), scale_tril=scale * chol))
        pyro.sample("s", dist.LogNormal(x[..., 0], 0.5))
        with pyro.plate("pair", 2, dim=-1):  # a plate: the draws go left of it
            pyro.sample("u", dist.Beta(2.0 + x[..., 1].exp(), 3.0))

    n = 4000
    x = torch.randn(n, 3, generator=gen) @ chol.T
    s = (x[:, 0] + 0.5 * torch.randn(n, generator=gen)).exp()
    u = dist.Beta(2.0 + x[:, 1:2].exp().expand(n, 2), 3.0).sample()
    values = {"x": x, "s": s, "u": u}
    for exact_max_dim in (64, 0):
        ok = score_identity(model, values, chains=4, exact_max_dim=exact_max_dim, probes=2)
        assert ok.exact_trace == (exact_max_dim == 64)
        assert ok.names == ("x[0]", "x[1]", "x[2]", "s[0]", "u[0]", "u[1]")
        assert ok.max_abs_z < z_threshold(ok.dim)
        bad = score_identity(lambda: model(1.5), values, chains=4, exact_max_dim=exact_max_dim)
        assert bad.max_abs_z > 2 * z_threshold(bad.dim), bad


def test_score_identity_input_validation(float64):
    module = load_model("pilots")
    values = module.site_values_from_reference(_draws(module.NAME, np.arange(40)))
    with pytest.raises(KeyError, match="sigma_y"):
        score_identity(module.model, {k: v for k, v in values.items() if k != "sigma_y"})
    with pytest.raises(ValueError, match=r"site 'a': expected shape \(n, \*\(5,\)\)"):
        score_identity(module.model, {**values, "a": values["a"][:, :4]})
    with pytest.raises(ValueError, match="3 chains"):
        score_identity(module.model, values, chains=3)
    with pytest.raises(ValueError, match="non-finite"):
        score_identity(module.model, {**values, "mu_a": values["mu_a"].clone().fill_(1e300)})


def test_effective_sample_size_of_ar1(float64):
    # AR(1) with phi = 0.5: ESS = n (1 - phi) / (1 + phi) = n / 3. 4 chains x 5000: the
    # estimate's relative sd is about 3 %, so 15 % is ~5 sd
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(4, 5000, 2, generator=gen)
    x = torch.zeros_like(noise)
    x[:, 0] = noise[:, 0] / math.sqrt(1 - 0.25)
    for t in range(1, 5000):
        x[:, t] = 0.5 * x[:, t - 1] + noise[:, t]
    ess = effective_sample_size(x)
    torch.testing.assert_close(ess, torch.full((2,), 20000 / 3), rtol=0.15, atol=0.0)
    independent = effective_sample_size(noise)
    assert bool(((independent > 0.85 * 20000) & (independent < 1.15 * 20000)).all())
