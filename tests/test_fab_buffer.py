"""The prioritized replay buffer of FAB: weighted sampling, the q-ratio correction, eviction."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from pyro_relax.train.buffer import PrioritizedBuffer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _normal_log_prob(x: torch.Tensor, loc: float, scale: float) -> torch.Tensor:
    return -0.5 * ((x - loc) / scale).square().sum(-1) - x.shape[-1] * (
        math.log(scale) + 0.5 * math.log(2 * math.pi)
    )


def _filled(weights: list[float], device: str = "cpu") -> PrioritizedBuffer:
    buf = PrioritizedBuffer(1, max_size=len(weights), device=device, dtype=torch.float64)
    n = len(weights)
    x = torch.arange(n, dtype=torch.float64).unsqueeze(-1)
    log_w = torch.tensor(weights, dtype=torch.float64).log()
    buf.add(x, log_w, torch.zeros(n, dtype=torch.float64))
    return buf


@pytest.mark.parametrize("batch", [1, 3])
def test_first_pick_follows_the_weights_chi_square(batch: int) -> None:
    # Pearson's test of the first pick's frequencies against w / sum w; under the null the
    # statistic is chi-square with 4 degrees of freedom, so a correct sampler fails with
    # probability 1e-3 at this fixed seed (a wrong one, e.g. uniform picks, gives p ~ 1e-300).
    weights = [1.0, 2.0, 3.0, 4.0, 10.0]
    buf = _filled(weights)
    g = torch.Generator().manual_seed(0)
    draws = 4000
    firsts = torch.stack([buf.sample(batch, generator=g)[3][0] for _ in range(draws)])
    counts = torch.bincount(firsts, minlength=5).double()
    expected = torch.tensor(weights, dtype=torch.float64) / sum(weights) * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert stats.chi2.sf(chi2, df=4) > 1e-3, (counts.tolist(), expected.tolist())


def test_batches_are_without_replacement_and_skip_zero_weights() -> None:
    buf = _filled([1.0, 1.0, 1.0, 1.0])
    buf.log_w[1] = -math.inf
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        idx = buf.sample(3, generator=g)[3]
        assert idx.unique().numel() == 3 and 1 not in idx.tolist()
    with pytest.raises(ValueError, match="positive weight"):
        buf.sample(4)


def test_entries_whose_probability_underflows_are_still_drawn_heaviest_first() -> None:
    # float32: w / sum w of the light entries underflows to 0 (exp(-200)); the sampler works
    # on the log weights (Gumbel top-k), so the batch does not shrink to the heavy entry
    buf = PrioritizedBuffer(1, max_size=5)
    buf.add(torch.arange(5.0).unsqueeze(-1), torch.tensor([-200.0, 0.0, -200.0, -210.0, -math.inf]),
            torch.zeros(5))
    assert int((buf.probabilities() > 0).sum()) == 1 and buf.count_positive() == 4
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = buf.sample(4, generator=g)[3].tolist()
        assert idx[0] == 1 and sorted(idx) == [0, 1, 2, 3]
        assert idx[3] == 3  # exp(-10) less likely than either -200 entry at each pick


def test_q_ratio_correction_is_exact_for_gaussians() -> None:
    # x ~ g = N(0, 2^2), target p = N(1, 1); AIS-free FAB weights w = p^2 / (q g).
    # Stored with q_old = N(0, 1.5^2); after q changes to q_mid and then q_new (closed forms)
    # the corrected log weights must equal those computed afresh with q_new.
    torch.manual_seed(0)
    x = 2.0 * torch.randn(64, 3, dtype=torch.float64)
    lp, lg = _normal_log_prob(x, 1.0, 1.0), _normal_log_prob(x, 0.0, 2.0)
    pars = [(0.0, 1.5), (0.3, 1.2), (0.8, 1.1)]
    q_old, q_mid, q_new = (_normal_log_prob(x, m, s) for m, s in pars)
    buf = PrioritizedBuffer(3, max_size=64, dtype=torch.float64)
    buf.add(x, 2 * lp - q_old - lg, q_old)
    idx = torch.arange(64)
    buf.adjust(idx, q_mid)
    delta = buf.adjust(idx, q_new)
    torch.testing.assert_close(delta, q_mid - q_new)
    torch.testing.assert_close(buf.log_w, 2 * lp - q_new - lg, rtol=0, atol=1e-12)
    torch.testing.assert_close(buf.log_q, q_new)


def test_oldest_entries_are_evicted_first() -> None:
    buf = PrioritizedBuffer(1, max_size=4)
    for start in (0, 3):
        x = torch.arange(start, start + 3, dtype=torch.get_default_dtype()).unsqueeze(-1)
        buf.add(x, torch.zeros(3), torch.zeros(3))
    assert len(buf) == 4
    assert sorted(buf.x.squeeze(-1).tolist()) == [2.0, 3.0, 4.0, 5.0]


def test_non_finite_entries_are_not_stored() -> None:
    buf = PrioritizedBuffer(1, max_size=8)
    x = torch.tensor([[0.0], [math.nan], [1.0], [2.0]])
    log_w = torch.tensor([0.0, 0.0, math.nan, math.inf])
    assert buf.add(x, log_w, torch.zeros(4)) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_state_round_trip_and_device(device: str) -> None:
    buf = _filled([1.0, 2.0, 3.0], device)
    other = PrioritizedBuffer(1, max_size=3, device=device, dtype=torch.float64)
    other.load_state_dict(buf.state_dict())
    assert other.x.device.type == device
    torch.testing.assert_close(other.log_w, buf.log_w)
    assert (other.size, other.head) == (buf.size, buf.head)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="max_size >= 1"):
        PrioritizedBuffer(2, max_size=-5)
    with pytest.raises(ValueError, match="min_size <= max_size"):
        PrioritizedBuffer(2, max_size=4, min_size=5)
    with pytest.raises(TypeError, match="int max_size"):
        PrioritizedBuffer(2, max_size=4.0)  # type: ignore[arg-type]
    buf = PrioritizedBuffer(2, max_size=8, min_size=4)
    with pytest.raises(ValueError, match="fewer than min_size=4"):
        buf.sample(1)  # empty at the first step
    buf.add(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="fewer than min_size=4"):
        buf.sample(1)  # undersized
    with pytest.raises(ValueError, match="expected x"):
        buf.add(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="indices in"):
        buf.adjust(torch.tensor([7]), torch.zeros(1))
