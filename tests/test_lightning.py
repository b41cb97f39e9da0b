"""pyro_relax.lightning: sharding, the DDP = one-process identity, SVI subsamples, resumes.

Two-process runs use the gloo backend on CPU. Only the density DDP test runs by
default (about 30 s on 2 cores); the others are marked ``slow``.
"""

import math
import os
import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch

lightning = pytest.importorskip("lightning")

from lightning.pytorch.callbacks import Callback  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from pyro_relax import datasets  # noqa: E402
from pyro_relax.distributions import Flow  # noqa: E402
from pyro_relax.lightning import (  # noqa: E402
    DensityModule,
    IndexedDataset,
    ShardedData,
    SNFModule,
    StepData,
    check_devices,
    check_strategy,
    fit_svi_distributed,
    make_trainer,
)
from pyro_relax.transforms.stacks import coupling_stack  # noqa: E402

PYTHON = sys.executable
N_DATA = 64  # size of the SVI model's plate


def _density_run(devices, strategy, log_dir, steps=6):
    torch.manual_seed(0)
    flow = Flow((2,), coupling_stack(2, 2, 16))
    data = datasets.two_moons(256, seed=0)
    module = DensityModule(flow, lr=1e-2)
    shards = ShardedData(TensorDataset(data), batch_size=32, shuffle=True, seed=3)
    trainer = make_trainer(devices=devices, strategy=strategy, max_steps=steps, log_dir=log_dir)
    trainer.fit(module, datamodule=shards)
    return module, _logged(log_dir, "train_loss")


def _logged(log_dir, key):
    import csv

    with open(os.path.join(log_dir, "metrics.csv")) as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def test_two_process_density_matches_one_process(tmp_path):
    """DDP on 2 gloo workers, each with half of every global batch, ends at the parameters
    of one process on the whole batches. The only difference is the order of float32
    sums (the all-reduce averages two half-batch means): after 6 Adam steps at lr 1e-2
    the parameters agree to 1e-5 (measured: about 2e-7)."""
    one, loss1 = _density_run(1, "auto", str(tmp_path / "one"))
    two, loss2 = _density_run(2, "ddp_spawn", str(tmp_path / "two"))
    p1, p2 = one.flow.state_dict(), two.flow.state_dict()
    assert p1.keys() == p2.keys()
    start = Flow((2,), coupling_stack(2, 2, 16)).state_dict()  # moved away from the start
    assert max((p1[k] - start[k]).abs().max() for k in p1 if p1[k].is_floating_point()) > 1e-3
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], atol=1e-5, rtol=1e-5, msg=k)
    assert len(loss1) == len(loss2) == 6
    torch.testing.assert_close(torch.tensor(loss1), torch.tensor(loss2), atol=1e-5, rtol=1e-5)


def test_sharded_data_same_global_batches_for_any_world_size():
    data = TensorDataset(torch.arange(40.0)[:, None])
    shards = ShardedData(data, batch_size=8, shuffle=True, seed=1)

    def batches(world):
        out = []
        for rank in range(world):
            shards.trainer = None
            shards._world = lambda r=rank: (world, r)  # what a trainer would say
            loader = shards.train_dataloader()
            loader.sampler.set_epoch(2)  # ignored: the order follows the global step
            out.append([b[0].flatten().tolist() for b in loader])
        return [sorted(sum(step, [])) for step in zip(*out, strict=True)]

    one, two = batches(1), batches(2)
    assert one == two and len(one) == 5
    assert sorted(sum(one, [])) == list(range(40))  # every item once per epoch


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match=r"expected a strategy in \['auto', 'ddp', 'ddp_spawn'\]"):
        check_strategy("horovod")
    with pytest.raises(ValueError, match="expected at most .* GPU devices"):
        check_devices("gpu", torch.cuda.device_count() + 1)
    with pytest.raises(ValueError, match="CPU processes"):
        check_devices("cpu", (os.cpu_count() or 1) + 1)
    with pytest.raises(ValueError, match="accelerator one of"):
        check_devices("tpu", 1)
    with pytest.raises(TypeError, match="positive int"):
        check_devices("cpu", 1.5)
    with pytest.raises(ValueError, match="divisible by the 3 workers"):
        ShardedData(TensorDataset(torch.zeros(10, 1)), batch_size=8)._local_batch(3)
    with pytest.raises(TypeError, match="expected a pyro_relax Flow"):
        DensityModule(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="positive finite lr"):
        DensityModule(Flow((2,), coupling_stack(2, 1, 4)), lr=float("nan"))


def test_nan_loss_is_a_clear_error(tmp_path):
    flow = Flow((2,), coupling_stack(2, 1, 4))
    bad = torch.full((16, 2), float("nan"))
    trainer = make_trainer(max_steps=2)
    with pytest.raises(FloatingPointError, match="DensityModule: the loss is nan at step 0"):
        trainer.fit(DensityModule(flow), datamodule=ShardedData(TensorDataset(bad), batch_size=8))


def _svi_model(ind, x):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", N_DATA, subsample=ind):
        pyro.sample("obs", dist.Normal(loc, scale), obs=x)


