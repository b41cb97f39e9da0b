"""Fuzz suite of the SNF side: every block, the SNF model, annealing, pullback, trainer, targets.

Each call either returns a finite, correctly shaped result, or raises a
ValueError/TypeError/FloatingPointError whose message names the entry point;
a raw RuntimeError or a silent NaN fails. Default run: few examples per test;
``RELAX_SLOW=1`` runs many (see :mod:`pyro_relax.testing.fuzz`).
"""

import math
import re

import pyro.distributions.transforms as T
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_relax.infer.snf_training import SNFTrainer
from pyro_relax.stochastic.annealing import (
    AnnealedDensity,
    LearnedSchedule,
    geometric_schedule,
    linear_schedule,
    standard_normal_log_prob,
)
from pyro_relax.stochastic.hmc import HMCBlock
from pyro_relax.stochastic.langevin import MALABlock, OverdampedLangevin
from pyro_relax.stochastic.mh import RandomWalkMH
from pyro_relax.stochastic.pullback import (
    PulledBackDensity,
    annealed_hmc_levels,
    tune_step_sizes,
)
from pyro_relax.stochastic.snf import StochasticNormalizingFlow
from pyro_relax.stochastic.underdamped import UnderdampedLangevin
from pyro_relax.targets import TARGETS, get_target
from pyro_relax.testing.fuzz import assert_clean_failure, fuzz_settings
from pyro_relax.testing.strategies import bad_inputs

ERRORS = (ValueError, TypeError, FloatingPointError)
BLOCKS = [OverdampedLangevin, MALABlock, UnderdampedLangevin, RandomWalkMH, HMCBlock]
METROPOLIS = (MALABlock, RandomWalkMH, HMCBlock)


def _gauss(x):
    return standard_normal_log_prob(x - 1.0)


def _nan_right(x):
    """A finite Gaussian where x_0 < 1, NaN (value and gradient) elsewhere."""
    return standard_normal_log_prob(x) + torch.sqrt(1.0 - x[..., 0])


# ---- blocks: bad inputs, bad options, NaN targets, wrong target shapes -------------------------


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@fuzz_settings(max_examples=8)
@given(case=bad_inputs((2,)), direction=st.sampled_from(["encode", "decode"]))
def test_blocks_refuse_bad_inputs_cleanly(cls, case, direction):
    kind, x = case
    block = cls(_gauss, step_size=0.1)
    out = assert_clean_failure(
        lambda: getattr(block, direction)(x), cls.__name__, shapes=None, errors=ERRORS
    )
    if not isinstance(out, Exception):
        # blocks take any event size (the target decides): a wrong size is not an error here
        assert kind not in ("nan", "inf", "neg_inf"), kind
        y, delta = out
        assert y.shape == x.shape and delta.shape == x.shape[:-1]


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@fuzz_settings(max_examples=10)
@given(
    step_size=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.just("0.1"), st.just(True)
    ),
    lam=st.one_of(st.floats(-1, 2), st.just(math.nan), st.just(None)),
    n_steps=st.one_of(st.integers(-1, 3), st.just(1.5), st.just(True)),
    event_dim=st.one_of(st.integers(-1, 2), st.just("1")),
)
def test_block_constructors_refuse_bad_options(cls, step_size, lam, n_steps, event_dim):
    def make():
        return cls(
            _gauss,
            standard_normal_log_prob,
            step_size=step_size,
            lam=lam,
            n_steps=n_steps,
            event_dim=event_dim,
        )

    assert_clean_failure(make, cls.__name__, finite=False, errors=ERRORS)


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@fuzz_settings(max_examples=6)
@given(
    start=st.floats(-3.0, 0.9),
    step_size=st.sampled_from([0.05, 0.5, 2.0]),
    n_steps=st.integers(1, 4),
)
def test_nan_targets_are_rejected_or_named(cls, start, step_size, n_steps):
    block = cls(_nan_right, step_size=step_size, n_steps=n_steps)
    x = torch.tensor([[start, 0.0], [start - 0.5, 1.0], [start, -1.0]])
    out = assert_clean_failure(lambda: block.decode(x), cls.__name__, errors=ERRORS)
    if cls in METROPOLIS:  # a NaN proposal is a rejected step: never an error, never NaN
        assert not isinstance(out, Exception), out
        assert bool((out[0][:, 0] < 1.0).all())
    elif isinstance(out, Exception):
        assert re.search(r"step \d+ of \d+", str(out)), out


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@fuzz_settings(max_examples=6)
@given(
    wrong=st.sampled_from(["sum", "keep_event", "float", "int", "extra_dim"]),
    batch=st.sampled_from([(3,), (2, 3), (1,)]),
)
def test_wrong_target_output_is_a_clean_error(cls, wrong, batch):
    def target(x):
        lp = standard_normal_log_prob(x)
        return {
            "sum": lp.sum(),
            "keep_event": -0.5 * x.square(),
            "float": 0.0,
            "int": lp.long(),
            "extra_dim": lp[..., None],
        }[wrong]

    x = torch.zeros(batch + (2,))
    with pytest.raises((ValueError, TypeError), match=rf"{cls.__name__}.*log density"):
        cls(target).decode(x)


