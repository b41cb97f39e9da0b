"""Inference surjections (abs, sort, max, max pooling, slice): closed forms, round trips,
normalization by quadrature, the law of decoded samples, and bad input."""

import math

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from torch.distributions.transforms import AffineTransform, ExpTransform
from torch.nn.functional import logsigmoid

from pyro_relax.distributions.flow import FlowDistribution
from pyro_relax.surjections.abs import AbsSurjection
from pyro_relax.surjections.max import MaxSurjection
from pyro_relax.surjections.maxpool import MaxPool2dSurjection
from pyro_relax.surjections.slice import SliceSurjection
from pyro_relax.surjections.sort import SortSurjection

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _randomize_last(net: torch.nn.Module, std: float = 1.0) -> None:
    """Give a zero-initialized output layer random weights, so learned decoders are not uniform."""
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)][-1]
    torch.nn.init.normal_(last.weight, std=std)
    torch.nn.init.normal_(last.bias, std=std)


# -- closed-form contributions ------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("event", [(1,), (3,), (2, 3, 4)])
def test_abs_fair_is_minus_d_log_2(device, event):
    layer = AbsSurjection(event_dim=len(event))
    x = torch.randn((2, 3) + event, device=device)
    z, v = layer.encode(x)
    d = math.prod(event)
    assert torch.equal(z, x.abs())
    assert torch.allclose(v, torch.full((2, 3), -d * math.log(2.0), device=device))


def test_abs_learned_is_the_sign_log_likelihood():
    layer = AbsSurjection(3, hidden=(8,))
    _randomize_last(layer.classifier)
    x = torch.randn(5, 3)
    _, v = layer.encode(x)
    logits = layer.classifier(x.abs())
    direct = torch.where(x >= 0, logsigmoid(logits), logsigmoid(-logits)).sum(-1)
    assert torch.allclose(v, direct, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [1, 2, 3, 6])
def test_sort_is_minus_log_d_factorial(device, d):
    x = torch.randn(4, 2, d, device=device)
    z, v = SortSurjection().encode(x)
    assert torch.equal(z, torch.sort(x, -1).values)
    assert torch.allclose(v, torch.full((4, 2), -math.log(math.factorial(d)), device=device))
    # event_dim 2: each of the 2 rows is sorted on its own
    _, v2 = SortSurjection(event_dim=2).encode(x)
    assert torch.allclose(v2, torch.full((4,), -2 * math.log(math.factorial(d)), device=device))


def _max_direct(row: list[float]) -> tuple[list[float], float, int]:
    """Max surjection of one row by hand: (z, -log D - sum log gaps, argmax)."""
    k = max(range(len(row)), key=lambda i: row[i])
    m = row[k]
    others = [r for i, r in enumerate(row) if i != k]
    z = [m] + [math.log(m - r) for r in others]
    return z, -math.log(len(row)) - sum(math.log(m - r) for r in others), k


@pytest.mark.parametrize("d", [2, 3, 5])
def test_max_fair_by_direct_computation(d):
    x = torch.randn(7, d, dtype=torch.float64)
    z, v = MaxSurjection(d, learned=False).encode(x)
    for i in range(7):
        z_i, v_i, _ = _max_direct(x[i].tolist())
        assert torch.allclose(z[i], torch.tensor(z_i, dtype=torch.float64), atol=1e-12)
        assert abs(float(v[i]) - v_i) < 1e-12


def test_max_learned_is_log_p_k_minus_log_gaps():
    layer = MaxSurjection(4, hidden=(8,), context_dim=2).double()
    _randomize_last(layer.classifier)
    x, ctx = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        z, v = layer.encode(x, ctx)
        log_p = torch.log_softmax(layer.classifier(torch.cat([z, ctx], -1)), -1)
    for i in range(6):
        _, v_fair, k = _max_direct(x[i].tolist())
        direct = v_fair + math.log(4) + float(log_p[i, k])
        assert abs(float(v[i]) - direct) < 1e-10


