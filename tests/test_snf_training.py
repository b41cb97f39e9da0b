"""SNF training: reverse KL, forward KL, mixed; seeding, resuming, bad configurations."""

import math

import pyro.distributions.transforms as T
import pytest
import torch

from pyro_relax.infer.snf_training import (
    SNFTrainer,
    forward_kl_loss,
    mixed_kl_loss,
    reverse_kl_loss,
    train_snf,
)
from pyro_relax.stochastic.annealing import standard_normal_log_prob
from pyro_relax.stochastic.langevin import MALABlock
from pyro_relax.stochastic.snf import StochasticNormalizingFlow
from pyro_relax.stochastic.underdamped import UnderdampedLangevin

LOC = torch.tensor([1.5, -1.0])
SCALE = torch.tensor([0.5, 2.0])
LOG_Z = 0.8


def target_log_prob(x):
    """An axis-aligned Gaussian times exp(LOG_Z)."""
    loc, scale = LOC.to(x), SCALE.to(x)
    return torch.distributions.Normal(loc, scale).log_prob(x).sum(-1) + LOG_Z


def _snf(seed=0):
    torch.manual_seed(seed)
    layers = [
        T.affine_coupling(2, hidden_dims=[16]),
        T.Permute(torch.tensor([1, 0])),
        T.affine_coupling(2, hidden_dims=[16]),
        MALABlock(
            target_log_prob,
            standard_normal_log_prob,
            lam=0.7,
            learn_lam=True,
            step_size=0.05,
            learn_step_size=True,
        ),
        T.AffineTransform(torch.zeros(2), 1.0),
        UnderdampedLangevin(target_log_prob, step_size=0.05, learn_step_size=True, n_steps=2),
    ]
    return StochasticNormalizingFlow((2,), layers, target_log_prob)


def _data(n=2000):
    g = torch.Generator().manual_seed(123)
    return LOC + SCALE * torch.randn(n, 2, generator=g)


def _mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize(
    "weights", [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)], ids=["reverse", "forward", "mixed"]
)
def test_training_reduces_the_objective(weights):
    rev, fwd = weights
    snf = _snf()
    history = SNFTrainer(
        snf,
        steps=150,
        batch_size=128,
        lr=1e-2,
        reverse_weight=rev,
        forward_weight=fwd,
        data=_data(),
        progress=False,
    ).run()
    assert len(history["loss"]) == 150
    # The reverse KL part is -E[log w] >= -log Z; its excess over -log Z is the path KL.
    # Training must cut the excess (first 20 vs last 20 steps) by at least half.
    if rev:
        first = _mean(history["reverse_kl"][:20]) + LOG_Z
        last = _mean(history["reverse_kl"][-20:]) + LOG_Z
        assert last < 0.5 * first, (first, last)
    if fwd:
        first, last = _mean(history["forward_kl"][:20]), _mean(history["forward_kl"][-20:])
        # The data's entropy (Gaussian, nats) bounds the forward loss from below.
        entropy = float(torch.distributions.Normal(LOC, SCALE).entropy().sum())
        assert last - entropy < 0.5 * (first - entropy), (first, last, entropy)
    est, se = snf.log_Z_estimate(4000)
    assert abs(float(est) - LOG_Z) < 5 * float(se) + 1e-3  # unbiased after training too


@torch.no_grad()
def test_losses_match_their_definitions():
    snf = _snf()
    torch.manual_seed(1)
    rev = reverse_kl_loss(snf, 64)
    torch.manual_seed(1)
    assert float(rev) == pytest.approx(-float(snf.sample_with_log_weights(64)[1].mean()))
    data = _data(32)
    torch.manual_seed(2)
    fwd = forward_kl_loss(snf, data)
    torch.manual_seed(2)
    assert float(fwd) == pytest.approx(-float(snf.log_prob(data).mean()))
    torch.manual_seed(3)
    loss, parts = mixed_kl_loss(snf, 64, data, reverse_weight=0.3, forward_weight=0.7)
    assert set(parts) == {"reverse_kl", "forward_kl"}
    assert float(loss) == pytest.approx(
        0.3 * float(parts["reverse_kl"]) + 0.7 * float(parts["forward_kl"])
    )


