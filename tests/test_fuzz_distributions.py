"""Fuzz Flow / FlowDistribution: bad data, sample shapes and constructor arguments.

Every call must give a finite ``log_prob`` of shape ``batch`` (or a correct sample), or a
ValueError/TypeError naming ``Flow``/``FlowDistribution``; ``RELAX_SLOW=1`` runs 500
examples per test.
"""

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_relax.distributions import Flow, FlowDistribution
from pyro_relax.surjections import AbsSurjection, SortSurjection, UniformDequantization
from pyro_relax.testing.fuzz import assert_clean_failure, fuzz_settings
from pyro_relax.testing.strategies import bad_inputs

NAMES = ("Flow", "FlowDistribution")

FLOWS = {
    "abs": lambda: Flow((2,), [AbsSurjection()]),
    "sort": lambda: Flow((3,), [SortSurjection()]),
    "affine_coupling": lambda: Flow((2,), [T.affine_coupling(2, hidden_dims=[8])]),
    "dequantization": lambda: Flow((3,), [T.SigmoidTransform(), UniformDequantization(4)]),
    "identity": lambda: Flow(2, []),
}


@pytest.mark.parametrize("name", sorted(FLOWS))
@fuzz_settings(max_examples=15)
@given(data=st.data())
def test_log_prob_bad_data(name, data):
    flow = FLOWS[name]()
    event = tuple(flow().event_shape)
    kind, x = data.draw(bad_inputs(event))
    # -inf (zero density, or underflow far out in the tails) is a value; NaN and +inf are not
    out = assert_clean_failure(lambda: flow.log_prob(x), NAMES, finite=kind != "huge")
    if not isinstance(out, Exception):
        assert not bool((torch.isnan(out) | (out == float("inf"))).any()), kind
        assert out.shape == x.shape[: x.dim() - len(event)], (kind, out.shape)
        assert out.dtype == torch.float32, (kind, out.dtype)
        assert kind not in ("nan", "inf", "neg_inf", "other_float") or not x.numel(), kind


@pytest.mark.parametrize("name", sorted(FLOWS))
@fuzz_settings(max_examples=8)
@given(shape=st.one_of(st.lists(st.integers(-2, 3), max_size=2), st.integers(-2, 3)))
def test_sample_shapes(name, shape):
    flow = FLOWS[name]()
    event = tuple(flow().event_shape)
    out = assert_clean_failure(lambda: flow.sample(shape), NAMES)
    if not isinstance(out, Exception):
        want = (shape,) if isinstance(shape, int) else tuple(shape)
        assert tuple(out.shape) == want + event


@fuzz_settings(max_examples=15)
@given(
    shape=st.one_of(
        st.integers(-2, 3), st.lists(st.integers(-1, 3), max_size=2), st.none(), st.just("2")
    ),
    layers=st.sampled_from(["list", "single", "none", "bad_item"]),
)
def test_flow_constructor(shape, layers):
    made = {
        "list": lambda: [AbsSurjection()],
        "single": AbsSurjection,
        "none": lambda: None,
        "bad_item": lambda: [3],
    }[layers]()
    out = assert_clean_failure(lambda: Flow(shape, made), NAMES + ("RelaxedLayer",))
    if not isinstance(out, Exception):
        assert layers == "list"
        lp = assert_clean_failure(lambda: out.log_prob(out.sample((2,))), NAMES)
        # a scalar base shape cannot carry a vector layer: a clean error from the distribution
        assert lp.shape == (2,) if not isinstance(lp, Exception) else shape == []


@fuzz_settings(max_examples=10)
@given(
    base=st.sampled_from(["normal", "none", "tensor"]),
    context=st.sampled_from([None, "scalar", "ok", "wrong_batch", "int"]),
    particles=st.sampled_from([1, 0, -1, True, 2.0]),
)
def test_flow_distribution_constructor_and_iw(base, context, particles):
    b = {
        "normal": dist.Normal(torch.zeros(2), 1.0).to_event(1),
        "none": None,
        "tensor": torch.zeros(2),
    }[base]
    ctx = {
        None: None,
        "scalar": torch.tensor(1.0),
        "ok": torch.zeros(3),
        "wrong_batch": torch.zeros(4, 3),
        "int": torch.zeros(3, dtype=torch.int64),
    }[context]
    d = assert_clean_failure(lambda: FlowDistribution(b, [AbsSurjection()], context=ctx), NAMES)
    if isinstance(d, Exception):
        return
    x = torch.randn(5, 2)
    out = assert_clean_failure(lambda: d.log_prob_iw(x, particles), NAMES)
    if not isinstance(out, Exception):
        assert out.shape == (5,) and particles in (1,)
