"""The hot path of a flow: checks run once at the entry point, never in the inner layers.

Issue 24: a training step of an 8-layer coupling stack spent its time in input
checks repeated by every layer. These tests count the checks of one forward
pass, and pin the stack's output so the speed work cannot change the numbers.
"""

import pyro.distributions as dist
import pytest
import torch

import pyro_relax
from pyro_relax.core import layer as layer_module
from pyro_relax.distributions import Flow
from pyro_relax.distributions import flow_distribution as fd_module
from pyro_relax.surjections import AbsSurjection
from pyro_relax.transforms.stacks import coupling_stack

CHECKS = ("floating_input", "check_event_shape", "check_finite")


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap the shared checks where the layers and the entry point call them; count calls."""
    counts: dict[str, int] = {}
    for module, where in ((layer_module, "layer"), (fd_module, "entry")):
        for name in CHECKS:
            if not hasattr(module, name):
                continue
            original = getattr(module, name)

            def counted(*args, _f=original, _key=f"{where}.{name}", **kwargs):
                counts[_key] = counts.get(_key, 0) + 1
                return _f(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)
    original_check = AbsSurjection.check_data

    def counted_check(self, x, _f=original_check):
        counts["layer.check_data"] = counts.get("layer.check_data", 0) + 1
        return _f(self, x)

    monkeypatch.setattr(AbsSurjection, "check_data", counted_check)
    return counts


@pytest.mark.parametrize("validate", [True, False], ids=["validation_on", "validation_off"])
def test_inner_layers_of_an_8_layer_stack_do_not_validate(monkeypatch, validate):
    torch.manual_seed(0)
    flow = Flow((2,), [*coupling_stack(2, num_layers=8, hidden=8), AbsSurjection()])
    assert len(flow.layers) == 16  # 8 couplings, 7 flips, the abs surjection
    x = torch.rand(32, 2)
    counts = _count_checks(monkeypatch)
    with pyro_relax.validation(validate):
        flow.log_prob(x)
    layer_checks = {
        k: v for k, v in counts.items() if k.startswith("layer.") and k != "layer.check_data"
    }
    assert layer_checks == {}, f"inner layers validated their input: {layer_checks}"
    # the entry point checks once: dtype, event shape, finiteness, the last layer's domain
    assert counts.get("entry.check_event_shape") == 1
    assert counts.get("entry.floating_input") == 1
    assert counts.get("layer.check_data", 0) == (1 if validate else 0)


def test_sampling_runs_no_per_layer_checks(monkeypatch):
    torch.manual_seed(0)
    flow = Flow((2,), coupling_stack(2, num_layers=8, hidden=8))
    counts = _count_checks(monkeypatch)
    flow().rsample_and_log_q((16,))
    assert {k: v for k, v in counts.items() if k.startswith("layer.")} == {}


def _reference_log_prob(layers: list, x: torch.Tensor) -> torch.Tensor:
    """The log-density of the stack as the code before the speed work summed it, op for op."""
    base = dist.Normal(torch.zeros(2), torch.ones(2), validate_args=False).to_event(1)
    total = x.new_zeros(())
    z = x
    for t in reversed(layers):
        prev = z
        z = t.inv(prev)
        total = total + -t.log_abs_det_jacobian(z, prev)
    return base.log_prob(z) + total


def test_default_stack_parameters_and_log_prob_unchanged():
    """The speed work changes no number: same parameters, bit-identical ``log_prob``."""
    torch.manual_seed(0)
    layers = coupling_stack(2, num_layers=8, hidden=64, count_bins=8, bound=5.0)
    flow = Flow((2,), layers)
    # 8 conditioners 1 -> 64 -> 64 -> 31 (8 widths, 8 heights, 7 derivatives, 8 lambdas)
    assert sum(p.numel() for p in flow.parameters()) == 8 * (2 * 64 + 65 * 64 + 65 * 31)
    x = torch.linspace(-3.0, 3.0, 24).reshape(12, 2)
    with torch.no_grad():
        ours = flow.log_prob(x)
        ref = _reference_log_prob(layers, x)
    assert torch.equal(ours, ref)


def test_entry_point_still_refuses_bad_input():
    flow = Flow((2,), [*coupling_stack(2, num_layers=2, hidden=8), AbsSurjection()])
    with pytest.raises(ValueError, match="finite"):
        flow.log_prob(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="event shape"):
        flow.log_prob(torch.ones(3, 3))
    with pytest.raises(TypeError, match="float32"):
        flow.log_prob(torch.ones(3, 2, dtype=torch.float64))
    with pyro_relax.validation(False):  # the switch still turns the data checks off
        assert flow.log_prob(torch.tensor([[float("nan"), 1.0]])).isnan().all()