# ---- the SNF model, annealing pieces, schedules -------------------------------------------------


def _snf(target=_gauss, blocks=None):
    torch.manual_seed(0)
    layers = [T.AffineTransform(torch.ones(2), 1.0, event_dim=1)]
    layers += blocks if blocks is not None else [MALABlock(target, step_size=0.2), HMCBlock(target)]
    return StochasticNormalizingFlow((2,), layers, target)


@fuzz_settings(max_examples=15)
@given(
    n=st.one_of(
        st.integers(-2, 5),
        st.lists(st.integers(-1, 3), max_size=3).map(tuple),
        st.just(2.0),
        st.just("4"),
        st.just(None),
    )
)
def test_snf_sample_with_log_weights_bad_counts(n):
    snf = _snf()
    name = ("sample_with_log_weights", "StochasticNormalizingFlow")
    out = assert_clean_failure(lambda: snf.sample_with_log_weights(n), name, errors=ERRORS)
    if not isinstance(out, Exception):
        shape = (n,) if isinstance(n, int) else tuple(n)
        assert out[0].shape == shape + (2,) and out[1].shape == shape


@fuzz_settings(max_examples=10)
@given(
    wrong=st.sampled_from(["sum", "keep_event", "nan", "inf", "neg_inf", "ok"]),
    n=st.integers(1, 6),
)
def test_snf_model_with_bad_targets(wrong, n):
    def target(x):
        lp = _gauss(x)
        return {
            "sum": lp.sum(),
            "keep_event": -0.5 * x.square(),
            "nan": lp * math.nan,
            "inf": lp * 0 + math.inf,
            "neg_inf": lp * 0 - math.inf,
            "ok": lp,
        }[wrong]

    snf = StochasticNormalizingFlow((2,), [T.AffineTransform(0.0, 1.0)], target)
    names = ("StochasticNormalizingFlow", "sample_with_log_weights")
    out = assert_clean_failure(
        lambda: snf.sample_with_log_weights(n), names, errors=ERRORS, finite=wrong != "neg_inf"
    )
    if wrong == "ok":
        assert not isinstance(out, Exception)
    elif wrong != "neg_inf":  # a zero weight (-inf) is a valid weight of an importance sample
        assert isinstance(out, Exception), f"{wrong} target accepted"
    names = ("StochasticNormalizingFlow", "log_Z_from_log_weights", "ess_from_log_weights")
    assert_clean_failure(lambda: snf.log_Z_estimate(max(n, 2)), names, errors=ERRORS)


@fuzz_settings(max_examples=12)
@given(
    lam=st.one_of(st.floats(-1, 2), st.just(math.nan), st.just("0.5")),
    learn=st.booleans(),
    base=st.sampled_from([None, "gauss", 3]),
    x=bad_inputs((2,), kinds=("zeros", "empty_batch", "huge", "negative")),
)
def test_annealed_density_options(lam, learn, base, x):
    base_fn = {None: None, "gauss": standard_normal_log_prob, 3: 3}[base]
    d = assert_clean_failure(
        lambda: AnnealedDensity(_gauss, base_fn, lam, learn), "AnnealedDensity", finite=False
    )
    if not isinstance(d, Exception):
        out = d(x[1])  # unchecked values (used inside steps): only the shape is promised
        assert out.shape == x[1].shape[:-1]


@fuzz_settings(max_examples=15)
@given(
    n=st.one_of(st.integers(-1, 6), st.just(2.0), st.just(True)),
    start=st.one_of(st.floats(-1, 2), st.just(math.nan)),
    end_at_one=st.booleans(),
)
def test_schedules(n, start, end_at_one):
    for fn, name in (
        (lambda: linear_schedule(n), "linear_schedule"),
        (lambda: geometric_schedule(n, start), "geometric_schedule"),
        (lambda: LearnedSchedule(n, end_at_one)(), "LearnedSchedule"),
    ):
        out = assert_clean_failure(fn, name, errors=ERRORS)
        if not isinstance(out, Exception):
            lams = torch.as_tensor(out, dtype=torch.float64)
            assert lams.shape == (n,) and bool(((lams > 0) & (lams <= 1)).all())


# ---- pullback and annealed HMC levels -----------------------------------------------------------


