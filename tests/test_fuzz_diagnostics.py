"""Fuzz the diagnostics that take importance weights: clean values or clean errors.

Log weights are drawn with NaN, +inf, -inf (some or all), wrong ranks, too few draws,
integer/bool dtypes and huge values. A result must be finite (k-hat may be -inf for equal
weights, the documented value), else a ValueError/TypeError naming the function;
``RELAX_SLOW=1`` runs 500 examples per test.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_relax.diagnostics import (
    importance_ess,
    importance_ess_fraction,
    khat_verdict,
    psis_expectation,
    psis_khat,
    summarize,
    weighted_report,
)
from pyro_relax.stochastic.snf import ess_from_log_weights, log_Z_from_log_weights
from pyro_relax.testing.fuzz import assert_clean_failure, fuzz_settings


@st.composite
def log_weights(draw):
    n = draw(st.sampled_from([0, 1, 5, 30]))
    batch = draw(st.sampled_from([(), (2,)]))
    seed = draw(st.integers(0, 2**16))
    lw = torch.randn((n,) + batch, generator=torch.Generator().manual_seed(seed))
    kind = draw(
        st.sampled_from(
            [
                "ok",
                "nan",
                "pos_inf",
                "some_neg_inf",
                "all_neg_inf",
                "col_neg_inf",
                "int",
                "bool",
                "scalar",
                "huge",
                "equal",
            ]
        )
    )
    if lw.numel():
        if kind == "nan":
            lw.view(-1)[seed % lw.numel()] = math.nan
        elif kind == "pos_inf":
            lw.view(-1)[seed % lw.numel()] = math.inf
        elif kind == "some_neg_inf":
            lw.view(-1)[seed % lw.numel()] = -math.inf
        elif kind == "all_neg_inf":
            lw.fill_(-math.inf)
        elif kind == "col_neg_inf" and batch:
            lw[:, 0] = -math.inf
    if kind == "int":
        lw = (3 * lw).round().to(torch.int64)
    elif kind == "bool":
        lw = lw > 0
    elif kind == "scalar":
        lw = torch.tensor(0.5)
    elif kind == "huge":
        lw = lw * 1e300 if lw.dtype == torch.float64 else lw.double() * 1e300
    elif kind == "equal":
        lw = torch.zeros_like(lw)
    return kind, lw


def _khat_not_nan(out):
    # k-hat is -inf for equal weights and +inf where the tail fit fails (both documented)
    smoothed, khat = out
    assert not np.isnan(khat).any(), khat
    assert not np.isnan(smoothed).any() and not np.isposinf(smoothed).any()


def _log_z_check(out):
    # se is inf for a single draw (documented); the estimate itself is finite
    log_z, se = out
    assert torch.isfinite(log_z).all() and not torch.isnan(se).any(), out


FUNCTIONS = {
    "importance_ess": (importance_ess, None),
    "importance_ess_fraction": (importance_ess_fraction, None),
    "psis_khat": (psis_khat, _khat_not_nan),
    "log_Z_from_log_weights": (log_Z_from_log_weights, _log_z_check),
    "weighted_report": (weighted_report, lambda out: _khat_not_nan((np.zeros(1), out["khat"]))),
    "psis_expectation": (lambda lw: psis_expectation(np.ones(np.shape(lw)), lw), None),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@fuzz_settings(max_examples=25)
@given(kind_lw=log_weights())
def test_weight_functions(name, kind_lw):
    kind, lw = kind_lw
    fn, check = FUNCTIONS[name]
    if check is None:
        out = assert_clean_failure(lambda: fn(lw), name)
    else:
        out = assert_clean_failure(lambda: fn(lw), name, finite=False, check=check)
    if not isinstance(out, Exception):
        assert kind not in ("nan", "pos_inf", "all_neg_inf"), f"{name} accepted {kind} weights"
        if kind == "col_neg_inf" and lw.dim() == 2:
            raise AssertionError(f"{name} accepted a batch column of all -inf weights")


@pytest.mark.parametrize("fn", [importance_ess, psis_khat, log_Z_from_log_weights, weighted_report,
                                ess_from_log_weights])
def test_all_neg_inf_is_a_clear_error(fn):
    # Issue 10, item 10: all -inf gave ESS = NaN and log Z = (-inf, NaN).
    with pytest.raises(ValueError, match="all log weights are -inf: no draw has positive weight"):
        fn(torch.full((40,), -math.inf))


@fuzz_settings(max_examples=15)
@given(k=st.one_of(st.floats(allow_nan=True), st.just(True), st.just("0.3"), st.just([0.1, 0.2])))
def test_khat_verdict(k):
    out = assert_clean_failure(lambda: khat_verdict(k), "khat_verdict")
    if not isinstance(out, Exception):
        assert out in ("good", "acceptable", "unreliable")


@fuzz_settings(max_examples=10)
@given(
    kind=st.sampled_from(["ok", "nan", "short", "int", "string", "empty", "ref_shape"]),
)
def test_summarize(kind):
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    samples, ref = {"x": x}, None
    if kind == "nan":
        samples["x"] = x.clone().index_fill_(0, torch.tensor([3]), math.nan)
    elif kind == "short":
        samples["x"] = x[:2]
    elif kind == "int":
        samples["x"] = (3 * x).round().long()
    elif kind == "string":
        samples["x"] = np.array([["a", "b"]] * 40)
    elif kind == "empty":
        samples = {}
    elif kind == "ref_shape":
        ref = {"x": torch.randn(40, 3)}
    out = assert_clean_failure(lambda: summarize(samples, reference=ref), "summarize", finite=False)
    if not isinstance(out, Exception):
        assert kind in ("ok", "int"), kind
        assert np.isfinite(out[["mean", "sd"]].to_numpy()).all()
