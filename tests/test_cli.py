"""The pyro-relax command: outputs, and one-line errors that leave nothing behind."""

import json
import textwrap
from pathlib import Path

import pytest

from pyro_relax.cli import load_model, main

MODEL = textwrap.dedent(
    """
    import pyro, pyro.distributions as dist, torch

    def model():
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        with pyro.plate("n", 5):
            pyro.sample("y", dist.Normal(0.0, s), obs=torch.tensor([0.1, -0.3, 0.5, 0.2, -0.1]))

    def discrete():
        pyro.sample("k", dist.Bernoulli(0.5))

    def nan_model():
        s = pyro.sample("s", dist.Normal(0.0, 1.0))
        pyro.factor("bad", s * float("nan"))

    def needs_arg(x):
        pyro.sample("s", dist.Normal(x, 1.0))
    """
)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(MODEL)
    return path


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_fit_writes_every_output(model_file, tmp_path, capsys):
    out = tmp_path / "fit"
    code = main(
        [
            "fit",
            str(model_file),
            "--guide",
            "normal",
            "--steps",
            "30",
            "--num-samples",
            "100",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    for name in (
        "posterior.nc",
        "summary.csv",
        "diagnostics.json",
        "pairs.png",
        "elbo.png",
        "khat.png",
    ):
        assert (out / name).is_file(), name
    diag = json.loads((out / "diagnostics.json").read_text())
    assert {"khat", "verdict", "ess", "final_elbo", "seconds"} <= set(diag)
    assert diag["verdict"] in ("good", "acceptable", "unreliable", "unconverged")
    assert "final ELBO" in capsys.readouterr().out


def test_mcmc_writes_outputs_with_rhat(model_file, tmp_path):
    out = tmp_path / "mc"
    code = main(
        [
            "mcmc",
            f"{model_file}:model",
            "--kernel",
            "mala",
            "--num-samples",
            "60",
            "--warmup",
            "40",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "r_hat" in (out / "summary.csv").read_text()
    assert "min_ess_bulk" in json.loads((out / "diagnostics.json").read_text())


def test_existing_output_needs_force(model_file, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    code = main(["fit", str(model_file), "--guide", "normal", "--steps", "5", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--force" in err[0]
    code = main(
        [
            "fit",
            str(model_file),
            "--guide",
            "normal",
            "--steps",
            "5",
            "--num-samples",
            "30",
            "--out",
            str(out),
            "--force",
            "--no-progress",
        ]
    )
    assert code == 0 and (out / "posterior.nc").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.py", "not found"),
        ("{file}:discrete", "discrete latent site"),
        ("{file}:nan_model", "nan"),
        ("{file}:needs_arg", "zero-argument"),
        ("{file}:nothing", "no callable"),
    ],
)
def test_errors_are_one_line_and_leave_nothing(model_file, tmp_path, capsys, spec, message):
    out = tmp_path / "o"
    code = main(
        [
            "fit",
            spec.format(file=model_file),
            "--guide",
            "normal",
            "--steps",
            "5",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and message in err[0].lower(), err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_bad_numbers_exit_nonzero(model_file, tmp_path):
    assert main(["fit", str(model_file), "--steps", "0", "--out", str(tmp_path / "x")]) == 2


def test_load_model_returns_the_function(model_file):
    assert load_model(f"{model_file}:model").__name__ == "model"


def test_output_path_that_is_a_file_is_a_clean_error(model_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(
        [
            "fit",
            str(model_file),
            "--guide",
            "normal",
            "--steps",
            "5",
            "--out",
            str(blocker / "sub"),
            "--no-progress",
        ]
    )
    assert code == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_fit_flow_ais_writes_its_guide_and_weights(model_file, tmp_path):
    out = tmp_path / "ais"
    argv = ["fit", str(model_file), "--guide", "flow-ais", "--steps", "20", "--particles", "4",
            "--num-samples", "200", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["guide"] == "flow-ais" and diag["particles"] == 4
    assert 1.0 <= diag["ess"] <= 200.0
    assert diag["verdict"] in ("good", "acceptable", "unreliable", "unconverged")


def test_zero_particles_exit_nonzero(model_file, tmp_path, capsys):
    argv = ["fit", str(model_file), "--particles", "0", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "--particles must be at least 1" in capsys.readouterr().err


# -- reliability (issue 10): --force, interruption, checks before fitting -----------------------
FAST = ["--guide", "normal", "--steps", "5", "--num-samples", "20", "--no-progress"]


def _fit(model, out, *extra):
    return main(["fit", str(model), *FAST, "--out", str(out), *extra])


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def rmtree_only_under_tmp(tmp_path, monkeypatch):
    """Make a regression fail safely: deleting anything outside tmp_path raises instead."""
    import shutil

    real = shutil.rmtree

    def guarded(path, *args, **kwargs):
        if tmp_path.resolve() not in Path(path).resolve().parents:
            raise AssertionError(f"test guard: refused to delete {path}")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", guarded)


@pytest.mark.parametrize("which", ["cwd", "parent", "model_dir", "home", "root"])
@pytest.mark.usefixtures("rmtree_only_under_tmp")
def test_force_never_removes_protected_folders(tmp_path, monkeypatch, capsys, which):
    work = tmp_path / "work"
    work.mkdir()
    model = work / "m.py"
    model.write_text(MODEL)
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work / "home"))
    (work / "home").mkdir()
    (work / "home" / "keep").write_text("mine")
    out = {"cwd": ".", "parent": "..", "model_dir": str(work), "home": "~", "root": "/"}[which]
    out = str(work / "home") if which == "home" else out
    before = _tree(tmp_path)
    assert _fit("m.py", out, "--force") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyro-relax: error: --out"), err
    assert _tree(tmp_path) == before


def test_force_refuses_a_folder_that_is_not_ours(model_file, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.csv").write_text("1,2,3")
    assert _fit(model_file, out, "--force") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".pyro-relax-run.json" in err[0], err
    assert (out / "precious.csv").read_text() == "1,2,3" and _tree(out) == ["precious.csv"]


def test_force_replaces_an_earlier_output(model_file, tmp_path):
    out = tmp_path / "run"
    assert _fit(model_file, out) == 0
    marker = json.loads((out / ".pyro-relax-run.json").read_text())
    assert marker["command"] == "fit"
    (out / "posterior.nc").write_text("from an older run")  # a file the run wrote: replaced
    assert _fit(model_file, out, "--force") == 0
    assert (out / "posterior.nc").read_bytes()[:4] == b"\x89HDF"
    assert _leftovers(tmp_path) == []


def test_failed_swap_keeps_the_old_output(model_file, tmp_path, monkeypatch):
    from pyro_relax import _outdir

    out = tmp_path / "run"
    assert _fit(model_file, out) == 0
    (out / "old.txt").write_text("old")
    real, calls = _outdir.os.rename, []

    def rename(src, dst):  # the second rename (new folder into place) fails
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk trouble")
        real(src, dst)

    monkeypatch.setattr(_outdir.os, "rename", rename)
    assert _fit(model_file, out, "--force") == 1
    assert (out / "old.txt").read_text() == "old" and (out / "posterior.nc").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_out_naming_a_file_is_refused_before_anything_runs(tmp_path, capsys, force):
    model = tmp_path / "m.py"  # importing it would leave a flag file
    model.write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n" + MODEL)
    out = tmp_path / "results.txt"
    out.write_text("mine")
    assert _fit(model, out, *force) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "existing file" in err[0], err
    assert out.read_text() == "mine" and not (tmp_path / "imported").exists()


def test_too_few_samples_fail_before_fitting(model_file, tmp_path, capsys):
    argv = ["fit", str(model_file), "--steps", "100000", "--num-samples", "3"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert "--num-samples must be at least 4" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_failed_run_removes_only_the_parents_it_made(model_file, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    out = tmp_path / "a" / "b" / "c" / "out"
    assert main(["fit", f"{model_file}:nan_model", *FAST, "--out", str(out)]) == 1
    assert "nan" in capsys.readouterr().err.lower()
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a" / "b").exists()


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_signal_cleans_up_and_exits_with_one_line(model_file, tmp_path, signame, code):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pyro_relax.cli", "fit", str(model_file), "--guide", "normal",
            "--steps", "1000000", "--num-samples", "10", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never made its temporary folder"
            time.sleep(0.05)
        time.sleep(0.5)  # let it get into the fit
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("INFO")]  # Pyro's log
    assert lines == [f"pyro-relax: interrupted ({signame}); nothing written to {out}"], err
    assert _leftovers(tmp_path) == [] and not out.exists()


CORRELATED = textwrap.dedent(
    """
    import pyro, pyro.distributions as dist, torch

    def model():
        # corr 0.9: a mean-field guide is too narrow; its weights know it
        cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
        pyro.sample("x", dist.MultivariateNormal(torch.tensor([1.0, -1.0]), cov))
    """
)


def test_fit_writes_the_corrected_posterior(tmp_path, capsys):
    import arviz as az
    import numpy as np

    from pyro_relax.diagnostics import psis_expectation

    path = tmp_path / "c.py"
    path.write_text(CORRELATED)
    out = tmp_path / "fit"
    code = main(["fit", str(path), "--guide", "normal", "--steps", "300", "--num-samples", "2000",
                 "--out", str(out), "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[-1].startswith("verdict: "), lines[-1]
    data = az.from_netcdf(str(out / "posterior.nc"))
    assert "guide_draws" in data.groups()
    raw = np.asarray(data["guide_draws"]["x"]).reshape(-1, 2)
    log_w = np.asarray(data["guide_draws"]["log_weight"]).reshape(-1)
    post = np.asarray(data["posterior"]["x"]).reshape(-1, 2)
    # the posterior group is the PSIS-resampled sample: its sd matches the weighted sd
    # of the raw draws (resampling noise ~ sd / sqrt(distinct draws) on the mean, a few
    # percent on the sd), not the too-narrow raw sd of the mean-field guide
    weighted_sd = np.sqrt(psis_expectation(raw**2, log_w) - psis_expectation(raw, log_w) ** 2)
    assert np.all(np.abs(post.std(0) / weighted_sd - 1) < 0.1)
    assert np.all(raw.std(0) < 0.8 * post.std(0))  # the mean-field guide is narrower still
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv", index_col=0)
    # the summary is of the corrected posterior (same draws, so equal up to round-off)
    np.testing.assert_allclose(summary["mean"].to_numpy(), post.mean(0), rtol=1e-6)
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["posterior"]["distinct_draws"] <= 2000 and diag["stages"][-1]["stage"]


def test_fit_auto_records_stages_and_ends_with_the_verdict(model_file, tmp_path, capsys):
    out = tmp_path / "auto"
    code = main(["fit", str(model_file), "--steps", "300", "--num-samples", "200",
                 "--out", str(out), "--no-progress"])  # --guide auto is the default
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[-1].startswith("verdict:")
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["guide"] == "auto" and diag["dtype"] == "float64"
    assert [s["stage"] for s in diag["stages"]][:2] == ["pathfinder", "svi (flow)"]
    assert "method" in diag and "khat" in diag


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [("--budget", "0", "--budget"), ("--budget", "-5", "--budget"),
     ("--dtype", "float16", "dtype")],
)
def test_fit_bad_budget_and_dtype(model_file, tmp_path, capsys, option, value, match):
    with pytest.raises(SystemExit) if option == "--dtype" else _no_raise() as _:
        code = main(["fit", str(model_file), option, value, "--out", str(tmp_path / "o")])
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert match in err[-1] and not (tmp_path / "o").exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_density_command_end_to_end_and_bad_input(tmp_path, capsys):
    out = tmp_path / "dens"
    code = main(["density", "sign_symmetric", "--steps", "5", "--points", "200",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_nll"] == metrics["test_nll"]  # finite, not NaN
    assert (out / "model.pt").is_file() and (out / ".pyro-relax-run.json").is_file()
    capsys.readouterr()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n2,3\n")
    for argv in (["density", "sign_symmetric", "--strategy", "foo"],
                 ["density", str(bad)], ["density", "sign_symmetric", "--devices", "64",
                                         "--strategy", "ddp"]):
        code = main([*argv, "--out", str(tmp_path / "never")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and err[0].startswith("pyro-relax: error:"), err
        assert not (tmp_path / "never").exists()