def test_maxpool_fair_by_direct_computation():
    c, h, w = 2, 4, 6
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    z, v = MaxPool2dSurjection(c, learned=False).encode(x)
    assert z.shape == (3, 4 * c, h // 2, w // 2)
    for b in range(3):
        total = 0.0
        for ch in range(c):
            for i in range(h // 2):
                for j in range(w // 2):
                    block = x[b, ch, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(-1).tolist()
                    z_blk, v_blk, _ = _max_direct(block)
                    total += v_blk
                    # layout: max channels first, then 3 groups of C gap channels
                    got = [float(z[b, ch + g * c, i, j]) for g in range(4)]
                    assert max(abs(a - e) for a, e in zip(got, z_blk, strict=True)) < 1e-12
        assert abs(float(v[b]) - total) < 1e-10


def test_maxpool_learned_uses_the_position_net():
    layer = MaxPool2dSurjection(1, hidden=4).double()
    _randomize_last(layer.net)
    x = torch.randn(2, 1, 2, 4, dtype=torch.float64)
    with torch.no_grad():
        z, v = layer.encode(x)
        logits = layer.net(z[:, :1])  # (2, 4, 1, 2): the 4 positions of each block
        log_p = torch.log_softmax(logits, 1)
    for b in range(2):
        direct = 0.0
        for j in range(2):
            _, v_fair, k = _max_direct(x[b, 0, :, 2 * j : 2 * j + 2].reshape(-1).tolist())
            direct += v_fair + math.log(4) + float(log_p[b, k, 0, j])
        assert abs(float(v[b]) - direct) < 1e-10


@pytest.mark.parametrize("context_dim", [0, 3])
def test_slice_is_the_gaussian_decoder_log_density(context_dim):
    layer = SliceSurjection(5, 2, hidden=(8,), context_dim=context_dim)
    _randomize_last(layer.decoder, std=0.5)
    x = torch.randn(4, 5)
    ctx = torch.randn(4, context_dim) if context_dim else None
    z, v = layer.encode(x, ctx)
    assert torch.equal(z, x[:, :2])
    loc, scale = layer.decoder_params(x[:, :2], ctx)
    direct = torch.distributions.Normal(loc, scale).log_prob(x[:, 2:]).sum(-1)
    assert torch.allclose(v, direct, atol=1e-5)
    assert not torch.allclose(loc, torch.zeros_like(loc))  # the decoder really depends on z


# -- f(f_inverse(z)) == z -------------------------------------------------------------------
LAYERS = {
    "abs": (lambda: AbsSurjection(), (3,), lambda z: z.abs()),
    "sort": (lambda: SortSurjection(), (4,), lambda z: z.sort(-1).values),
    "max_fair": (lambda: MaxSurjection(4, learned=False), (4,), None),
    "max_learned": (lambda: MaxSurjection(4, hidden=(8,)), (4,), None),
    "maxpool": (lambda: MaxPool2dSurjection(2, hidden=4), (2, 4, 4), None),
    "slice": (lambda: SliceSurjection(4, 3, hidden=(8,)), (4,), None),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_encode_of_decode_is_identity(name, device):
    make, event, to_range = LAYERS[name]
    layer = make().to(device)
    if name in ("max_learned", "maxpool"):
        _randomize_last(layer.classifier if name == "max_learned" else layer.net)
    latent = layer.latent_shape(torch.Size(event))
    z = torch.randn((2, 3) + tuple(latent), device=device)
    if to_range is not None:  # abs and sort have a latent range smaller than R^D
        z = to_range(z)
    x, s = layer.decode(z)
    z2, v = layer.encode(x)
    assert x.shape == (2, 3) + event
    assert torch.allclose(z2, z, atol=1e-5)
    assert torch.allclose(s, -v, atol=1e-5)


def test_maxpool_batch_shape_2_3():
    layer = MaxPool2dSurjection(3, hidden=4)
    x = torch.randn(2, 3, 3, 4, 6)
    z, v = layer.encode(x)
    assert z.shape == (2, 3, 12, 2, 3) and v.shape == (2, 3)
    zf, vf = layer.encode(x.reshape(6, 3, 4, 6))
    assert torch.allclose(zf.reshape(z.shape), z) and torch.allclose(vf.reshape(2, 3), v)
    x2, s = layer.decode(z)
    assert x2.shape == x.shape and s.shape == (2, 3)
    # the decoded image has the same 2x2 maxima and sorted block values as x
    pool = torch.nn.functional.max_pool2d
    assert torch.allclose(pool(x2.reshape(6, 3, 4, 6), 2), pool(x.reshape(6, 3, 4, 6), 2))


def test_maxpool_matches_max_on_each_block():
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    z, v = MaxPool2dSurjection(1, learned=False).encode(x)
    zm, vm = MaxSurjection(4, learned=False).encode(x.reshape(5, 4))
    assert torch.allclose(z.reshape(5, 4), zm) and torch.allclose(v, vm)


# -- the density of an exact stack integrates to 1 (quadrature) ------------------------------
# Trapezoid rule in float64. 1-D: 20,001 points on [-8, 8]; 2-D: 400 x 400 points on
# [-8, 8]^2, the second axis shifted by half a step so no grid point is a tie x1 == x2
# (a measure-zero set where the max/sort gap is 0 and log p is -inf - inf = nan).
# Error budget: the mass outside the box is at most 1e-4 (the widest tail is the
# log-normal with log-sd 0.5 beyond 8: P(Z > 3.76) = 8.5e-5), and halving the step
# (200 -> 400 points) changed the integrals by less than 2.2e-4 (so the 400-point error,
# O(h^2), is below ~1e-4). Tolerance 1e-3 covers both with margin; a missing Jacobian
# term or a wrong log D changes the integral by O(1).
QUAD_TOL = 1e-3


def _integrate_2d(d: FlowDistribution, n: int = 400, half: float = 8.0) -> float:
    t = torch.linspace(-half, half, n, dtype=torch.float64)
    u = t + (t[1] - t[0]) / 2
    pts = torch.stack(torch.meshgrid(t, u, indexing="ij"), -1)
    with torch.no_grad():
        p = d.log_prob(pts).exp()
    return float(torch.trapezoid(torch.trapezoid(p, u, dim=1), t, dim=0))


def _stack_2d(name: str) -> FlowDistribution:
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    shift = AffineTransform(
        torch.tensor([0.3, -0.2], dtype=torch.float64),
        torch.tensor([0.8, 0.5], dtype=torch.float64),
        event_dim=1,
    )
    # abs needs a latent on the positive orthant: exp of a narrow Gaussian (log-normal)
    narrow = AffineTransform(
        torch.tensor([0.0, 0.1], dtype=torch.float64),
        torch.tensor([0.5, 0.4], dtype=torch.float64),
        event_dim=1,
    )
    if name == "abs_fair":
        layers = [narrow, ExpTransform(), AbsSurjection()]
    elif name == "abs_learned":
        layer = AbsSurjection(2, hidden=(8,)).double()
        _randomize_last(layer.classifier)
        layers = [narrow, ExpTransform(), layer]
    elif name == "sort":  # the sort latent is the ascending cone: OrderedTransform maps onto it
        layers = [shift, T.OrderedTransform(), SortSurjection()]
    elif name == "max_fair":
        layers = [shift, MaxSurjection(2, learned=False)]
    elif name == "max_learned":
        layer = MaxSurjection(2, hidden=(8,)).double()
        _randomize_last(layer.classifier)
        layers = [shift, layer]
    elif name == "max_coupling":
        coupling = T.affine_coupling(2, hidden_dims=[8]).double()
        layers = [coupling, shift, MaxSurjection(2, learned=False)]
    elif name == "slice":
        base = dist.Normal(torch.zeros(1, dtype=torch.float64), 1.0).to_event(1)
        layer = SliceSurjection(2, 1, hidden=(8,)).double()
        _randomize_last(layer.decoder, std=0.3)
        layers = [layer]
    else:
        raise ValueError(name)
    return FlowDistribution(base, layers)


STACKS = ["abs_fair", "abs_learned", "sort", "max_fair", "max_learned", "max_coupling", "slice"]


@pytest.mark.parametrize("name", STACKS)
def test_exact_stack_integrates_to_one_2d(name):
    d = _stack_2d(name)
    assert d.exact
    assert abs(_integrate_2d(d) - 1.0) < QUAD_TOL


def test_exact_stack_integrates_to_one_1d():
    base = dist.Normal(torch.zeros(1, dtype=torch.float64), 1.0).to_event(1)
    shift = AffineTransform(
        torch.tensor([0.2], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64), 1
    )
    d = FlowDistribution(base, [shift, ExpTransform(), AbsSurjection()])
    t = torch.linspace(-8.0, 8.0, 20001, dtype=torch.float64)
    integral = float(torch.trapezoid(d.log_prob(t.unsqueeze(-1)).exp(), t))
    assert abs(integral - 1.0) < QUAD_TOL
    # without the -log 2 of the fair sign the integral would be 2: the test can fail
    assert abs(2 * integral - 1.0) > 0.5


# -- decoded samples have the stack's density -------------------------------------------------
def _sample_vs_quadrature(name: str, n: int) -> None:
    torch.manual_seed(1)
    d = _stack_2d(name)
    with torch.no_grad():
        x = d.sample((n,))
    t = torch.linspace(-8.0, 8.0, 400, dtype=torch.float64)
    u = t + (t[1] - t[0]) / 2
    pts = torch.stack(torch.meshgrid(t, u, indexing="ij"), -1)
    with torch.no_grad():
        p = d.log_prob(pts).exp()

    def quad(f: torch.Tensor) -> float:
        return float(torch.trapezoid(torch.trapezoid(p * f, u, dim=1), t, dim=0))

    # statistics that see the position/sign the decoder draws and the values it puts back
    stats = [
        (pts[..., 0] > pts[..., 1]).double(),  # which entry is the max
        (pts[..., 0] > 0).double(),  # the sign of the first entry
        pts[..., 0],  # the mean of x_1
    ]
    samples = [(x[:, 0] > x[:, 1]).double(), (x[:, 0] > 0).double(), x[:, 0]]
    for f, s in zip(stats, samples, strict=True):
        # 5 standard errors of the sample mean (se = sd / sqrt(n)), plus the quadrature error
        se = float(s.std()) / math.sqrt(n)
        assert abs(float(s.mean()) - quad(f)) < 5 * se + QUAD_TOL, name


@pytest.mark.parametrize("name", ["abs_learned", "sort", "max_learned", "slice"])
def test_decoded_samples_have_the_density(name):
    _sample_vs_quadrature(name, 20_000)


@pytest.mark.slow
@pytest.mark.parametrize("name", STACKS)
def test_decoded_samples_have_the_density_many(name):
    _sample_vs_quadrature(name, 1_000_000)


# -- bad input ------------------------------------------------------------------------------
def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="keep"):
        SliceSurjection(3, 3)
    with pytest.raises(ValueError, match="more dimensions than exist"):
        SliceSurjection(3, 5)
    with pytest.raises(ValueError, match="keep"):
        SliceSurjection(3, 0)
    with pytest.raises(ValueError, match="dim >= 2"):
        MaxSurjection(1)
    with pytest.raises(ValueError, match="context"):
        MaxSurjection(3, context_dim=2, learned=False)
    with pytest.raises(ValueError, match="event_dim"):
        SortSurjection(event_dim=0)
    with pytest.raises(ValueError, match="channels"):
        MaxPool2dSurjection(0)


def test_wrong_event_shape_raises():
    with pytest.raises(ValueError, match=r"expected event shape \(3,\), got \(4,\)"):
        MaxSurjection(3).encode(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"expected event shape \(2,\), got \(3,\)"):
        SliceSurjection(4, 2).decode(torch.randn(5, 3))
    with pytest.raises(ValueError, match="C=2"):
        MaxPool2dSurjection(2).encode(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="4C=8"):
        MaxPool2dSurjection(2).decode(torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match="at least 3 event dimensions"):
        MaxPool2dSurjection(1).encode(torch.randn(4, 4))


@pytest.mark.parametrize("hw", [(3, 4), (4, 5), (1, 1)])
def test_maxpool_odd_sizes_raise(hw):
    layer = MaxPool2dSurjection(1)
    with pytest.raises(ValueError, match="even H and W"):
        layer.encode(torch.randn((2, 1) + hw))
    with pytest.raises(ValueError, match="even H and W"):
        layer.latent_shape(torch.Size((1,) + hw))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_nan_and_inf_raise(name):
    make, event, _ = LAYERS[name]
    layer = make()
    for bad in (float("nan"), float("inf")):
        x = torch.randn((2,) + event)
        x.view(-1)[1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            layer.encode(x)


def test_out_of_range_latents_raise():
    with pytest.raises(ValueError, match="sorted ascending"):
        SortSurjection().decode(torch.tensor([[2.0, 1.0, 3.0]]))
    with pytest.raises(ValueError, match="non-negative"):
        AbsSurjection().decode(torch.tensor([[-1.0, 1.0]]))


def test_missing_or_wrong_context_raises():
    layer = MaxSurjection(3, hidden=(8,), context_dim=2)
    with pytest.raises(ValueError, match="context of last size 2, got None"):
        layer.encode(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"context of last size 2, got \(4, 5\)"):
        layer.encode(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="context of last size 3"):
        SliceSurjection(3, 1, context_dim=3).decode(torch.randn(4, 1))
    with pytest.raises(ValueError, match="takes no context"):
        SortSurjection().encode(torch.randn(2, 3), torch.randn(2, 1))


def test_conditional_flow_log_prob_and_sample():
    ctx = torch.randn(4, 3)
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    layers = [SliceSurjection(3, 2, hidden=(8,), context_dim=3), MaxSurjection(3, (8,), 3)]
    d = FlowDistribution(base, layers, context=ctx)
    x = d.rsample()
    assert x.shape == (4, 3) and d.log_prob(x).shape == (4,)
    assert d.has_rsample and d.exact


# -- the shared max math and the vector-layer base -----------------------------------------
def test_split_and_merge_max_invert_each_other_for_every_argmax():
    from pyro_relax.surjections.max import merge_max, split_max

    x = torch.randn(50, 2, 5, dtype=torch.float64)
    m, g, k = split_max(x)
    assert m.shape == (50, 2, 1) and g.shape == (50, 2, 4) and k.shape == (50, 2, 1)
    assert torch.equal(torch.gather(x, -1, k), m)
    torch.testing.assert_close(merge_max(m, g, k), x, rtol=0, atol=1e-12)


def test_decode_max_matches_max_contribution_and_follows_the_position_law():
    from pyro_relax.surjections.max import decode_max, max_contribution, split_max

    log_probs = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(20000, 3)
    m, g = torch.ones(20000, 1), torch.zeros(20000, 2)
    x, v = decode_max(log_probs, m, g)
    _, g2, k = split_max(x)
    torch.testing.assert_close(v, max_contribution(log_probs, k, g2))
    freq = torch.bincount(k.squeeze(-1), minlength=3).double() / 20000
    torch.testing.assert_close(
        freq, torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), atol=0.02, rtol=0
    )


def test_vector_layer_sizes_and_shape_errors():
    layer = SliceSurjection(4, keep=2)
    assert (layer.dim, layer.latent_dim) == (4, 2)
    assert layer.latent_shape(torch.Size((4,))) == (2,)
    assert layer.data_shape(torch.Size((2,))) == (4,)
    with pytest.raises(ValueError, match=r"SliceSurjection: expected data event \(4,\)"):
        layer.latent_shape(torch.Size((3,)))
    with pytest.raises(ValueError, match=r"expected latent event \(2,\)"):
        layer.data_shape(torch.Size((4,)))


def test_check_size_refuses_bools_floats_and_small_values_with_a_value_error():
    from pyro_relax.core.checks import check_size

    assert check_size(3, "dim", "demo") == 3
    for bad in (True, 2.0, "3", 0):
        with pytest.raises(ValueError, match="demo: expected a positive int dim, i.e. dim >= 1"):
            check_size(bad, "dim", "demo")
    with pytest.raises(ValueError, match="expected an int context_dim >= 0, got -1"):
        check_size(-1, "context_dim", "demo", minimum=0)


def test_append_context_broadcasts_and_names_the_layer():
    from pyro_relax.core import append_context

    h = torch.zeros(4, 3)
    assert append_context(h, None, 0, "demo") is h
    out = append_context(h, torch.ones(1, 2), 2, "demo")
    assert out.shape == (4, 5) and bool((out[:, 3:] == 1).all())
    with pytest.raises(ValueError, match="demo: expected a context of last size 2, got None"):
        append_context(h, None, 2, "demo")
