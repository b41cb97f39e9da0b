"""Relaxed layers as Pyro transforms (as_transform), Flow.condition and the public accessors."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.distributions.transforms import ComposeTransform

from pyro_relax.distributions import (
    Flow,
    FlowDistribution,
    LayerTransform,
    TransformLayer,
    as_transform,
)
from pyro_relax.stochastic import VAELayer
from pyro_relax.surjections import (
    AbsSurjection,
    AugmentSurjection,
    GenerativeAbs,
    MaxPool2dSurjection,
    MaxSurjection,
    SliceSurjection,
    SortSurjection,
    UniformDequantization,
)
from pyro_relax.transforms import ActNorm, LULinear

DTYPES = [torch.float32, torch.float64]


def _abs(dim: int) -> tuple[object, torch.Size]:
    return AbsSurjection(dim, hidden=(8,)), torch.Size((dim,))


def _sort(dim: int) -> tuple[object, torch.Size]:
    return SortSurjection(), torch.Size((dim,))


def _max(dim: int) -> tuple[object, torch.Size]:
    return MaxSurjection(dim, hidden=(8,)), torch.Size((dim,))


def _slice(dim: int) -> tuple[object, torch.Size]:
    return SliceSurjection(dim, keep=2, hidden=(8,)), torch.Size((2,))


def _lu(dim: int) -> tuple[object, torch.Size]:
    return LULinear(dim), torch.Size((dim,))


def _coupling(dim: int) -> tuple[object, torch.Size]:
    return T.affine_coupling(dim, hidden_dims=[8]), torch.Size((dim,))


MAKERS = {
    "abs": _abs,
    "sort": _sort,
    "max": _max,
    "slice": _slice,
    "lu_linear": _lu,
    "affine_coupling": _coupling,
}


def _randomize(layer: object) -> None:
    """Move the zero-initialized last layers away from zero so the test sees the networks."""
    if isinstance(layer, torch.nn.Module):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_transformed_distribution_matches_flow_distribution(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer, base_shape = MAKERS[name](4)
    layer = layer.to(dtype) if isinstance(layer, torch.nn.Module) else layer
    _randomize(layer)
    loc = torch.zeros(base_shape, dtype=dtype)
    # abs has a non-negative latent side: a half-normal base there
    base = (dist.HalfNormal(loc + 1.0) if name == "abs" else dist.Normal(loc, 1.0)).to_event(1)
    ours = FlowDistribution(base, [layer])
    pyros = dist.TransformedDistribution(base, [as_transform(layer)])
    assert pyros.event_shape == ours.event_shape == torch.Size((4,))
    x = torch.randn(3, 5, 4, dtype=dtype)
    expected = ours.log_prob(x)
    got = pyros.log_prob(x)
    assert got.shape == (3, 5) and got.dtype == dtype
    torch.testing.assert_close(got, expected)
    sample = pyros.sample((6, 2))
    assert sample.shape == (6, 2, 4) and sample.dtype == dtype
    assert torch.isfinite(pyros.log_prob(sample)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_max_pooling_transform_matches_flow_distribution(dtype: torch.dtype) -> None:
    torch.manual_seed(5)
    layer = MaxPool2dSurjection(2, hidden=4).to(dtype)
    _randomize(layer)
    base = dist.Normal(torch.zeros(8, 2, 2, dtype=dtype), 1.0).to_event(3)
    pyros = dist.TransformedDistribution(base, [as_transform(layer)])
    x = torch.randn(2, 3, 2, 4, 4, dtype=dtype)
    torch.testing.assert_close(pyros.log_prob(x), FlowDistribution(base, [layer]).log_prob(x))
    assert pyros.event_shape == (2, 4, 4) and pyros.sample((3,)).shape == (3, 2, 4, 4)


def test_abs_transform_has_the_closed_form() -> None:
    base = dist.HalfNormal(torch.ones(3)).to_event(1)
    d = dist.TransformedDistribution(base, [as_transform(AbsSurjection())])
    x = torch.randn(7, 3)
    expected = base.log_prob(x.abs()) - 3 * math.log(2.0)
    torch.testing.assert_close(d.log_prob(x), expected)


def test_surjection_transforms_say_they_are_not_bijective() -> None:
    for layer in (AbsSurjection(), SortSurjection(), MaxSurjection(3), SliceSurjection(3, 1)):
        t = as_transform(layer)
        assert isinstance(t, LayerTransform) and t.bijective is False
        assert t.domain.event_dim == t.codomain.event_dim == 1


def test_slice_transform_changes_the_shape() -> None:
    t = as_transform(SliceSurjection(5, keep=2, hidden=(8,)))
    assert t.forward_shape(torch.Size((7, 2))) == (7, 5)
    assert t.inverse_shape(torch.Size((7, 5))) == (7, 2)
    with pytest.raises(ValueError, match="expected data event \\(5,\\)"):
        t.inverse_shape(torch.Size((7, 4)))


def test_log_prob_runs_the_layer_once() -> None:
    layer = SortSurjection()
    calls = []
    original = layer._encode

    def counting(x: torch.Tensor, context: torch.Tensor | None) -> tuple:
        calls.append(1)
        return original(x, context)

    layer._encode = counting  # type: ignore[method-assign]
    d = dist.TransformedDistribution(
        dist.Normal(torch.zeros(3), 1.0).to_event(1), [as_transform(layer)]
    )
    d.log_prob(torch.randn(4, 3))
    assert len(calls) == 1


def test_compose_transform_of_bijective_layers() -> None:
    torch.manual_seed(1)
    layers = [TransformLayer(LULinear(3)), TransformLayer(T.affine_coupling(3, hidden_dims=[8]))]
    _randomize(layers[1])
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    composed = ComposeTransform([as_transform(layer) for layer in layers])
    assert composed.bijective
    pyros = dist.TransformedDistribution(base, composed)
    x = torch.randn(5, 3)
    torch.testing.assert_close(pyros.log_prob(x), FlowDistribution(base, layers).log_prob(x))
    z = torch.randn(5, 3)
    torch.testing.assert_close(composed.inv(composed(z)), z, atol=1e-5, rtol=1e-5)


def test_compose_with_a_surjection_last() -> None:
    torch.manual_seed(2)
    parts = [ActNorm(3), T.affine_coupling(3, hidden_dims=[8]), SortSurjection()]
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    x = torch.randn(6, 3)
    ours = FlowDistribution(base, parts).log_prob(x)  # also initializes the ActNorm
    pyros = dist.TransformedDistribution(base, [as_transform(p) for p in parts])
    torch.testing.assert_close(pyros.log_prob(x), ours)


def test_transform_layer_gives_back_its_transform() -> None:
    t = LULinear(2)
    assert as_transform(TransformLayer(t)) is t
    assert as_transform(t) is t
    cond = T.conditional_affine_coupling(2, context_dim=3, hidden_dims=[8])
    conditioned = as_transform(TransformLayer(cond), context=torch.randn(3))
    assert conditioned(torch.randn(2)).shape == (2,)
    with pytest.raises(ValueError, match="expected a context, got None"):
        as_transform(TransformLayer(cond))


@pytest.mark.parametrize(
    "layer",
    [
        AugmentSurjection(2, 4),
        UniformDequantization(4),
        GenerativeAbs(2),
        VAELayer(2, latent_dim=2, hidden=(8,)),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_bound_layers_are_refused(layer: object) -> None:
    with pytest.raises(ValueError, match="exact=False.*FlowDistribution"):
        as_transform(layer)


def test_non_layers_are_refused() -> None:
    with pytest.raises(
        TypeError, match="expected a RelaxedLayer or a torch/Pyro Transform, got str"
    ):
        as_transform("abs")
    with pytest.raises(TypeError, match="expected a context tensor, got list"):
        as_transform(AbsSurjection(), context=[1.0])
    with pytest.raises(ValueError, match="AbsSurjection takes no context"):
        as_transform(AbsSurjection(), context=torch.zeros(2))


def test_conditional_surjection_transform() -> None:
    torch.manual_seed(3)
    layer = SliceSurjection(4, keep=2, hidden=(8,), context_dim=3)
    _randomize(layer)
    ctx = torch.randn(5, 3)
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    x = torch.randn(5, 4)
    pyros = dist.TransformedDistribution(base, [as_transform(layer, context=ctx)])
    torch.testing.assert_close(
        pyros.log_prob(x), FlowDistribution(base, [layer], context=ctx).log_prob(x)
    )


# -- Flow.condition -----------------------------------------------------------
def test_condition_gives_the_conditioned_distribution() -> None:
    torch.manual_seed(4)
    flow = Flow(2, [T.conditional_affine_coupling(2, context_dim=3, hidden_dims=[8])])
    ctx = torch.randn(4, 3)
    d = flow.condition(ctx)
    assert isinstance(d, FlowDistribution) and d.batch_shape == (4,)
    x = torch.randn(4, 2)
    torch.testing.assert_close(d.log_prob(x), flow(ctx).log_prob(x))
    other = flow.condition(torch.randn(4, 3)).log_prob(x)
    assert not torch.allclose(other, d.log_prob(x))


def test_condition_refuses_a_wrong_context() -> None:
    flow = Flow(2, [T.conditional_affine_coupling(2, context_dim=3, hidden_dims=[8])])
    with pytest.raises(ValueError, match=r"expected a context of last size 3, got shape \(4, 5\)"):
        flow.condition(torch.randn(4, 5))
    with pytest.raises(ValueError, match="got a scalar"):
        flow.condition(torch.tensor(1.0))
    with pytest.raises(TypeError, match="expected a context tensor, got list"):
        flow.condition([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="no layer of this flow takes a context"):
        Flow(2, [AbsSurjection()]).condition(torch.randn(3))
    sliced = Flow(2, [SliceSurjection(3, keep=2, hidden=(8,), context_dim=2)])
    with pytest.raises(ValueError, match="expected a context of last size 2"):
        sliced.condition(torch.randn(3))
    assert sliced.condition(torch.randn(2)).event_shape == (3,)


# -- public accessors -----------------------------------------------------------
def test_flow_dtype_device_and_check_data() -> None:
    flow = Flow(2, [AbsSurjection()])
    assert flow.dtype == torch.float32 and flow.device == torch.device("cpu")
    flow = flow.double()
    assert flow.dtype == torch.float64
    data = flow.check_data(torch.tensor([[1, -2]]))
    assert data.dtype == torch.float64
    with pytest.raises(ValueError, match=r"Flow.check_data: expected event shape \(2,\)"):
        flow.check_data(torch.zeros(3, 3, dtype=torch.float64))
    d = flow()
    torch.testing.assert_close(d.check_data(data), d._check_value(data))


def test_transform_layer_conditional_property() -> None:
    assert TransformLayer(T.ExpTransform()).conditional is False
    cond = TransformLayer(T.conditional_affine_coupling(2, context_dim=3))
    assert cond.conditional is True and cond._conditional is True
    assert cond.context_dim == 3 and TransformLayer(T.ExpTransform()).context_dim is None


def test_building_a_distribution_does_not_change_its_layers() -> None:
    layers = [TransformLayer(LULinear(3)), TransformLayer(T.ExpTransform()), AbsSurjection()]
    before = [dict(vars(layer)) for layer in layers]
    dims = [layer.event_dim for layer in layers]
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    d = FlowDistribution(base, layers)
    x = torch.randn(4, 3)
    # data -> |x| (abs, -3 log 2) -> log (exp, -sum log|x|) -> LULinear inverse
    z = torch.log(x.abs())
    lu = layers[0].wrapped
    expected = base.log_prob(lu.inv(z)) - lu.log_abs_det_jacobian(lu.inv(z), z) - z.sum(-1)
    expected = expected - 3 * math.log(2)
    torch.testing.assert_close(d.log_prob(x), expected)
    assert [layer.event_dim for layer in layers] == dims == [1, 0, 1]
    assert [dict(vars(layer)) for layer in layers] == before


def test_elementwise_transform_with_vector_parameters_runs_on_whole_events() -> None:
    affine = T.AffineTransform(torch.full((3,), 0.2), torch.full((3,), 1.3))
    layer = TransformLayer(affine)
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    d = FlowDistribution(base, [layer, AbsSurjection()])
    x = torch.randn(7, 3)
    expected = dist.TransformedDistribution(base, [affine, as_transform(AbsSurjection())])
    torch.testing.assert_close(d.log_prob(x), expected.log_prob(x))
    assert d.sample((5,)).shape == (5, 3)
    assert layer.event_dim == 0 and d.layers[0].wrapped is affine


def test_as_transform_of_abs_refuses_nan_with_validation_on():
    """Issue 23: the forward call of ``as_transform(AbsSurjection())`` passed NaN through."""
    import pyro_relax
    from pyro_relax.distributions import as_transform
    from pyro_relax.surjections import AbsSurjection

    t = as_transform(AbsSurjection())
    bad = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(ValueError, match=r"as_transform\(AbsSurjection\): expected finite"):
        t(bad)
    with pytest.raises(ValueError, match="expected finite"):
        t.inv(bad)
    with pyro_relax.validation(False):
        assert t(bad).isnan().any()
