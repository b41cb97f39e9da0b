"""Fuzz every registered layer with bad inputs: a clean result or a clean error, never raw.

Each test draws inputs from :func:`pyro_relax.testing.strategies.bad_inputs` (wrong event
shapes and ranks, integer/bool/other-float dtypes, NaN/inf, empty batches, negative,
huge and zero values) and checks with :func:`pyro_relax.testing.fuzz.assert_clean_failure`
that the layer either returns finite outputs of the right shapes or raises a
ValueError/TypeError naming the layer. ``RELAX_SLOW=1`` runs 500 examples per test.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_relax.surjections import (
    AbsSurjection,
    AugmentSurjection,
    GenerativeAbs,
    GenerativeSort,
    MaxPool2dSurjection,
    MaxSurjection,
    SliceSurjection,
    SortSurjection,
    StochasticPermutation,
    UniformDequantization,
    VariationalDequantization,
)
from pyro_relax.testing import REGISTRY
from pyro_relax.testing.fuzz import assert_clean_failure, fuzz_settings
from pyro_relax.testing.strategies import bad_inputs
from pyro_relax.transforms import ActNorm, InvertibleConv1x1, LULinear

IDS = [c.name for c in REGISTRY]


def _names(layer):
    """Names an error of this layer may carry: its class, and a wrapped transform's class."""
    names = [type(layer).__name__]
    wrapped = getattr(layer, "wrapped", None)
    if wrapped is not None:
        names += [type(wrapped).__name__, repr(wrapped)[:40]]
    return names


def _expect_shapes(layer, x, side):
    batch = x.shape[: x.dim() - layer.event_dim]
    event = x.shape[len(batch) :]
    out = layer.latent_shape(event) if side == "encode" else layer.data_shape(event)
    return [batch + out, batch]


def _context(case, x):
    if not case.conditional:
        return None
    batch = x.shape[: max(x.dim() - len(case.event_shapes[0]), 0)]
    return torch.randn(tuple(batch) + (case.conditional,))


def _fuzz(case, side, kind_x):
    kind, x = kind_x
    layer = case.build()
    ctx = _context(case, x)
    call = layer.encode if side == "encode" else layer.decode

    def run():
        return call(x, ctx)

    out = assert_clean_failure(run, _names(layer))
    if not isinstance(out, Exception):
        # a success must have the shapes the layer declares and a floating dtype
        want = _expect_shapes(layer, x, side)
        assert tuple(out[0].shape) == tuple(want[0]), (kind, out[0].shape, want[0])
        assert tuple(out[1].shape) == tuple(want[1]), (kind, out[1].shape, want[1])
        assert out[1].is_floating_point(), (kind, out[1].dtype)
        if kind in ("nan", "inf", "neg_inf") and x.numel():
            raise AssertionError(f"{case.name}.{side} accepted {kind} input")


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
@fuzz_settings(max_examples=8)
@given(data=st.data())
def test_encode_bad_inputs(case, data):
    _fuzz(case, "encode", data.draw(bad_inputs(case.event_shapes[0])))


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
@fuzz_settings(max_examples=8)
@given(data=st.data())
def test_decode_bad_inputs(case, data):
    layer = case.build()
    event = tuple(layer.latent_shape(torch.Size(case.event_shapes[0])))
    _fuzz(case, "decode", data.draw(bad_inputs(event)))


def _bad_ints():
    return st.one_of(st.integers(-3, 0), st.just(True), st.just(2.5), st.just("2"), st.none())


CONSTRUCTORS = {
    "AbsSurjection": lambda n: AbsSurjection(n) if n is not None else AbsSurjection(event_dim=0),
    "SortSurjection": lambda n: SortSurjection(event_dim=n),
    "StochasticPermutation": lambda n: StochasticPermutation(event_dim=n),
    "MaxSurjection": lambda n: MaxSurjection(n),
    "MaxPool2dSurjection": lambda n: MaxPool2dSurjection(n),
    "SliceSurjection": lambda n: SliceSurjection(3, n),
    "SliceSurjection.dim": lambda n: SliceSurjection(n, 1),
    "AugmentSurjection": lambda n: AugmentSurjection(2, n),
    "GenerativeAbs": lambda n: GenerativeAbs(n),
    "GenerativeSort": lambda n: GenerativeSort(n),
    "UniformDequantization": lambda n: UniformDequantization(num_bins=n),
    "VariationalDequantization": lambda n: VariationalDequantization(2, num_bins=n),
    "ActNorm": lambda n: ActNorm(n),
    "LULinear": lambda n: LULinear(n),
    "InvertibleConv1x1": lambda n: InvertibleConv1x1(n),
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@fuzz_settings(max_examples=6)
@given(n=_bad_ints())
def test_constructor_refuses_bad_sizes(name, n):
    out = assert_clean_failure(lambda: CONSTRUCTORS[name](n), name.split(".")[0])
    assert isinstance(out, Exception), f"{name}({n!r}) was accepted"


TRANSFORMS = {
    "ActNorm": (lambda: ActNorm(2), (2,)),
    "LULinear": (lambda: LULinear(2), (2,)),
    "InvertibleConv1x1": (lambda: InvertibleConv1x1(2), (2, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@fuzz_settings(max_examples=10)
@given(data=st.data())
def test_bare_transforms_bad_inputs(name, data):
    make, event = TRANSFORMS[name]
    t = make()
    kind, x = data.draw(bad_inputs(event))
    for fn in (t, t.inv):
        # a bare Pyro-style transform does not check values (Pyro's do not); layers and flows do
        finite = kind not in ("nan", "inf", "neg_inf", "huge")
        out = assert_clean_failure(lambda fn=fn: fn(x), name, finite=finite)
        if not isinstance(out, Exception):
            assert out.shape == x.shape and out.dtype == x.dtype, kind
            assert x.is_floating_point(), f"{name} accepted {x.dtype} input"
