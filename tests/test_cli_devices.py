"""``pyro-relax fit MODEL --devices N``: data-parallel SVI of a model(ind, *data) file.

The end-to-end run spawns two gloo workers on CPU (about 25 s on 2 busy cores;
the only two-process test in the default run). The bad-input tests train nothing.
"""

import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("lightning")

from pyro_relax._outdir import MARKER  # noqa: E402
from pyro_relax.cli import main  # noqa: E402
from pyro_relax.modelfile import FileModel, import_file, load_data  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data_parallel.py"
OUTPUTS = ("posterior.nc", "summary.csv", "diagnostics.json", "report.html", "elbo.png", MARKER)

MODEL = textwrap.dedent(
    """
    import pyro, pyro.distributions as dist, torch

    N = 20
    data = (torch.linspace(-1.0, 1.0, N),)
    two = (torch.zeros(N), torch.ones(N, 3))
    ragged = (torch.zeros(N), torch.ones(N + 1))
    not_tensors = [1.0, 2.0]
    scalar = (torch.tensor(1.0),)

    def made():
        return torch.zeros(N)

    def model(ind, x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", N, subsample=ind):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    def plain():
        pyro.sample("mu", dist.Normal(0.0, 1.0))
    """
)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "indexed.py"
    path.write_text(MODEL)
    return path


def test_file_model_pickles_and_round_trips(model_file, tmp_path):
    """The function of a file imported by path does not pickle; FileModel does, by path,
    also inside the ELBO module (model and guide) that a spawned worker gets, and a fresh
    process can load it."""
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal

    fm = FileModel(model_file, "model")
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(fm.function)  # the problem FileModel solves
    copy = pickle.loads(pickle.dumps(fm))
    assert isinstance(copy, FileModel) and copy.path == model_file.resolve()
    assert copy.name == "model" and copy.module is not fm.module  # imported again
    assert "indexed.py" in repr(copy)
    ind, (x,) = torch.arange(4), load_data(fm.module)
    guide = AutoDiagonalNormal(fm)
    guide(ind, x[ind])
    restored = pickle.loads(pickle.dumps(Trace_ELBO()(fm, guide)))
    assert isinstance(restored.model, FileModel)
    assert math.isfinite(float(restored(ind, x[ind]).detach()))
    blob = tmp_path / "model.pkl"
    blob.write_bytes(pickle.dumps(fm))
    code = ("import pickle, sys, pyro, torch; m = pickle.load(open(sys.argv[1], 'rb'));"
            "t = pyro.poutine.trace(m).get_trace(torch.arange(3), torch.zeros(3));"
            "print(sorted(t.nodes))")
    res = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "'mu'" in res.stdout and "'obs'" in res.stdout
    with pytest.raises(ValueError, match="has no callable 'nothing'"):
        FileModel(model_file, "nothing")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        FileModel(tmp_path / "missing.py")


def test_load_data_accepts_tensors_tuples_and_functions(model_file):
    module = import_file(model_file)
    assert [tuple(t.shape) for t in load_data(module, "two")] == [(20,), (20, 3)]
    assert [tuple(t.shape) for t in load_data(module, "made")] == [(20,)]


def test_fit_guide_distributed_sets_its_own_log_and_elbo(model_file):
    from pyro_relax.lightning import fit_guide_distributed

    fm = FileModel(model_file)
    (x,) = load_data(fm.module)
    for option in ("log_dir", "elbo"):
        with pytest.raises(TypeError, match=f"{option} is set here"):
            fit_guide_distributed(fm, "normal", 1, x, **{option: None})
    with pytest.raises(ValueError, match="num_particles"):
        fit_guide_distributed(fm, "normal", 1, x, num_particles=0)


def _devices_fit(model, out, *extra):
    return main(["fit", str(model), "--devices", "1", "--guide", "normal", "--steps", "2",
                 "--num-samples", "4", "--out", str(out), *extra])


