"""Tests of the Glow-lineage bijections: ActNorm, LULinear, InvertibleConv1x1."""

import io

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
import torch.nn.functional as F
from torch.distributions.transforms import ReshapeTransform

from pyro_relax.distributions.adapter import TransformLayer
from pyro_relax.distributions.flow import FlowDistribution
from pyro_relax.testing import checks, get_case
from pyro_relax.transforms.actnorm import ActNorm
from pyro_relax.transforms.conv1x1 import InvertibleConv1x1
from pyro_relax.transforms.lu_linear import LULinear, LUWeight

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASE_NAMES = ["actnorm", "actnorm_image", "lu_linear", "conv1x1", "pyro_channel_permute"]


def _save_load(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# -- ActNorm: data-dependent initialization -----------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("event_dim,shape", [(1, (500, 3)), (3, (20, 3, 5, 5))])
def test_actnorm_data_init_standardizes_the_init_batch(device, event_dim, shape):
    t = ActNorm(3, event_dim=event_dim).double().to(device)
    x = 2.0 + 5.0 * torch.randn(shape, dtype=torch.float64, device=device)
    assert not bool(t.initialized)
    z = t.inv(x)
    assert bool(t.initialized)
    rows = z.movedim(-event_dim, -1).reshape(-1, 3)
    # The init is exact up to the eps added to the sd: |sd - 1| <= eps / sd(x) ~ 2e-7,
    # and the mean is zero up to float64 rounding of a sum of ~500 terms.
    assert rows.mean(0).abs().max() < 1e-10
    assert (rows.std(0, correction=0) - 1).abs().max() < 1e-6
    assert z.device.type == torch.device(device).type


def test_actnorm_init_is_not_redone_on_the_second_call():
    t = ActNorm(2)
    t.inv(torch.randn(100, 2))
    bias, log_scale = t.bias.detach().clone(), t.log_scale.detach().clone()
    z2 = t.inv(10.0 + 3.0 * torch.randn(100, 2))
    assert torch.equal(t.bias, bias) and torch.equal(t.log_scale, log_scale)
    # The second batch is far from standardized under the first batch's statistics.
    assert z2.mean(0).min() > 5.0


def test_actnorm_forward_does_not_initialize_and_is_identity_before():
    t = ActNorm(2)
    x = torch.randn(50, 2)
    assert torch.equal(t(x), x)
    assert not bool(t.initialized)


def test_actnorm_single_vector_leaves_it_uninitialized():
    t = ActNorm(3)
    t.inv(torch.randn(3))  # one value per feature: no variance
    assert not bool(t.initialized)
    t.inv(torch.randn(4, 3))
    assert bool(t.initialized)


def test_actnorm_explicit_initialize():
    t = ActNorm(4)
    x = -1.0 + 0.5 * torch.randn(300, 4, dtype=torch.float64)
    t.double().initialize(x)
    z = t.inv(x)
    assert bool(t.initialized)
    # Same bound as above: float64 rounding for the mean, eps / sd(x) ~ 2e-6 for the sd.
    assert z.mean(0).abs().max() < 1e-10
    assert (z.std(0, correction=0) - 1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="at least 2 values"):
        ActNorm(4).initialize(torch.randn(1, 4))
    with pytest.raises(ValueError, match="finite"):
        ActNorm(4).initialize(torch.full((5, 4), float("nan")))


def test_actnorm_initialization_survives_state_dict_and_save_load():
    t = ActNorm(3, event_dim=3)
    t.inv(torch.randn(8, 3, 4, 4) * 3.0)
    fresh = ActNorm(3, event_dim=3)
    fresh.load_state_dict(t.state_dict())
    loaded = _save_load(t)
    other = torch.randn(8, 3, 4, 4) + 7.0
    for m in (fresh, loaded):
        assert bool(m.initialized)
        torch.testing.assert_close(m.inv(other), t.inv(other))
        torch.testing.assert_close(m.bias, t.bias)  # not re-initialized by `other`
    # And an uninitialized state loaded into an initialized layer makes it initialize again.
    t.load_state_dict(ActNorm(3, event_dim=3).state_dict())
    assert not bool(t.initialized)
    t.inv(other)
    assert bool(t.initialized)


def test_actnorm_log_det_counts_pixels():
    t = ActNorm(2, event_dim=3)
    with torch.no_grad():
        t.log_scale.copy_(torch.tensor([0.3, -0.1]))
    x = torch.randn(5, 2, 3, 4)
    ld = t.log_abs_det_jacobian(x, t(x))
    torch.testing.assert_close(ld, torch.full((5,), 12 * 0.2))


# -- LU layers: algebra -------------------------------------------------------------


@pytest.mark.parametrize("init", ["orthogonal", "identity"])
def test_lu_weight_init(init):
    w = LUWeight(4, init).double().weight()
    eye = torch.eye(4, dtype=torch.float64)
    # A rotation (the identity is one), up to storing the float64 factors in float32:
    # each entry is off by <= 2^-24 relative, so W W^T by about D * 2^-24 ~ 3e-7.
    torch.testing.assert_close(w @ w.T, eye, atol=1e-6, rtol=0)
    if init == "identity":
        torch.testing.assert_close(w, eye)


def test_lu_linear_log_det_is_slogdet_of_the_assembled_matrix():
    t = LULinear(5).double()
    with torch.no_grad():  # move away from a rotation so log|det| is not 0
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    y = t(x)
    w = t.weight()
    torch.testing.assert_close(y, x @ w.T + t.bias)
    _, logdet = torch.linalg.slogdet(w)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), logdet.expand(2, 3))
    assert abs(float(logdet.detach())) > 0.1