class _RecordIndices(Callback):
    def __init__(self, folder):
        self.folder, self.seen = folder, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append(batch[0].clone())

    def on_train_end(self, trainer, module):
        path = os.path.join(self.folder, f"ind{trainer.global_rank}.pt")
        torch.save(torch.stack(self.seen), path)


@pytest.mark.slow
def test_svi_two_workers_disjoint_subsamples_same_elbo(tmp_path):
    """The two workers' subsamples are disjoint and together the one-process subsample;
    the logged ELBO (the mean of the workers', each scaled by N / its batch) follows the
    one-process trajectory to float32 rounding (rtol 1e-4: the guide's draws are equal,
    the same seed on every worker)."""
    x = 3.0 + torch.randn(N_DATA, generator=torch.Generator().manual_seed(0))
    runs = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        folder = tmp_path / str(devices)
        folder.mkdir()
        pyro.clear_param_store()
        fit_svi_distributed(_svi_model, "normal", devices, x, steps=12, batch_size=16,
                            lr=0.05, strategy=strategy, log_dir=str(folder),
                            callbacks=[_RecordIndices(str(folder))])
        runs[devices] = (_logged(str(folder), "train_loss"),
                         [torch.load(folder / f"ind{r}.pt") for r in range(devices)])
    (elbo1, (ind1,)), (elbo2, (r0, r1)) = runs[1], runs[2]
    for step in range(12):
        assert not set(r0[step].tolist()) & set(r1[step].tolist())
        assert sorted(r0[step].tolist() + r1[step].tolist()) == sorted(ind1[step].tolist())
    assert elbo1[-1] < elbo1[0]  # it trains
    torch.testing.assert_close(torch.tensor(elbo2), torch.tensor(elbo1), rtol=1e-4, atol=1e-3)


RESUME_SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import TensorDataset
    from pyro_relax import datasets
    from pyro_relax.distributions import Flow
    from pyro_relax.lightning import DensityModule, ShardedData, make_trainer
    from pyro_relax.surjections import AugmentSurjection
    from pyro_relax.transforms.stacks import coupling_stack

    class Kill(Callback):
        def __init__(self, at):
            self.at = at
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == self.at:
                os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        folder, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
        torch.manual_seed(0)
        flow = Flow((3,), [*coupling_stack(3, 2, 8), AugmentSurjection(2, 1, hidden=(8,))])
        data = datasets.two_moons(128, seed=0)
        module = DensityModule(flow, lr=1e-2, num_particles=4)
        shards = ShardedData(TensorDataset(data), TensorDataset(data[:32]), batch_size=32, seed=5)
        trainer = make_trainer(devices=2, strategy="ddp", max_steps=12,
                               checkpoint_dir=os.path.join(folder, "ckpt"),
                               callbacks=[Kill(kill_at)] if kill_at >= 0 else [])
        last = os.path.join(folder, "ckpt", "last.ckpt")
        trainer.fit(module, datamodule=shards, ckpt_path=last if resume else None)
        if trainer.global_rank == 0:
            torch.save(module.flow.state_dict(), os.path.join(folder, "final.pt"))
