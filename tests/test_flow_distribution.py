"""FlowDistribution and Flow: agreement with Pyro, plates, shapes, errors."""

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch

from pyro_relax.distributions import Flow, FlowDistribution
from pyro_relax.surjections import AbsSurjection, AugmentSurjection
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