def test_conv1x1_matches_conv2d_and_slogdet():
    t = InvertibleConv1x1(3).double()
    with torch.no_grad():
        t.lu.log_scale.add_(torch.tensor([0.2, -0.5, 0.1], dtype=torch.float64))
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    y = t(x)
    w = t.weight()
    torch.testing.assert_close(y, F.conv2d(x, w[:, :, None, None]))
    _, logdet = torch.linalg.slogdet(w)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), (30 * logdet).expand(4))


def test_conv1x1_is_pyro_channel_permute_with_the_same_factors():
    ours = InvertibleConv1x1(4).double()
    theirs = T.GeneralizedChannelPermute(channels=4).double()
    lower, upper = ours.lu._factors()
    with torch.no_grad():
        theirs.permutation.copy_(torch.eye(4, dtype=torch.float64)[ours.lu.perm])
        theirs.LU.copy_(lower.tril(-1) + upper)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))
    y = ours(x)
    torch.testing.assert_close(ours.log_abs_det_jacobian(x, y), theirs.log_abs_det_jacobian(x, y))


# -- round trips, batch shapes, dtypes -----------------------------------------------


def _makers():
    return [
        ("actnorm", lambda: ActNorm(3), (3,)),
        ("actnorm_image", lambda: ActNorm(3, event_dim=3), (3, 4, 4)),
        ("lu_linear", lambda: LULinear(3), (3,)),
        ("conv1x1", lambda: InvertibleConv1x1(3), (3, 4, 4)),
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
@pytest.mark.parametrize("name,make,event", _makers(), ids=[m[0] for m in _makers()])
def test_round_trip_any_batch(name, make, event, batch, dtype, device):
    t = make().to(device=device, dtype=dtype)
    x = torch.randn(batch + event, dtype=dtype, device=device)
    z = t.inv(x)
    x2 = t(z)
    assert z.shape == x.shape and z.dtype == dtype
    torch.testing.assert_close(x2, x, atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=0)
    ld = t.log_abs_det_jacobian(z, x)
    assert ld.shape == batch and ld.dtype == dtype and ld.device.type == torch.device(device).type


@pytest.mark.parametrize("name", CASE_NAMES)
def test_log_det_autograd_with_batches(name):
    case = get_case(name)
    for shape in case.event_shapes:
        torch.manual_seed(1)
        layer = case.build(shape)
        x = case.sample_data(torch.Size((3,)) + torch.Size(shape), torch.float64, "cpu")
        checks.check_log_det_autograd(layer, x)


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,bad",
    [
        (lambda: ActNorm(3), torch.randn(4, 2)),
        (lambda: ActNorm(3, event_dim=3), torch.randn(4, 2, 4, 4)),
        (lambda: ActNorm(3, event_dim=3), torch.randn(3, 4)),
        (lambda: LULinear(3), torch.randn(4, 2)),
        (lambda: InvertibleConv1x1(3), torch.randn(4, 2, 4, 4)),
        (lambda: InvertibleConv1x1(3), torch.randn(3, 4)),
    ],
)
def test_wrong_event_shape_raises(make, bad):
    t = make()
    with pytest.raises(ValueError, match="expected an event"):
        t(bad)
    with pytest.raises(ValueError, match="expected an event"):
        t.inv(bad)
    with pytest.raises(ValueError, match="expected an event"):
        t.log_abs_det_jacobian(bad, bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ActNorm(0),
        lambda: ActNorm(3, event_dim=0),
        lambda: ActNorm(3, eps=0.0),
        lambda: LULinear(-1),
        lambda: LULinear(3, init="random"),
        lambda: InvertibleConv1x1(0),
    ],
)
def test_bad_configuration_raises(make):
    with pytest.raises(ValueError, match="expected"):
        make()


