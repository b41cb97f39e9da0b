"""FlowDistribution and Flow: agreement with Pyro, plates, shapes, errors."""

import math

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch

from pyro_relax.distributions import Flow, FlowDistribution
from pyro_relax.surjections import (
    AbsSurjection,
    AugmentSurjection,
    SortSurjection,
    UniformDequantization,
    VariationalDequantization,
)
from pyro_relax.transforms.stacks import coupling_stack

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _normal(d, device="cpu"):
    return dist.Normal(torch.zeros(d, device=device), 1.0).to_event(1)


@pytest.mark.parametrize(
    "base, make",
    [
        (lambda: _normal(2), lambda: [T.spline_coupling(2), T.Permute(torch.tensor([1, 0]))]),
        (lambda: _normal(3), lambda: [T.affine_coupling(3), T.ExpTransform()]),
        # a transform that changes the event rank: (3,) -> (3, 3) Cholesky factors and back
        (lambda: dist.LKJCholesky(3, 1.5), lambda: [T.CorrCholeskyTransform().inv]),
    ],
    ids=["spline", "affine_exp", "event_rank_change"],
)
def test_matches_pyro_transformed_distribution(base, make):
    layers = make()
    ours = FlowDistribution(base(), layers)
    ref = dist.TransformedDistribution(base(), layers)
    x = ref.sample((5,))
    assert ours.event_shape == ref.event_shape
    torch.testing.assert_close(ours.log_prob(x), ref.log_prob(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_plate_observed_and_sampled(device):
    flow = Flow((2,), coupling_stack(2, 2, 8) + [AbsSurjection()]).to(device)
    data = torch.randn(7, 2, device=device)

    def model():
        with pyro.plate("n", 7):
            return pyro.sample("x", flow(), obs=data)

    tr = pyro.poutine.trace(model).get_trace()
    tr.compute_log_prob()
    assert tr.nodes["x"]["log_prob"].shape == (7,)
    with pyro.plate("m", 3):
        x = pyro.sample("y", flow())
    assert x.shape == (3, 2) and x.device.type == torch.device(device).type
    expanded = flow().expand((4,))
    assert expanded.batch_shape == (4,) and expanded.log_prob(data[:4]).shape == (4,)


def test_flags_iw_and_gradients():
    exact = Flow((2,), coupling_stack(2, 1, 8, kind="affine"))
    d = exact()
    assert d.exact and d.has_rsample
    x = torch.randn(6, 2)
    torch.testing.assert_close(d.log_prob_iw(x, 7), d.log_prob(x))
    bound = Flow((3,), coupling_stack(3, 1, 8, kind="affine") + [AugmentSurjection(2, 1)])()
    assert not bound.exact and bound.event_shape == (2,)
    assert bound.log_prob_iw(x[:, :2], 16).shape == (6,)
    exact().rsample((5,)).square().sum().backward()
    assert all(p.grad is not None for p in exact.parameters())


def test_context_is_passed_to_conditional_layers():
    layer = T.conditional_affine_coupling(2, context_dim=3, hidden_dims=[8])
    flow = Flow((2,), [layer, AbsSurjection()])
    ctx = torch.randn(4, 3)
    d = flow(ctx)
    assert d.batch_shape == (4,)
    assert d.sample().shape == (4, 2) and d.log_prob(torch.randn(4, 2)).shape == (4,)


def test_bad_input_raises():
    d = Flow((2,), coupling_stack(2, 1, 8))()
    with pytest.raises(ValueError, match="expected event shape"):
        d.log_prob(torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        d.log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="num_particles"):
        d.log_prob_iw(torch.randn(2, 2), 0)
    with pytest.raises(TypeError):
        FlowDistribution("not a distribution", [])
    with pytest.raises(ValueError, match="base shape"):
        Flow((0,), [])


# -- issue 10, item 3: integer and bool data ---------------------------------------------
@pytest.mark.parametrize(
    "make", [lambda: AbsSurjection(), lambda: SortSurjection()], ids=["abs", "sort"]
)
def test_integer_data_gives_the_float_likelihood(make):
    # Before the fix the fair-sign constant -D log 2 was truncated to the integer dtype:
    # abs gave -4.338 for [[1, 2]] instead of -5.724.
    flow = Flow((2,), [make()])
    lp_int = flow.log_prob(torch.tensor([[1, 2]]))
    lp_float = flow.log_prob(torch.tensor([[1.0, 2.0]]))
    assert lp_int.dtype == torch.float32
    torch.testing.assert_close(lp_int, lp_float)
    lp_bool = flow.log_prob(torch.tensor([[True, False]]))
    torch.testing.assert_close(lp_bool, flow.log_prob(torch.tensor([[1.0, 0.0]])))


def test_integer_data_through_pyro_transforms_and_dequantization():
    flow = Flow((2,), [T.affine_coupling(2, hidden_dims=[8])])
    x = torch.tensor([[1, -2], [0, 3]])
    torch.testing.assert_close(flow.log_prob(x), flow.log_prob(x.float()))
    # Dequantization takes integers: an integer tensor and its float copy give the
    # same bound under the same noise.
    deq = Flow((3,), [T.SigmoidTransform(), UniformDequantization(num_bins=4)])
    counts = torch.tensor([[0, 3, 1]])
    torch.manual_seed(1)
    a = deq.log_prob(counts)
    torch.manual_seed(1)
    b = deq.log_prob(counts.float())
    torch.testing.assert_close(a, b)
    layer = VariationalDequantization(3, num_bins=4, hidden=(8,))
    z, v = layer.encode(counts)
    assert z.dtype == torch.float32 and v.shape == (1,)


# -- issue 10, item 7: empty batches, dtypes, constructor arguments ---------------------
@pytest.mark.parametrize(
    "make",
    [lambda: [AbsSurjection()], lambda: [T.affine_coupling(2, hidden_dims=[8])], lambda: []],
    ids=["abs", "affine_coupling", "identity"],
)
def test_empty_batch_just_works(make):
    flow = Flow((2,), make())
    lp = flow.log_prob(torch.zeros(0, 2))
    assert lp.shape == (0,)
    assert flow.sample((0,)).shape == (0, 2)
    x, log_q = flow().rsample_and_log_q(torch.Size((0, 3)))
    assert x.shape == (0, 3, 2) and log_q.shape == (0, 3)


def test_float64_into_float32_flow_is_a_type_error():
    flow = Flow((2,), [T.affine_coupling(2, hidden_dims=[8])])
    with pytest.raises(
        TypeError,
        match=r"FlowDistribution.log_prob: expected torch.float32.*"
        r"got torch.float64",
    ):
        flow.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    # the documented way: move the flow
    assert flow.double().log_prob(torch.zeros(3, 2, dtype=torch.float64)).dtype == torch.float64


def test_int_shape_and_empty_layer_list():
    flow = Flow(2, [])
    assert flow.base_shape == (2,)
    x = torch.randn(4, 2)
    expected = dist.Normal(0.0, 1.0).log_prob(x).sum(-1)
    torch.testing.assert_close(flow.log_prob(x), expected)
    with pytest.raises(TypeError, match="Flow: expected a list of layers"):
        Flow((2,), AbsSurjection())
    with pytest.raises(ValueError, match="Flow: expected a base shape"):
        Flow((2, 0), [])
    with pytest.raises(ValueError, match="Flow: expected a base shape"):
        Flow("2", [])
    with pytest.raises(ValueError, match="Flow.sample: expected a sample shape"):
        flow.sample((-1,))


def test_layer_with_smaller_event_dim_sums_over_the_rest():
    # Found by the slow fuzz run: a vector layer in a flow over (3, 2) events gave a
    # log_prob of shape (4, 3) broadcast against (4,) instead of one value per event.
    flow = Flow((3, 2), [AbsSurjection()])
    x = torch.ones(4, 3, 2)
    expected = dist.Normal(0.0, 1.0).log_prob(x).sum((-1, -2)) - 6 * math.log(2.0)
    torch.testing.assert_close(flow.log_prob(x), expected)
    assert flow().rsample_and_log_q(torch.Size((5,)))[1].shape == (5,)
    with pytest.raises(ValueError, match="FlowDistribution: SortSurjection has event_dim 2"):
        Flow((3,), [SortSurjection(event_dim=2)])()


def test_abs_flow_at_zero_names_the_domain_edge_not_an_overflow():
    """Issue 23: at x = 0 the softplus under abs has no finite density; the message said the
    data "overflows" the flow."""
    flow = Flow((2,), [T.SoftplusTransform(), AbsSurjection()])
    with pytest.raises(ValueError, match="edge of a layer's domain") as info:
        flow.log_prob(torch.zeros(3, 2))
    assert "data point [0] = [0.0, 0.0]" in str(info.value)