@fuzz_settings(max_examples=10)
@given(
    case=bad_inputs((2,)),
    wrong=st.sampled_from(["ok", "sum", "keep_event"]),
)
def test_pulled_back_density(case, wrong):
    kind, u = case

    def target(x):
        lp = standard_normal_log_prob(x)
        return {"ok": lp, "sum": lp.sum(), "keep_event": -0.5 * x.square()}[wrong]

    d = PulledBackDensity([T.AffineTransform(torch.ones(2), 2.0, event_dim=1)], target)
    out = assert_clean_failure(
        lambda: d(u), ("PulledBackDensity", "Transform"), errors=ERRORS, finite=False
    )
    if not isinstance(out, Exception):
        # a sum over an empty batch shape () is the right shape
        assert (wrong == "ok" or (wrong == "sum" and u.dim() == 1)) and out.shape == u.shape[:-1]


@fuzz_settings(max_examples=12)
@given(
    levels=st.one_of(st.integers(-1, 3), st.just(2.5)),
    schedule=st.sampled_from(["linear", "geometric", "cosine"]),
    step_size=st.one_of(st.floats(-1, 1), st.just(math.nan)),
    rounds=st.one_of(st.integers(-1, 2), st.just(True)),
    target_accept=st.one_of(st.floats(-0.5, 1.5), st.just(0.7), st.just(1)),
)
def test_annealed_levels_and_tuning(levels, schedule, step_size, rounds, target_accept):
    blocks = assert_clean_failure(
        lambda: annealed_hmc_levels(_gauss, levels, step_size=step_size, schedule=schedule),
        ("annealed_hmc_levels", "HMCBlock"),
        finite=False,
    )
    if isinstance(blocks, Exception):
        return
    snf = StochasticNormalizingFlow((2,), blocks, _gauss)
    out = assert_clean_failure(
        lambda: tune_step_sizes(snf, rounds=rounds, batch_size=8, target_accept=target_accept),
        "tune_step_sizes",
        errors=ERRORS,
    )
    if not isinstance(out, Exception):
        assert len(out) == levels and all(math.isfinite(v) and v > 0 for v in out)


# ---- the trainer's options ----------------------------------------------------------------------


@fuzz_settings(max_examples=15)
@given(
    steps=st.one_of(st.integers(-1, 3), st.just(2.0)),
    batch_size=st.one_of(st.integers(-1, 4), st.just(True)),
    lr=st.one_of(st.floats(-1, 1), st.just(math.nan), st.just(math.inf), st.just("1e-3")),
    weights=st.sampled_from([(1.0, 0.0), (0.0, 0.0), (0.5, 0.5), (-1.0, 0.0), (math.nan, 1.0)]),
    data=bad_inputs((2,), kinds=("zeros", "nan", "wrong_event_shape", "empty_batch", "int")),
    clip=st.one_of(st.none(), st.floats(-1, 10), st.just(math.inf)),
)
def test_trainer_options(steps, batch_size, lr, weights, data, clip):
    snf = StochasticNormalizingFlow(
        (2,), [T.affine_coupling(2, hidden_dims=[4]), MALABlock(_gauss, step_size=0.1)], _gauss
    )

    def train():
        trainer = SNFTrainer(
            snf,
            steps,
            batch_size=batch_size,
            lr=lr,
            reverse_weight=weights[0],
            forward_weight=weights[1],
            data=data[1],
            clip_grad=clip,
            progress=False,
        )
        return trainer.run()

    out = assert_clean_failure(train, ("SNFTrainer", "StochasticNormalizingFlow"), errors=ERRORS)
    if not isinstance(out, Exception):
        assert len(out["loss"]) == steps


# ---- targets ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TARGETS))
@fuzz_settings(max_examples=8)
@given(data=st.data())
def test_targets_refuse_bad_inputs(name, data):
    target = get_target(name) if name != "funnel" else get_target(name, dim=3)
    kind, x = data.draw(bad_inputs((target.dim,)))
    out = assert_clean_failure(
        lambda: target.log_prob(x), type(target).__name__, errors=ERRORS, finite=kind != "huge"
    )
    if not isinstance(out, Exception):
        assert out.shape == x.shape[:-1]
        assert kind not in ("nan", "inf", "neg_inf", "wrong_event_shape"), kind
    if target.has_exact_samples:
        shape = data.draw(
            st.one_of(st.lists(st.integers(-1, 3), max_size=2).map(tuple), st.just(3), st.just("2"))
        )
        out = assert_clean_failure(
            lambda: target.sample(shape),
            type(target).__name__,
            errors=ERRORS + (NotImplementedError,),
        )
        if not isinstance(out, Exception):
            assert out.shape == tuple(shape) + (target.dim,)