def test_seeded_runs_are_identical():
    h1 = train_snf(_snf(), 15, batch_size=32, seed=5, progress=False)
    h2 = train_snf(_snf(), 15, batch_size=32, seed=5, progress=False)
    h3 = train_snf(_snf(), 15, batch_size=32, seed=6, progress=False)
    assert h1 == h2
    assert h1 != h3


def test_resume_from_checkpoint_reproduces_uninterrupted_run(tmp_path):
    kw = dict(batch_size=32, seed=3, lr=5e-3, forward_weight=0.5, data=_data(), progress=False)
    full = _snf()
    h_full = SNFTrainer(full, 20, **kw).run()

    path = tmp_path / "snf.pt"
    first = SNFTrainer(_snf(), 20, checkpoint=path, checkpoint_every=5, **kw)
    first.run(until=10)
    assert path.exists() and first.step == 10
    torch.manual_seed(999)  # whatever happened in between must not matter
    resumed_model = _snf(seed=42)  # different initial weights: all come from the checkpoint
    second = SNFTrainer(resumed_model, 20, checkpoint=path, checkpoint_every=5, **kw)
    assert second.step == 10
    h_resumed = second.run()
    assert h_resumed == h_full
    for (n, p), (_, q) in zip(
        full.named_parameters(), resumed_model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=n)


def test_progress_bar_runs(capsys):
    train_snf(_snf(), 3, batch_size=8, progress=True)
    assert "snf" in capsys.readouterr().err