# A size of the wrong type is a TypeError (pyro_relax.core.checks.check_positive_int).
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LULinear(2.5), "LULinear: expected an int dim, got float"),
        (lambda: InvertibleConv1x1(True), "InvertibleConv1x1: expected an int channels, got bool"),
        (lambda: ActNorm(2.0), "ActNorm: expected an int num_features, got float"),
        (lambda: LULinear(2, bias=1), "LULinear: expected a bool bias, got int"),
    ],
)
def test_bad_configuration_type_raises(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_nan_input_raises_through_the_layer():
    layer = TransformLayer(LULinear(2))
    with pytest.raises(ValueError, match="NaN"):
        layer.encode(torch.tensor([[float("nan"), 0.0]]))


# -- composition with Pyro -----------------------------------------------------------


def test_vector_stack_with_pyro_spline_coupling():
    d = 4
    base = dist.Normal(torch.zeros(d), 1.0).to_event(1)
    parts = [T.spline_coupling(d, hidden_dims=[8], count_bins=4), LULinear(d), ActNorm(d)]
    td = dist.TransformedDistribution(base, parts)
    x = 1.0 + 2.0 * torch.randn(2, 50, d)
    lp = td.log_prob(x)
    assert lp.shape == (2, 50) and bool(torch.isfinite(lp).all())
    assert bool(parts[2].initialized)  # log_prob ran the inverse first
    # The same transforms stacked by pyro-relax give the same exact log-density.
    torch.testing.assert_close(FlowDistribution(base, parts).log_prob(x), lp)
    lp.sum().backward()
    assert all(p.grad is not None for m in parts for p in m.parameters())
    assert td.rsample((3,)).shape == (3, d)


def test_image_stack_with_pyro_spline_coupling():
    shape = (2, 3, 3)
    n = 18
    base = dist.Normal(torch.zeros(n), 1.0).to_event(1)
    parts = [
        T.spline_coupling(n, hidden_dims=[8], count_bins=4),
        ReshapeTransform((n,), shape),
        InvertibleConv1x1(2),
        ActNorm(2, event_dim=3),
    ]
    td = dist.TransformedDistribution(base, parts)
    assert td.event_shape == shape
    x = torch.randn(5, *shape)
    lp = td.log_prob(x)
    assert lp.shape == (5,)
    # Change of variables by hand: log p(x) = log N(z) - sum of forward log-dets.
    y, total = x, torch.zeros(5)
    for t in reversed(parts):
        z = t.inv(y)
        ld = t.log_abs_det_jacobian(z, y)
        total = total + (ld if ld.dim() == 1 else ld.sum(-1))
        y = z
    torch.testing.assert_close(lp, base.log_prob(y) - total)
    torch.testing.assert_close(FlowDistribution(base, parts).log_prob(x), lp)


def test_rqs_spline_matches_pyros_rational_quadratic_spline():
    """``rqs_forward`` is Pyro's quadratic spline, except the slope at the box's two ends: 1
    here (continuous with the identity tails), ``1 - 1e-3`` in Pyro, which moves the outer
    bins by at most about 1e-3 of their height."""
    from pyro.distributions.transforms.spline import ConditionedSpline

    from pyro_relax.transforms.rqs import rqs_forward, rqs_inverse

    g = torch.Generator().manual_seed(0)
    w, h, d = (torch.randn(500, 3, k, generator=g, dtype=torch.float64) for k in (7, 7, 6))
    x = 3 * torch.randn(500, 3, generator=g, dtype=torch.float64)
    params = (torch.softmax(w, -1), torch.softmax(h, -1), torch.nn.functional.softplus(d), None)
    ref = ConditionedSpline(params, bound=4.0, order="quadratic")
    y, ld = rqs_forward(x, w, h, d, 4.0)
    torch.testing.assert_close(y, ref(x), atol=5e-3, rtol=0)
    torch.testing.assert_close(ld, ref.log_abs_det_jacobian(x, ref(x)), atol=5e-3, rtol=0)
    outside = x.abs() > 4.0
    assert bool(outside.any()) and torch.equal(y[outside], x[outside])  # identity tails
    x2, ld2 = rqs_inverse(y, w, h, d, 4.0)
    torch.testing.assert_close(x2, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ld2, -ld, atol=1e-10, rtol=0)


def test_density_stack_has_no_more_parameters_than_zukos_nsf():
    from pyro_relax.distributions import Flow
    from pyro_relax.transforms import density_stack

    ours = sum(p.numel() for p in Flow((2,), density_stack(2)).parameters())
    zuko = pytest.importorskip("zuko")
    nsf = zuko.flows.NSF(features=2, transforms=8, hidden_features=[64, 64], bins=8)
    assert ours == 57184 <= sum(p.numel() for p in nsf.parameters()) == 58736
    names = [type(t).__name__ for t in density_stack(1, num_layers=2)]
    assert names == ["Spline", "Spline", "ActNorm"]


def test_rqs_coupling_refuses_bad_sizes():
    from pyro_relax.transforms import RQSCoupling

    with pytest.raises(ValueError, match=r"expected an int dim >= 2, got 1"):
        RQSCoupling(1)
    with pytest.raises(ValueError, match="count_bins >= 2, got 1"):
        RQSCoupling(2, count_bins=1)
    with pytest.raises(ValueError, match="expected bound > 0"):
        RQSCoupling(2, bound=-1.0)
    with pytest.raises(TypeError, match="expected a bool swap"):
        RQSCoupling(2, swap=1)
