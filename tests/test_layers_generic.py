"""Every generic check on every registered layer (add a layer to the registry to get them)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_relax.testing import REGISTRY, checks
from pyro_relax.testing.strategies import batch_shapes, layer_cases, seeds

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
IDS = [c.name for c in REGISTRY]


def _inputs(case, event_shape, batch=(6,), dtype=torch.float32, device="cpu"):
    x = case.sample_data(torch.Size(batch) + torch.Size(event_shape), dtype, device)
    ctx = None
    if case.conditional:
        ctx = torch.randn(tuple(batch) + (case.conditional,), dtype=dtype, device=device)
    return x, ctx


def _layer(case, event_shape, device="cpu"):
    return case.build(event_shape).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_shapes(case, device):
    for shape in case.event_shapes:
        layer = _layer(case, shape, device)
        for batch in [(), (4,), (2, 3)]:
            x, ctx = _inputs(case, shape, batch, device=device)
            checks.check_shapes(layer, x, ctx)


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_batch_consistency(case):
    layer = _layer(case, case.event_shapes[0])
    x, ctx = _inputs(case, case.event_shapes[0])
    checks.check_batch_consistency(layer, x, ctx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case", [c for c in REGISTRY if checks.kind_of(c.build()) != "stochastic"], ids=lambda c: c.name
)
def test_round_trip(case, device):
    layer = _layer(case, case.event_shapes[0], device)
    x, ctx = _inputs(case, case.event_shapes[0], device=device)
    checks.check_round_trip(layer, x, ctx)


@pytest.mark.parametrize(
    "case", [c for c in REGISTRY if not c.build().stochastic_forward], ids=lambda c: c.name
)
def test_decode_contribution_is_minus_encode(case):
    layer = _layer(case, case.event_shapes[0])
    x, ctx = _inputs(case, case.event_shapes[0])
    z, _ = layer.encode(x, ctx)
    checks.check_decode_contribution(layer, z.detach(), ctx)


@given(
    case=layer_cases(lambda c: c.build().bijective),
    which=st.integers(0, 10),
    batch=batch_shapes(max_dims=1, max_side=3).filter(lambda b: len(b) == 1),
    seed=seeds(),
)
def test_log_det_matches_autograd_jacobian(case, which, batch, seed):
    torch.manual_seed(seed)
    shape = case.event_shapes[which % len(case.event_shapes)]
    layer = _layer(case, shape)
    x, ctx = _inputs(case, shape, batch, dtype=torch.float64)
    checks.check_log_det_autograd(layer, x, ctx)


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_float64_in_float64_out(case):
    layer = _layer(case, case.event_shapes[0])
    x, ctx = _inputs(case, case.event_shapes[0], dtype=torch.float64)
    checks.check_dtype_follows_input(layer, x, ctx)


@pytest.mark.parametrize("case", [c for c in REGISTRY if c.meta], ids=lambda c: c.name)
def test_meta_device(case):
    layer = _layer(case, case.event_shapes[0])
    x, ctx = _inputs(case, case.event_shapes[0])
    checks.check_meta_device(layer, x, ctx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_gradients_reach_parameters(case, device):
    layer = _layer(case, case.event_shapes[0], device)
    x, ctx = _inputs(case, case.event_shapes[0], device=device)
    checks.check_gradients(layer, x, ctx, case.grad_exempt)


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_save_load(case):
    layer = _layer(case, case.event_shapes[0])
    x, ctx = _inputs(case, case.event_shapes[0])
    checks.check_save_load(layer, x, ctx)


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_repr(case):
    checks.check_repr(_layer(case, case.event_shapes[0]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_output_on_input_device(case, device):
    layer = _layer(case, case.event_shapes[0], device)
    x, ctx = _inputs(case, case.event_shapes[0], device=device)
    z, v = layer.encode(x, ctx)
    x2, s = layer.decode(z, ctx)
    assert {t.device.type for t in (z, v, x2, s)} == {torch.device(device).type}


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_nan_input_raises(case):
    layer = _layer(case, case.event_shapes[0])
    x, ctx = _inputs(case, case.event_shapes[0])
    x = x.clone()
    x.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer.encode(x, ctx)


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_integer_input_matches_float(case):
    # Issue 10, item 3: integer data was run through the layers in the integer dtype.
    layer = _layer(case, case.event_shapes[0])
    x, ctx = _inputs(case, case.event_shapes[0])
    checks.check_integer_input(layer, 3 * x, ctx)


def test_registry_count_reported(capsys):
    # The count is printed so the test run shows how many layers got every check.
    print(f"\nlayer registry: {len(REGISTRY)} cases: {', '.join(IDS)}")
    assert len(REGISTRY) == len(set(IDS))