def test_bad_configurations_raise():
    snf = _snf()
    with pytest.raises(ValueError, match="steps >= 1"):
        SNFTrainer(snf, 0)
    with pytest.raises(ValueError, match="needs data"):
        SNFTrainer(snf, 5, forward_weight=1.0)
    with pytest.raises(ValueError, match="reverse_weight >= 0"):
        SNFTrainer(snf, 5, reverse_weight=-1.0)
    with pytest.raises(ValueError, match="positive reverse_weight or forward_weight"):
        SNFTrainer(snf, 5, reverse_weight=0.0)
    with pytest.raises(ValueError, match="lr > 0"):
        SNFTrainer(snf, 5, lr=0.0)
    with pytest.raises(ValueError, match="event shape"):
        SNFTrainer(snf, 5, forward_weight=1.0, data=torch.zeros(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        SNFTrainer(snf, 5, forward_weight=1.0, data=torch.full((10, 2), math.nan))
    with pytest.raises(TypeError, match="StochasticNormalizingFlow"):
        SNFTrainer(torch.nn.Linear(2, 2), 5)
    with pytest.raises(ValueError, match="until <= steps"):
        SNFTrainer(snf, 5, progress=False).run(until=6)
    with pytest.raises(ValueError, match="no trainable parameters"):
        SNFTrainer(StochasticNormalizingFlow((2,), [], target_log_prob), 5)


def test_diverging_training_is_reported():
    # A hugely unstable learning rate sends the flow to non-finite values; the loop stops with an
    # error naming the problem rather than training on NaN (here the target's own check fires
    # inside a block step, re-raised as a RuntimeError naming the block and the step).
    snf = _snf()
    errors = (FloatingPointError, ValueError, RuntimeError)
    with pytest.raises(errors, match=r"NaN|inf|invalid values|layer \d+"):
        SNFTrainer(snf, 200, batch_size=16, lr=1e4, progress=False).run()


# ---- checkpoints trust nothing (issue 10, item 5) ---------------------------------------------


def _mark(path):
    """Called only if a checkpoint's pickle is executed (it must not be)."""
    with open(path, "w") as f:
        f.write("ran")


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_mark, (self.path,))


def _checkpointed(path, steps=20, **kw):
    kw = dict(batch_size=16, seed=3, lr=5e-3, progress=False, checkpoint_every=5) | kw
    trainer = SNFTrainer(_snf(), steps, checkpoint=path, **kw)
    trainer.run(until=10)
    return trainer


def test_resume_with_other_steps_or_lr_is_refused_listing_the_differences(tmp_path):
    path = tmp_path / "snf.pt"
    _checkpointed(path)
    kw = dict(batch_size=16, seed=3, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match=r"snf\.pt.*steps: saved 20, given 30") as err:
        SNFTrainer(_snf(), 30, lr=5e-3, **kw)
    assert "lr" not in str(err.value).split("configuration:")[1].split("(pass")[0]
    with pytest.raises(ValueError, match=r"lr: saved 0\.005, given 0\.01.*override=True"):
        SNFTrainer(_snf(), 20, lr=1e-2, **kw)
    with pytest.raises(ValueError, match=r"batch_size: saved 16, given 8; seed: saved 3, given 4"):
        SNFTrainer(_snf(), 20, lr=5e-3, checkpoint=path, batch_size=8, seed=4, progress=False)


def test_override_continues_with_the_given_schedule(tmp_path):
    path = tmp_path / "snf.pt"
    _checkpointed(path)
    trainer = SNFTrainer(
        _snf(), 40, batch_size=16, seed=3, lr=1e-2, progress=False, checkpoint=path, override=True
    )
    assert trainer.step == 10 and trainer.scheduler.T_max == 40
    # the cosine schedule of the given steps and lr at step 10: lr * (1 + cos(pi / 4)) / 2
    want = 0.5 * 1e-2 * (1 + math.cos(math.pi * 10 / 40))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(want, rel=1e-12)
    history = trainer.run()
    assert len(history["loss"]) == 40 and trainer.step == 40
    assert torch.load(path, weights_only=True)["config"]["steps"] == 40
    # a checkpoint beyond the given steps cannot be resumed, even with override
    with pytest.raises(ValueError, match=r"at step 40, beyond steps=20"):
        SNFTrainer(_snf(), 20, batch_size=16, checkpoint=path, override=True, progress=False)


def test_corrupted_truncated_and_foreign_checkpoints_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    _checkpointed(good)
    raw = good.read_bytes()
    cases = {
        "garbage.pt": b"not a checkpoint at all" * 10,
        "truncated.pt": raw[: len(raw) // 2],
        "empty.pt": b"",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ValueError, match=rf"cannot read the checkpoint .*{name}"):
            SNFTrainer(_snf(), 20, checkpoint=tmp_path / name, progress=False)
        assert (tmp_path / name).read_bytes() == blob  # never overwritten
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"foreign\.pt.* lacks \['config'"):
        SNFTrainer(_snf(), 20, checkpoint=tmp_path / "foreign.pt", progress=False)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt.*not a trainer checkpoint"):
        SNFTrainer(_snf(), 20, checkpoint=tmp_path / "list.pt", progress=False)


def test_checkpoint_pickles_are_not_executed(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"config": _Evil(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"cannot read the checkpoint .*evil\.pt"):
        SNFTrainer(_snf(), 20, checkpoint=tmp_path / "evil.pt", progress=False)
    assert not marker.exists()


def test_checkpoint_of_another_model_names_the_file(tmp_path):
    path = tmp_path / "snf.pt"
    _checkpointed(path)
    other = StochasticNormalizingFlow(
        (2,), [T.affine_coupling(2, hidden_dims=[4]), MALABlock(target_log_prob)], target_log_prob
    )
    with pytest.raises(ValueError, match=r"snf\.pt.* does not fit this model"):
        SNFTrainer(other, 20, batch_size=16, seed=3, lr=5e-3, checkpoint=path, progress=False)


def test_trainer_refuses_a_target_with_wrong_output_shape():
    # issue 10, item 6: checked once, when the trainer is made
    snf = StochasticNormalizingFlow(
        (2,), [T.affine_coupling(2, hidden_dims=[4])], lambda x: target_log_prob(x).sum()
    )
    with pytest.raises(ValueError, match=r"SNFTrainer: expected the target .*batch shape \(2,\)"):
        SNFTrainer(snf, 5, progress=False)