''')


@pytest.mark.slow
def test_killed_two_process_run_resumes_exactly(tmp_path):
    """An augment flow (noise in every step) on 2 workers, 4 steps per epoch, checkpoints at
    epoch ends: killed (SIGKILL) at step 6, resumed from the step-4 checkpoint, it ends at
    the parameters of an uninterrupted run bit for bit (same seeds, data order and RNG)."""
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(folder, kill_at, resume):
        folder.mkdir(exist_ok=True)
        return subprocess.run([PYTHON, str(script), str(folder), str(kill_at), resume],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)

    whole = run(tmp_path / "whole", -1, "0")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run(tmp_path / "cut", 6, "0")
    assert killed.returncode != 0 and not (tmp_path / "cut" / "final.pt").exists()
    assert (tmp_path / "cut" / "ckpt" / "last.ckpt").is_file()
    saved = torch.load(tmp_path / "cut" / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4 and saved["pyro_relax_rng"].shape[0] == 2
    resumed = run(tmp_path / "cut", -1, "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "whole" / "final.pt")
    b = torch.load(tmp_path / "cut" / "final.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_one_process_resume_is_exact(tmp_path):
    """The same exactness in one process (kept in the default run: a few seconds)."""

    from pyro_relax.surjections import AugmentSurjection

    data = datasets.two_moons(64, seed=0)

    def fit(folder, steps, resume=False, ckpt="last.ckpt"):
        torch.manual_seed(0)
        flow = Flow((3,), [*coupling_stack(3, 1, 8), AugmentSurjection(2, 1, hidden=(8,))])
        module = DensityModule(flow, lr=1e-2)
        trainer = make_trainer(max_steps=steps, checkpoint_dir=str(folder))
        shards = ShardedData(TensorDataset(data), batch_size=16, seed=2)
        trainer.fit(module, datamodule=shards, ckpt_path=str(folder / ckpt) if resume else None)
        return module.flow.state_dict()

    whole = fit(tmp_path / "a", 12)
    fit(tmp_path / "b", 8)  # stops at an epoch end (4 steps per epoch), checkpoint written
    resumed = fit(tmp_path / "b", 12, resume=True)
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    broken = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    del broken["pyro_relax_rng"]
    torch.save(broken, tmp_path / "b" / "bad.ckpt")
    with pytest.raises(ValueError, match="no pyro-relax RNG state"):
        fit(tmp_path / "b", 13, resume=True, ckpt="bad.ckpt")


def test_snf_module_trains_towards_target():
    """Reverse KL of an SNF on a shifted Gaussian target falls (one process, 40 steps)."""
    import pyro.distributions.transforms as T

    from pyro_relax.stochastic.snf import StochasticNormalizingFlow

    def target(x):
        return dist.Normal(2.0, 1.0).log_prob(x).sum(-1)

    snf = StochasticNormalizingFlow((2,), [T.affine_coupling(2, hidden_dims=[8])], target)
    module = SNFModule(snf, lr=3e-2)
    trainer = make_trainer(max_steps=40)
    trainer.fit(module, datamodule=StepData(batch_size=64, steps_per_epoch=20))
    # the loss at the start is KL(N(0,I) || N(2,I)) = 4; Monte Carlo sd at 64 draws ~ 0.4
    assert module.history[0] > 2.5 and module.history[-1] < module.history[0] - 1.5


def test_core_package_does_not_import_lightning():
    code = ("import sys, pyro_relax, pyro_relax.cli, pyro_relax.density_fit, pyro_relax.infer;"
            "bad = [m for m in sys.modules"
            " if m.split('.')[0] in ('lightning', 'pytorch_lightning')];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_indexed_dataset_checks():
    with pytest.raises(ValueError, match="one common first dimension"):
        IndexedDataset(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="tensors or a positive size"):
        IndexedDataset()
    assert len(IndexedDataset(size=5)) == 5


def test_scaling_benchmark_smoke(tmp_path):
    """benchmarks/scaling.py measures one worker at a tiny size and guards its --json file."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"
    spec = importlib.util.spec_from_file_location("scaling_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.measure(1, steps=4, warmup=1, batch_size=32, hidden=8, layers=1, points=256)
    assert row["timed_steps"] == 3 and row["samples_per_s"] > 0
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    assert bench.main(["--json", str(existing), "--devices", "1"]) == 2  # no --overwrite
    assert existing.read_text() == "{}"
    assert bench.main(["--devices", "one"]) == 2


def _shifted_gaussian(x):
    return dist.Normal(2.0, 1.0).log_prob(x).sum(-1)


class _FirstDraw(Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 0:
            state = torch.get_rng_state()  # after the module's seeding (seed + rank)
            torch.save(state, os.path.join(self.folder, f"rng{trainer.global_rank}.pt"))


@pytest.mark.slow
def test_snf_module_on_two_workers(tmp_path):
    """Two gloo workers draw from different streams (seed + rank) and the global
    reverse-KL loss falls from its start near KL(N(0, I) || N(2, I)) = 4."""
    import pyro.distributions.transforms as T

    from pyro_relax.stochastic.snf import StochasticNormalizingFlow

    torch.manual_seed(0)
    snf = StochasticNormalizingFlow((2,), [T.affine_coupling(2, hidden_dims=[8])],
                                    _shifted_gaussian)
    trainer = make_trainer(devices=2, strategy="ddp_spawn", max_steps=30,
                           log_dir=str(tmp_path), callbacks=[_FirstDraw(str(tmp_path))])
    trainer.fit(SNFModule(snf, lr=3e-2), datamodule=StepData(batch_size=64, steps_per_epoch=10))
    r0, r1 = (torch.load(tmp_path / f"rng{r}.pt") for r in (0, 1))
    assert not torch.equal(r0, r1)
    loss = _logged(str(tmp_path), "train_loss")
    assert len(loss) == 30 and loss[0] > 2.5 and loss[-1] < loss[0] - 1.5


@pytest.mark.parametrize("name", ["normal", "flow", "snf"])
def test_svi_guides_train_and_survive_pickling(name):
    """One process, a few steps; then the module pickled as a spawned worker gets it: our
    guides drop their model when pickled and ``setup`` gives it back."""
    import pickle

    from pyro_relax.lightning import GUIDE_NAMES

    assert name in GUIDE_NAMES
    x = 3.0 + torch.randn(N_DATA, generator=torch.Generator().manual_seed(1))
    pyro.clear_param_store()
    module, trainer = fit_svi_distributed(_svi_model, name, 1, x, steps=3, batch_size=16)
    assert trainer.global_step == 3 and len(module.history) == 3
    assert all(math.isfinite(v) for v in module.history)
    copy = pickle.loads(pickle.dumps(module))
    copy.setup("fit")
    ind = torch.arange(16)
    assert math.isfinite(float(copy.loss_fn(ind, x[ind])))
    with pytest.raises(ValueError, match="expected a guide in"):
        fit_svi_distributed(_svi_model, "auto", 1, x)
