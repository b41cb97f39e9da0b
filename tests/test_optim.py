"""The trainers' optimizer steps: warm-up/cosine schedule, gradient guard, guarded steps."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_relax.train.optim import GradientGuard, WarmupCosine, apply_loss, make_guard


def test_warmup_cosine_rises_linearly_then_follows_the_cosine() -> None:
    f = WarmupCosine(total=50, warmup=10, start=0.1, end=0.0)
    assert f(0) == pytest.approx(0.1)
    assert [f(k) for k in range(11)] == pytest.approx([0.1 + 0.09 * k for k in range(11)])
    assert f(10) == pytest.approx(1.0) and f(50) == pytest.approx(0.0) and f(80) == 0.0
    assert f(30) == pytest.approx(0.5)  # half-way through the decay
    ends = WarmupCosine(total=4, warmup=0, end=0.25)
    assert ends(0) == pytest.approx(1.0) and ends(4) == pytest.approx(0.25)


def test_warmup_cosine_without_warmup_is_torchs_cosine_annealing() -> None:
    w1, w2 = (torch.nn.Parameter(torch.ones(1)) for _ in range(2))
    o1, o2 = torch.optim.SGD([w1], lr=0.3), torch.optim.SGD([w2], lr=0.3)
    s1 = torch.optim.lr_scheduler.LambdaLR(o1, WarmupCosine(total=20))
    s2 = torch.optim.lr_scheduler.CosineAnnealingLR(o2, 20)
    for _ in range(21):  # torch goes up again after T_max; ours stays at the end
        assert o1.param_groups[0]["lr"] == pytest.approx(o2.param_groups[0]["lr"], abs=1e-12)
        o1.step(), o2.step(), s1.step(), s2.step()


@pytest.mark.parametrize(
    ("kw", "err"),
    [
        ({"total": 5, "warmup": 5}, "warmup < total=5"),
        ({"total": 0}, "total"),
        ({"total": 5, "start": 0.0}, r"start in \(0, 1\]"),
        ({"total": 5, "end": 1.5}, "end"),
        ({"total": 5, "warmup": -1}, "warmup"),
    ],
)
def test_warmup_cosine_bad_options(kw: dict, err: str) -> None:
    with pytest.raises(ValueError, match=err):
        WarmupCosine(**kw)
    with pytest.raises(TypeError, match="total"):
        WarmupCosine(total=2.5)  # type: ignore[arg-type]


def _with_grad(value: float) -> list[torch.Tensor]:
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.tensor([value, 0.0])
    return [w]


def test_guard_skips_spikes_clips_above_its_factor_and_keeps_a_window() -> None:
    guard = GradientGuard(window=5, ignore_factor=10.0, clip_factor=2.0, min_history=3)
    for _ in range(3):  # too little history: everything passes unchanged
        params = _with_grad(4.0)
        assert guard.check(params) and float(params[0].grad[0]) == 4.0
    spike = _with_grad(41.0)  # over 10 x the median 4
    assert not guard.check(spike) and guard.ignored == 1
    assert float(spike[0].grad[0]) == 41.0  # a skipped step is left alone
    big = _with_grad(20.0)  # between 2 x and 10 x: clipped to 2 x the median
    assert guard.check(big) and float(big[0].grad.norm()) == pytest.approx(8.0)
    assert guard.clipped == 1
    small = _with_grad(7.9)
    assert guard.check(small) and float(small[0].grad[0]) == pytest.approx(7.9)
    assert guard.norms == pytest.approx([4.0, 4.0, 41.0, 20.0, 7.9])  # spikes recorded too
    assert len(guard.norms) == 5
    guard.check(_with_grad(1.0))
    assert len(guard.norms) == 5 and guard.norms[0] == 4.0  # the oldest went


def test_guard_skips_a_non_finite_norm_without_recording_it() -> None:
    guard = GradientGuard(min_history=1)
    assert not guard.check(_with_grad(math.inf)) and guard.norms == []
    assert guard.check([torch.zeros(1, requires_grad=True)])  # no gradient at all: passes


def test_guard_state_round_trips_and_bad_state_is_refused() -> None:
    guard = GradientGuard(window=3, min_history=1)
    for g in (1.0, 2.0, 30.0):
        guard.check(_with_grad(g))
    again = GradientGuard(window=3, min_history=1)
    again.load_state_dict(guard.state_dict())
    assert again.state_dict() == guard.state_dict() and again.ignored == 1
    with pytest.raises(ValueError, match="'norms'"):
        again.load_state_dict({"norms": [1.0]})


@pytest.mark.parametrize(
    ("kw", "err"),
    [
        ({"window": 0}, "window"),
        ({"clip_factor": 20.0}, "clip_factor <= ignore_factor"),
        ({"ignore_factor": -1.0}, "ignore_factor"),
        ({"window": 4, "min_history": 5}, "min_history <= window=4"),
    ],
)
def test_guard_bad_options(kw: dict, err: str) -> None:
    with pytest.raises(ValueError, match=err):
        GradientGuard(**kw)


def test_make_guard() -> None:
    assert make_guard(None) is None and make_guard(False) is None
    assert make_guard(True).spec == "window=100,ignore=10,clip=2,min=10"  # fab-jax's values
    mine = GradientGuard(window=7, min_history=3)
    assert make_guard(mine) is mine
    with pytest.raises(TypeError, match="GradientGuard, got str"):
        make_guard("yes")


def test_apply_loss_skips_non_finite_losses_gradients_and_refused_steps() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([w], lr=0.1)
    assert apply_loss(w.square().sum(), opt)
    after = w.detach().clone()
    state = {k: v.clone() for k, v in opt.state[w].items()}
    assert not apply_loss(w.sum() * math.nan, opt)  # NaN loss
    hook = w.register_hook(lambda g: torch.full_like(g, math.nan))
    assert not apply_loss(w.square().sum(), opt)  # a finite loss with a NaN gradient
    hook.remove()
    guard = GradientGuard(window=2, min_history=1, ignore_factor=2.0, clip_factor=1.0)
    guard.norms = [1e-6]
    assert not apply_loss(w.square().sum(), opt, guard=guard)  # the guard refuses
    torch.testing.assert_close(w.detach(), after, rtol=0, atol=0)
    for k, v in opt.state[w].items():  # Adam's moments untouched by the skipped steps
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    with pytest.raises(TypeError, match="scalar tensor"):
        apply_loss(w.square(), opt)
    with pytest.raises(TypeError, match="clip_grad"):
        apply_loss(w.sum(), opt, clip_grad="1")  # type: ignore[arg-type]
