"""The runner's method tables, what dispatches through them, and the guides' public layout API."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal

from pyro_relax.cli import _parser
from pyro_relax.infer.guides import AutoFlowGuide, AutoSNFGuide
from pyro_relax.infer.guides.layout import latent_shapes, unpack_latent
from pyro_relax.infer.model import Potential
from pyro_relax.infer.runner import (
    GUIDES,
    KERNELS,
    FitOptions,
    GuideMethod,
    KernelMethod,
    fit_guide,
    make_guide,
)
from pyro_relax.train.checkpoint import (
    check_state_parts,
    config_differences,
    read_checkpoint,
    save_checkpoint,
)


def model():
    pyro.sample("a", dist.LogNormal(0.0, 1.0))
    pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    pyro.sample("c", dist.Dirichlet(torch.ones(3)))


def test_tables_hold_descriptions_and_functions():
    assert all(isinstance(m, GuideMethod) and m.description and callable(m.fit)
               for m in GUIDES.values())
    assert all(isinstance(m, KernelMethod) and m.description and callable(m.build)
               for m in KERNELS.values())
    assert GUIDES["auto"].default_steps == 5000 and GUIDES["flow"].default_steps == 2000
    assert KERNELS["ais-imh"].proposal == "flow-ais" and KERNELS["nuts"].proposal is None
    lightning = pytest.importorskip("pyro_relax.lightning")
    assert set(lightning.GUIDE_NAMES) == {"normal", "mvn", "iaf", "flow", "snf", "diffusion",
                                          "structured"}


def test_cli_offers_exactly_the_tables():
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    guide = next(a for a in sub["fit"]._actions if a.dest == "guide")
    kernel = next(a for a in sub["mcmc"]._actions if a.dest == "kernel")
    assert list(guide.choices) == list(GUIDES) and list(kernel.choices) == list(KERNELS)
    assert all(m.description in guide.help for m in GUIDES.values())
    assert all(m.description in kernel.help for m in KERNELS.values())


def test_fit_guide_dispatches_through_the_table(monkeypatch):
    seen = {}

    def fake(model_, opts):
        seen["opts"] = opts
        return "fitted"

    monkeypatch.setitem(GUIDES, "normal", GuideMethod("a test entry", fake))
    assert fit_guide(model, "normal", steps=7, lr=0.5, progress=False) == "fitted"
    assert isinstance(seen["opts"], FitOptions)
    assert seen["opts"].steps == 7 and seen["opts"].lr == 0.5
    assert seen["opts"].dtype == torch.float64


def test_make_guide_builds_and_refuses():
    assert isinstance(make_guide(model, "mvn"), AutoMultivariateNormal)
    assert isinstance(make_guide(model, "flow", hidden=8), AutoFlowGuide)
    with pytest.raises(ValueError, match="expected a guide in"):
        make_guide(model, "auto")  # fitted by a pipeline, not one SVI guide


def test_unpack_latent_matches_pyro_and_our_guides():
    pyro.clear_param_store()
    pyro_guide = AutoDiagonalNormal(model)
    pyro_guide()
    ours = AutoFlowGuide(model, num_layers=1, hidden=8)
    ours()
    z = torch.arange(10.0).reshape(2, 5)
    assert latent_shapes(pyro_guide) == {"a": torch.Size([]), "b": torch.Size([2]),
                                         "c": torch.Size([2])}
    assert latent_shapes(ours) == ours.latent_shapes() == latent_shapes(pyro_guide)
    expected = {site["name"]: u for site, u in pyro_guide._unpack_latent(z)}
    for got in (unpack_latent(pyro_guide, z), ours.unpack_latent(z)):
        assert set(got) == set(expected)
        for k, v in expected.items():
            assert torch.equal(got[k], v)
    with pytest.raises(ValueError, match="run once"):
        unpack_latent(AutoDiagonalNormal(model), z)
    pyro.clear_param_store()


def test_potential_lays_out_like_pyros_guide():
    pyro.clear_param_store()
    guide = AutoDiagonalNormal(model)
    guide()
    potential = Potential(model, dtype=torch.float32)
    z = torch.randn(4, guide.latent_dim)
    expected = {site["name"]: u for site, u in guide._unpack_latent(z)}
    got = potential.unpack(z)
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert torch.equal(got[k].reshape(v.shape), v)
    flow = AutoFlowGuide(model, num_layers=1, hidden=8)
    flow()
    torch.testing.assert_close(potential.log_density(z), flow.log_joint(z))
    torch.testing.assert_close(flow.log_joint(z), flow.log_joint_unconstrained(z))
    assert flow.raw_model is model and flow.model_args == ((), {})
    # a non-finite proposal is a value, not an error, for log_joint
    assert not bool(torch.isfinite(flow.log_joint(torch.full((1, 5), math.nan))).all())
    pyro.clear_param_store()


def test_warm_start_trains_the_flow_then_shares_it():
    pyro.clear_param_store()
    trained = []

    def train(flow):
        svi = SVI(model, flow, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        for _ in range(3):
            svi.step()
        trained.append(flow)

    snf = AutoSNFGuide.warm_start(model, train, hidden=8, blocks=["mala"])
    (flow,) = trained
    assert flow._kind == "affine" and flow._num_layers == 2
    assert snf._placement == "base" and len(snf.blocks) == 1
    flow_layers = list(flow.flow.layers)
    assert all(any(a is b for b in snf.snf.layers) for a in flow_layers)  # shared, not copied
    z, log_q = snf.sample_unconstrained(5)
    assert z.shape == (5, 5) and bool(torch.isfinite(log_q).all())
    with pytest.raises(TypeError, match="callable train_flow"):
        AutoSNFGuide.warm_start(model, "not a function")
    pyro.clear_param_store()


def test_checkpoint_helpers(tmp_path):
    path = str(tmp_path / "run.pt")
    save_checkpoint(path, {"step": 2, "x": torch.ones(2)}, "FABTrainer")
    state = read_checkpoint(path, "FABTrainer")
    assert state["step"] == 2 and torch.equal(state["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary left
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"FABTrainer: cannot read the checkpoint .*bad\.pt"):
        read_checkpoint(str(tmp_path / "bad.pt"), "FABTrainer")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt.*not a trainer checkpoint"):
        read_checkpoint(str(tmp_path / "list.pt"), "SNFTrainer")
    with pytest.raises(OSError, match="cannot write the checkpoint"):
        save_checkpoint(str(tmp_path / "missing" / "run.pt"), {}, "SNFTrainer")
    assert config_differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == [
        "b: saved 2, given 3", "c: saved '(none)', given 4"]
    with pytest.raises(ValueError, match=r"lacks \['model'\]"):
        check_state_parts({"step": 1}, ["step", "model"], "here", "SNFTrainer")
    with pytest.raises(ValueError, match=r"lacks \['model', 'step'\]"):
        check_state_parts([1], ["step", "model"], "here", "SNFTrainer")
