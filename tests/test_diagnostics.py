"""Tests for pyro_relax.diagnostics: PSIS, importance ESS, ArviZ conversion, summaries, plots.

The PSIS cases use a target p = N(0, 1) and a proposal q = N(0, s^2). The weights
w = p/q = s exp(c x^2), c = (1/s^2 - 1)/2, have the Pareto tail P(w > t) ~ t^(-1/(1-s^2)),
so the true k = 1 - s^2: negative (bounded weights) for s > 1, 0.75 for s = 0.5.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_relax.diagnostics import (
    SUMMARY_COLUMNS,
    from_mcmc,
    importance_ess,
    importance_ess_fraction,
    khat_verdict,
    plot_elbo,
    plot_khat,
    plot_pairs,
    psis_expectation,
    psis_khat,
    summarize,
    to_inference_data,
    weighted_report,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N = 4000


def gaussian_log_weights(s: float, n: int = N, seed: int = 0, device: str = "cpu") -> tuple:
    """Draws x ~ N(0, s^2) and log w = log N(x; 0, 1) - log N(x; 0, s^2)."""
    torch.manual_seed(seed)
    x = s * torch.randn(n, dtype=torch.float64, device=device)
    log_w = -0.5 * x**2 + 0.5 * (x / s) ** 2 + math.log(s)
    return x, log_w


def mean_khat(s: float, replicates: int) -> tuple[float, float]:
    """Mean k-hat over independent replicates and its standard error."""
    ks = np.array([psis_khat(gaussian_log_weights(s, seed=r)[1])[1] for r in range(replicates)])
    return float(ks.mean()), float(ks.std(ddof=1) / math.sqrt(replicates))


# ----------------------------------------------------------------------------- PSIS


@pytest.mark.parametrize("device", DEVICES)
def test_khat_wide_proposal_is_good(device: str) -> None:
    # True k = 1 - 4 = -3; over 30 seeds k-hat was -1.68 +- 0.10, so 0.5 is > 20 sd away.
    _, log_w = gaussian_log_weights(2.0, device=device)
    smoothed, khat = psis_khat(log_w)
    assert isinstance(khat, float) and khat < 0.5
    assert khat_verdict(khat) == "good"
    assert smoothed.shape == (N,)
    np.testing.assert_allclose(np.exp(smoothed).sum(), 1.0, rtol=1e-10)


def test_khat_narrow_proposal_is_flagged() -> None:
    # s = 0.5: true k = 0.75. One replicate of n = 4000 has sd ~0.095 and a pre-asymptotic
    # downward bias (mean 0.69 over 30 seeds), so a single k-hat > 0.7 is a coin flip.
    # The mean of 16 replicates (se ~0.024) must lie above 0.5 (not "good"; ~8 se margin)
    # and below the true 0.75 + 5 se.
    mean, se = mean_khat(0.5, 16)
    assert 0.5 < mean < 0.75 + 5 * se
    # s = 0.2: true k = 0.96; measured mean 0.865, sd 0.107 -> 0.7 is ~6 se below the mean.
    mean, se = mean_khat(0.2, 16)
    assert mean - 5 * se > 0.6 and khat_verdict(mean) == "unreliable"


@pytest.mark.parametrize("k_true", [0.3, 0.9])
def test_khat_calibrated_on_exact_pareto_weights(k_true: float) -> None:
    # log w = -k log U gives P(w > t) = t^(-1/k): an exact Pareto tail of shape k.
    # Mean of 16 replicates within 5 standard errors (se from the replicates' spread).
    ks = []
    for r in range(16):
        torch.manual_seed(100 + r)
        u = torch.rand(N, dtype=torch.float64)
        ks.append(psis_khat(-k_true * torch.log(u))[1])
    ks = np.array(ks)
    se = ks.std(ddof=1) / 4.0
    assert abs(ks.mean() - k_true) < 5 * se


def test_khat_batched_matches_columns() -> None:
    _, wide = gaussian_log_weights(2.0, seed=1)
    _, narrow = gaussian_log_weights(0.2, seed=2)
    smoothed, khat = psis_khat(torch.stack([wide, narrow], dim=-1))
    assert smoothed.shape == (N, 2) and khat.shape == (2,)
    for j, lw in enumerate([wide, narrow]):
        s_j, k_j = psis_khat(lw)
        np.testing.assert_allclose(smoothed[:, j], s_j)
        assert khat[j] == k_j
    np.testing.assert_allclose(np.exp(smoothed).sum(0), [1.0, 1.0], rtol=1e-10)


def test_equal_weights_have_no_tail() -> None:
    smoothed, khat = psis_khat(np.full(100, 3.0))
    assert khat == -np.inf and khat_verdict(khat) == "good"
    np.testing.assert_allclose(smoothed, -np.log(100.0))


def test_zero_weights_allowed() -> None:
    _, log_w = gaussian_log_weights(2.0, n=500)
    log_w[:50] = -torch.inf
    smoothed, khat = psis_khat(log_w)
    assert np.isneginf(smoothed[:50]).all() and np.isfinite(smoothed[50:]).all()
    assert np.isfinite(khat)
    np.testing.assert_allclose(np.exp(smoothed).sum(), 1.0, rtol=1e-10)


def test_khat_verdict_thresholds() -> None:
    assert [khat_verdict(k) for k in (-1.0, 0.49, 0.5, 0.69, 0.7, 2.0, math.inf)] == [
        "good", "good", "acceptable", "acceptable", "unreliable", "unreliable", "unreliable"
    ]
    assert khat_verdict(torch.tensor(0.6)) == "acceptable"
    with pytest.raises(ValueError, match="NaN"):
        khat_verdict(float("nan"))
    with pytest.raises(TypeError):
        khat_verdict("0.3")
    with pytest.raises(TypeError, match="scalar"):
        khat_verdict(np.array([0.1, 0.2]))


# ----------------------------------------------------------------------------- ESS


@pytest.mark.parametrize("device", DEVICES)
def test_importance_ess_extremes(device: str) -> None:
    n = 250
    equal = torch.full((n,), -7.0, device=device)
    assert importance_ess(equal) == pytest.approx(n, rel=1e-12)
    assert importance_ess_fraction(equal) == pytest.approx(1.0, rel=1e-12)
    dominant = torch.full((n,), -torch.inf, device=device)
    dominant[17] = 0.0
    assert importance_ess(dominant) == 1.0
    almost = torch.full((n,), -800.0, device=device, dtype=torch.float64)
    almost[3] = 0.0
    assert importance_ess(almost) == pytest.approx(1.0, abs=1e-12)
    # Shifting every log weight by a huge constant changes nothing (no overflow).
    _, log_w = gaussian_log_weights(2.0, n=n, device=device)
    assert importance_ess(log_w + 1e5) == pytest.approx(importance_ess(log_w), rel=1e-10)
    batched = importance_ess(torch.stack([equal.double(), almost], dim=1))
    np.testing.assert_allclose(batched, [n, 1.0], rtol=1e-10)


def test_importance_ess_fraction_matches_theory() -> None:
    # ESS/n -> E_q[w]^2 / E_q[w^2] = sqrt(2 - 1/s^2) / s = 0.6614 for s = 2. The estimate
    # f = a^2 / b (a, b the means of w, w^2) has delta-method se from the same draws.
    s = 2.0
    _, log_w = gaussian_log_weights(s, seed=3)
    w = torch.exp(log_w).numpy()
    a, b = w.mean(), (w**2).mean()
    grad = np.array([2 * a / b, -(a**2) / b**2])
    se = math.sqrt(grad @ np.cov(np.stack([w, w**2])) @ grad / N)
    assert abs(importance_ess_fraction(log_w) - math.sqrt(2 - 1 / s**2) / s) < 5 * se


@pytest.mark.parametrize("device", DEVICES)
def test_psis_expectation_recovers_moments(device: str) -> None:
    # Target N(0, 1): E[x] = 0 (var 1), E[x^2] = 1 (var 2). Tolerance 5 se, se = sd / sqrt(ESS).
    x, log_w = gaussian_log_weights(2.0, seed=4, device=device)
    ess = importance_ess(log_w)
    m1 = psis_expectation(x, log_w)
    m2 = psis_expectation(x**2, log_w)
    assert m1.shape == () and abs(float(m1)) < 5 / math.sqrt(ess)
    assert abs(float(m2) - 1.0) < 5 * math.sqrt(2.0 / ess)
    both = psis_expectation(torch.stack([x, x**2], dim=-1), log_w)
    np.testing.assert_allclose(both, [m1, m2], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.tensor([0.0] * 30 + [float("nan")]), "NaN"),
        (torch.tensor([0.0] * 30 + [float("inf")]), r"\+inf"),
        (torch.zeros(5), "at least"),
        (torch.full((40,), -math.inf), "all log weights are -inf: no draw has positive weight"),
        (torch.tensor(0.0), "scalar"),
    ],
)
def test_bad_log_weights_raise(bad: torch.Tensor, match: str) -> None:
    for fn in (psis_khat, importance_ess, importance_ess_fraction):
        with pytest.raises(ValueError, match=match) as info:
            fn(bad)
        assert str(info.value).startswith(f"{fn.__name__}:"), str(info.value)


def test_psis_expectation_bad_values() -> None:
    _, log_w = gaussian_log_weights(2.0, n=100)
    with pytest.raises(ValueError, match="shape"):
        psis_expectation(torch.zeros(99), log_w)
    with pytest.raises(ValueError, match="finite"):
        psis_expectation(torch.full((100,), math.inf), log_w)
    with pytest.raises(ValueError, match="at least 25"):
        psis_khat(torch.zeros(20))


# ----------------------------------------------------------------------------- conversion


def test_to_inference_data_round_trip() -> None:
    torch.manual_seed(5)
    samples = {"a": torch.randn(200), "b": torch.randn(200, 2, 3, dtype=torch.float64)}
    log_w = torch.randn(200)
    elbo = -torch.linspace(10.0, 1.0, 50)
    idata = to_inference_data(samples, log_weights=log_w, elbo_trace=elbo, chains=2)
    post = idata["posterior"]
    assert post["a"].shape == (2, 100) and post["b"].shape == (2, 100, 2, 3)
    np.testing.assert_allclose(post["b"].values.reshape(200, 2, 3), samples["b"].numpy())
    np.testing.assert_allclose(post["a"].values[1], samples["a"][100:].numpy(), rtol=1e-7)
    lw = idata["sample_stats"]["log_weight"]
    assert lw.shape == (2, 100)
    np.testing.assert_allclose(lw.values.reshape(-1), log_w.numpy(), rtol=1e-7)
    trace = idata["optimization"]["elbo"]
    assert trace.dims == ("step",)
    np.testing.assert_allclose(trace.values, elbo.numpy(), rtol=1e-7)


def test_to_inference_data_bad_input() -> None:
    with pytest.raises(ValueError, match="divide"):
        to_inference_data({"a": torch.zeros(10)}, chains=3)
    with pytest.raises(ValueError, match="same number of draws"):
        to_inference_data({"a": torch.zeros(10), "b": torch.zeros(11)})
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        to_inference_data({"a": torch.zeros(10)}, log_weights=torch.zeros(9))
    with pytest.raises(ValueError, match="NaN"):
        to_inference_data({"a": torch.tensor([0.0, math.nan])})
    with pytest.raises(ValueError, match="1-D"):
        to_inference_data({"a": torch.zeros(10)}, elbo_trace=torch.zeros(2, 2))
    with pytest.raises(TypeError):
        to_inference_data([torch.zeros(3)])
    with pytest.raises(ValueError, match="chains"):
        to_inference_data({"a": torch.zeros(10)}, chains=0)


@pytest.mark.parametrize("use_from_pyro", [True, False])
def test_from_mcmc(use_from_pyro: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import arviz
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS

    def model() -> None:
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    torch.manual_seed(6)
    mcmc = MCMC(NUTS(model), num_samples=60, warmup_steps=30, disable_progbar=True)
    mcmc.run()
    if not use_from_pyro:  # the ArviZ 1.x path
        monkeypatch.delattr(arviz, "from_pyro", raising=False)
    idata = from_mcmc(mcmc)
    x = idata["posterior"]["x"]
    assert x.shape == (1, 60, 2)
    np.testing.assert_allclose(x.values, mcmc.get_samples(group_by_chain=True)["x"].numpy())
    with pytest.raises(TypeError, match="MCMC"):
        from_mcmc({"x": torch.zeros(3)})


# ----------------------------------------------------------------------------- summaries


def test_summarize_columns_and_reference() -> None:
    # sd of (mean - ref_mean) = sqrt(1/n + 1/m) = 0.045; sd of the sd ratio ~
    # 2 * sqrt(1/(2n) + 1/(2m)) = 0.063 for n = m = 1000: tolerances are 5 of these.
    torch.manual_seed(7)
    n = 1000
    samples = {"x": torch.randn(n, 2) * torch.tensor([1.0, 2.0]) + torch.tensor([0.0, 0.5])}
    reference = {"x": torch.randn(n, 2)}
    table = summarize(samples, reference=reference, chains=2)
    assert list(table.index) == ["x[0]", "x[1]"]
    assert list(table.columns) == [*SUMMARY_COLUMNS, "ref_mean", "ref_sd", "mean_err_sd",
                                   "sd_err_sd"]
    assert abs(table.loc["x[0]", "mean_err_sd"]) < 5 * 0.045
    assert abs(table.loc["x[1]", "mean_err_sd"] - 0.5) < 5 * 0.045
    assert abs(table.loc["x[0]", "sd_err_sd"]) < 5 * 0.063
    assert abs(table.loc["x[1]", "sd_err_sd"] - 1.0) < 5 * 0.063
    # iid draws in two chains: R-hat near 1, bulk ESS near n.
    assert (table["r_hat"] - 1.0).abs().max() < 0.02
    assert (table["ess_bulk"] > 0.5 * n).all()


def test_summarize_inference_data_and_partial_reference() -> None:
    torch.manual_seed(8)
    idata = to_inference_data({"a": torch.randn(400), "b": torch.randn(400, 3)}, chains=2)
    table = summarize(idata, reference={"a": torch.randn(300)})
    assert len(table) == 4 and np.isfinite(table.loc["a", "mean_err_sd"])
    assert table.loc[["b[0]", "b[1]", "b[2]"], "ref_mean"].isna().all()
    plain = summarize(idata)
    assert list(plain.columns) == list(SUMMARY_COLUMNS)


def test_summarize_bad_input() -> None:
    samples = {"x": torch.randn(100, 2)}
    with pytest.raises(ValueError, match="not in the posterior"):
        summarize(samples, reference={"y": torch.randn(100)})
    with pytest.raises(ValueError, match=r"expected event shape \(2,\), got \(3,\)"):
        summarize(samples, reference={"x": torch.randn(100, 3)})
    with pytest.raises(ValueError, match="at least 4"):
        summarize({"x": torch.randn(3)})
    with pytest.raises(TypeError):
        summarize(torch.randn(100))


def test_weighted_report() -> None:
    _, log_w = gaussian_log_weights(2.0, seed=9)
    report = weighted_report(log_w)
    assert set(report) == {"n", "khat", "verdict", "ess", "ess_fraction"}
    assert report["n"] == N and report["verdict"] == "good"
    assert report["ess"] == pytest.approx(N * report["ess_fraction"])
    assert report["khat"] == psis_khat(log_w)[1]
    with pytest.raises(ValueError, match="1-D"):
        weighted_report(torch.zeros(100, 2))


# ----------------------------------------------------------------------------- plots

PNG_MAGIC = b"\x89PNG"


def test_plots_return_figures_and_write_png(tmp_path) -> None:
    from matplotlib.figure import Figure

    torch.manual_seed(10)
    fig = plot_elbo(-torch.exp(-torch.arange(300.0) / 60.0), path=tmp_path / "elbo.png")
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2
    samples = {"a": torch.randn(500), "b": torch.randn(500, 4), "c": torch.randn(500, 2)}
    fig = plot_pairs(samples, {"b": torch.randn(800, 4)}, path=tmp_path / "pairs.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 6 * 7 // 2  # 6 of 7 components
    fig = plot_khat({"wide": -1.7, "mid": 0.6, "narrow": 0.9, "broken": math.inf},
                    path=tmp_path / "khat.png")
    assert isinstance(fig, Figure) and len(fig.axes[0].patches) == 4
    for name in ("elbo", "pairs", "khat"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == PNG_MAGIC


def test_plots_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        plot_elbo([1.0, math.nan])
    with pytest.raises(ValueError, match="1-D"):
        plot_elbo(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shares no component"):
        plot_pairs({"a": torch.randn(50)}, {"z": torch.randn(50)})
    with pytest.raises(ValueError, match="max_components"):
        plot_pairs({"a": torch.randn(50)}, max_components=0)
    with pytest.raises(ValueError, match="NaN"):
        plot_khat({"a": math.nan})
    with pytest.raises(TypeError):
        plot_khat({})


def test_import_is_lazy() -> None:
    code = (
        "import sys, pyro_relax.diagnostics;"
        "print('matplotlib' in sys.modules, 'arviz' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("negated", [True, False])
def test_arviz_1x_psis_sign_is_detected(negated: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # ArviZ 1.x's array_stats.psislw takes the negated log ratio (arviz-stats 1.3). A fake
    # backend with either sign convention must give the same k-hat as ArviZ 0.2x's psislw.
    import types

    from pyro_relax.diagnostics import _compat

    reference = _compat.import_arviz().psislw if hasattr(_compat.import_arviz(), "psislw") else None
    if reference is None:  # on ArviZ 1.x itself the real backend is exercised elsewhere
        from arviz_stats.base import array_stats

        def reference(lw: np.ndarray) -> tuple:
            return array_stats.psislw(-lw, r_eff=1.0)

    def fake_psislw(ary: np.ndarray, r_eff: float = 1.0) -> tuple:
        return reference(-ary if negated else ary)

    base = types.ModuleType("arviz_stats.base")
    base.array_stats = types.SimpleNamespace(psislw=fake_psislw)
    package = types.ModuleType("arviz_stats")
    package.base = base
    monkeypatch.setitem(sys.modules, "arviz_stats", package)
    monkeypatch.setitem(sys.modules, "arviz_stats.base", base)
    _, log_w = gaussian_log_weights(0.5, seed=11)
    smoothed, khat = _compat._smooth_1x(log_w.numpy())
    expected_smoothed, expected_khat = reference(log_w.numpy())
    assert khat == pytest.approx(float(expected_khat))
    np.testing.assert_allclose(smoothed, expected_smoothed)