BAD = {
    "zero devices": (["--devices", "0"], "--devices must be at least 1, got 0"),
    "too many cpus": (["--devices", str((os.cpu_count() or 1) + 1)], "CPU processes"),
    "strategy": (["--strategy", "horovod"], r"expected --strategy auto or ddp, got 'horovod'"),
    "auto with 2": (["--devices", "2", "--strategy", "auto"], "needs --strategy ddp"),
    "guide auto": (["--guide", "auto"], r"SVI steps.*expected --guide one of \[.*'normal'"),
    "guide pathfinder": (["--guide", "pathfinder"], "expected --guide one of"),
    "guide flow-ais": (["--guide", "flow-ais"], "expected --guide one of"),
    "guide fab": (["--guide", "fab"], "expected --guide one of"),
    "float64": (["--dtype", "float64"], "fits in float32"),
    "no data": (["--data", "missing"], "defines no 'missing'"),
    "not tensors": (["--data", "not_tensors"], "to hold only tensors"),
    "ragged": (["--data", "ragged"], r"share their first dimension.*\(20,\), \(21,\)"),
    "scalar": (["--data", "scalar"], "share their first dimension"),
    "not divisible": (["--devices", "2", "--batch-size", "5"], "not divisible by --devices 2"),
    "batch too large": (["--batch-size", "21"], r"--batch-size 21 is larger than the data"),
    "zero batch": (["--batch-size", "0"], "--batch-size must be at least 1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_devices_input_is_one_line_before_fitting(model_file, tmp_path, capsys, case):
    extra, message = BAD[case]
    if case == "auto with 2" and (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPU cores")
    out = tmp_path / "out"
    assert _devices_fit(model_file, out, *extra) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-relax: error:") and "\n" not in err, err
    assert __import__("re").search(message, err), err
    assert not out.exists()  # checked before anything was created


def test_indexed_model_without_devices_says_so(model_file, tmp_path, capsys):
    code = main(["fit", f"{model_file}:model", "--guide", "normal", "--out",
                 str(tmp_path / "out")])
    assert code == 1
    assert "needs --devices N" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--strategy", "ddp"], ["--batch-size", "8"],
                                    ["--data", "data"]])
def test_devices_options_need_devices(model_file, tmp_path, capsys, option):
    code = main(["fit", f"{model_file}:plain", "--guide", "normal", *option, "--out",
                 str(tmp_path / "out")])
    assert code == 1 and not (tmp_path / "out").exists()
    assert f"{option[0]} only applies with --devices N" in capsys.readouterr().err


def test_one_device_fit_writes_every_output(model_file, tmp_path, capsys):
    """--devices 1 (one process, strategy auto): the same outputs as the plain fit."""
    out = tmp_path / "one"
    assert _devices_fit(model_file, out, "--steps", "20", "--num-samples", "50") == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["stages"][0]["devices"] == 1 and diag["stages"][0]["steps"] == 20
    assert diag["stages"][0]["strategy"] == "auto" and diag["dtype"] == "float32"
    record = json.loads((out / MARKER).read_text())
    assert "batch_size" in json.dumps(record)  # the resolved options are recorded
    assert "final ELBO" in capsys.readouterr().out


def _exact_posterior():
    module = import_file(EXAMPLE)
    return module.exact_posterior()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
def test_two_workers_fit_the_conjugate_posterior(tmp_path, capsys):
    """examples/data_parallel.py (mu ~ N(0, 10), 400 points ~ N(mu, 5): posterior sd 0.25) on
    2 gloo workers, 40 indices each per step. The written posterior is PSIS-resampled from
    1000 guide draws; its mean's standard error is sd / sqrt(ESS), and with the importance
    ESS at least half the draws (asserted) that is at most sd * sqrt(2 / 1000) = 0.011, so
    4 of those (0.045) bounds the error of the mean; the sd itself is within 4 of its
    standard error sd / sqrt(2 ESS) (0.032). Measured: mean error 0.016, sd 0.268."""
    out = tmp_path / "two"
    n = 1000
    code = main(["fit", f"{EXAMPLE}:model", "--devices", "2", "--guide", "normal", "--steps",
                 "300", "--lr", "0.1", "--particles", "1", "--batch-size", "80",
                 "--num-samples", str(n), "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err[-2000:]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["stages"][0]["devices"] == 2 and diag["stages"][0]["strategy"] == "ddp_spawn"
    assert diag["ess_fraction"] >= 0.5 and diag["khat"] < 0.7
    mean, sd = _exact_posterior()
    row = pd.read_csv(out / "summary.csv", index_col=0).loc["mu"]
    assert abs(row["mean"] - mean) < 4 * sd * math.sqrt(2 / n), (row["mean"], mean)
    assert abs(row["sd"] - sd) < 4 * sd / math.sqrt(n), (row["sd"], sd)
    assert len(diag["stages"]) == 1 and diag["stages"][0]["steps"] == 300


@pytest.mark.slow
@pytest.mark.parametrize("guide", ["flow", "snf"])
def test_two_workers_with_our_guides(tmp_path, guide):
    """Our guides drop their model when pickled; the workers give them the FileModel back."""
    out = tmp_path / guide
    code = main(["fit", f"{EXAMPLE}:model", "--devices", "2", "--guide", guide, "--steps", "10",
                 "--particles", "1", "--num-samples", "50", "--out", str(out)])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
