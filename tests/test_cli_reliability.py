"""The pyro-relax command, round 2 of "nothing silent, nothing lost" (issue 23).

Model files that exit, --force and what it may delete, seeded pre-fit checks,
SIGHUP and stale temporary folders, write errors, option bounds, site checks
before the fit, and the metadata of what a run writes.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyro_relax._outdir import MARKER, check_out
from pyro_relax.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = textwrap.dedent(
    """
    import sys
    import pyro, pyro.distributions as dist, torch

    def model():
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        with pyro.plate("n", 5):
            pyro.sample("y", dist.Normal(0.0, s), obs=torch.tensor([0.1, -0.3, 0.5, 0.2, -0.1]))

    def exits():
        pyro.sample("s", dist.LogNormal(0.0, 0.5))
        sys.exit(0)

    CALLS = []

    def exits_later():  # runs the trial run, exits during the fit
        CALLS.append(1)
        if len(CALLS) > 3:
            sys.exit(0)
        return model()

    def random_check():  # fails or not depending on the prior draw
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(0.0, x), obs=torch.tensor(0.5))

    def slash():
        pyro.sample("a/b", dist.Normal(0.0, 1.0))

    def wishart():
        pyro.sample("W", dist.Wishart(torch.tensor(3.0), torch.eye(2)))
    """
)
FAST = ["--guide", "normal", "--steps", "5", "--num-samples", "30", "--no-progress"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(MODEL)
    return path


def _fit(spec, out, *extra):
    return main(["fit", str(spec), *FAST, "--out", str(out), *extra])


def _one_line(capsys):
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines()
             if not ln.startswith("INFO")]
    assert len(lines) == 1 and lines[0].startswith("pyro-relax: error:"), lines
    return lines[0]


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# -- 3. sys.exit in a model file ----------------------------------------------------------
@pytest.mark.parametrize("name", ["exits", "exits_later"])
def test_sys_exit_in_the_model_is_an_error(model_file, tmp_path, capsys, name):
    out = tmp_path / "out"
    assert _fit(f"{model_file}:{name}", out) == 1
    assert "sys.exit(0)" in _one_line(capsys)
    assert not out.exists() and _hidden(tmp_path) == []


def test_sys_exit_at_import_is_an_error(tmp_path, capsys):
    model = tmp_path / "m.py"
    model.write_text("import sys\nsys.exit(3)\n")
    assert _fit(model, tmp_path / "out") == 1
    line = _one_line(capsys)
    assert "sys.exit(3)" in line and "m.py" in line


# -- 4. --force deletes only what a run wrote ------------------------------------------------
def test_force_keeps_files_the_user_added_to_a_run(model_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(model_file, out) == 0
    capsys.readouterr()
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    assert _fit(model_file, out, "--force") == 1
    assert "notes.txt" in _one_line(capsys)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == before and _hidden(tmp_path) == []


@pytest.mark.parametrize("marker", ["", "{}", '{"generator": "pyro-relax"}',
                                    '{"generator": "pyro-relax", "files": ["summary.csv"]}'])
def test_force_refuses_a_hand_made_marker(model_file, tmp_path, capsys, marker):
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.txt").write_text("1 2 3")
    (data / MARKER).write_text(marker)
    assert _fit(model_file, data, "--force") == 1
    line = _one_line(capsys)
    assert MARKER in line or "data.txt" in line
    assert (data / "data.txt").read_text() == "1 2 3"


def test_force_replaces_a_run_and_the_marker_lists_its_files(model_file, tmp_path):
    out = tmp_path / "run"
    assert _fit(model_file, out) == 0
    record = json.loads((out / MARKER).read_text())
    assert record["generator"] == "pyro-relax"
    assert set(record["files"]) == {p.name for p in out.iterdir()} - {MARKER}
    assert _fit(model_file, out, "--force") == 0


# -- 6. the pre-fit checks are seeded ---------------------------------------------------------
def test_pre_fit_checks_do_not_depend_on_the_global_rng(model_file, tmp_path, capsys):
    import torch

    trial_failures = 0
    for seed in range(2, 6):
        outcomes = set()
        for i in range(3):  # the global RNG as an earlier computation left it
            torch.manual_seed(100 * seed + i)
            out = tmp_path / f"o{seed}-{i}"
            code = main(["fit", f"{model_file}:random_check", *FAST, "--steps", "1",
                         "--out", str(out), "--seed", str(seed)])
            err = capsys.readouterr().err.replace(str(out), "OUT")
            outcomes.add((code, err))
        assert len(outcomes) == 1, outcomes
        trial_failures += "on a trial run: Expected parameter scale" in err
    assert trial_failures > 0


# -- 7. SIGHUP and the temporary folders of killed runs ---------------------------------------
def test_stale_temporary_folder_of_a_dead_run_is_removed(model_file, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / ".out.tmp-stale"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"generator": "pyro-relax", "pid": dead.pid,
                                            "host": os.uname().nodename, "files": None}))
    alive = tmp_path / ".out.tmp-alive"
    alive.mkdir()
    (alive / MARKER).write_text(json.dumps({"generator": "pyro-relax", "pid": os.getpid(),
                                            "host": os.uname().nodename, "files": None}))
    mine = tmp_path / ".out.tmp-mine"  # no marker: not ours, kept
    mine.mkdir()
    assert _fit(model_file, tmp_path / "out") == 0
    assert not stale.exists() and alive.is_dir() and mine.is_dir()


def test_sighup_removes_the_temporary_folder_and_parents(model_file, tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    argv = [sys.executable, "-m", "pyro_relax.cli", "fit", str(model_file), "--guide", "normal",
            "--steps", "1000000", "--num-samples", "10", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not (out.parent.is_dir() and _hidden(out.parent)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never made its temporary folder"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 129, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("INFO")]
    assert lines == [f"pyro-relax: interrupted (SIGHUP); nothing written to {out}"], err
    assert not (tmp_path / "new").exists()


# -- 8. a write error (full disk; a file-size limit stands in) -----------------------------------
def test_write_error_is_one_line_and_keeps_the_old_output(model_file, tmp_path):
    import resource

    out = tmp_path / "run"
    assert _fit(model_file, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))

    argv = [sys.executable, "-m", "pyro_relax.cli", "fit", str(model_file), *FAST,
            "--num-samples", "3000", "--out", str(out), "--force"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, preexec_fn=limit,
                          timeout=300)
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("INFO")]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("pyro-relax: error: could not write"), lines
    assert "File too large" in lines[0] and "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _hidden(tmp_path) == []


# -- 9. options checked first, named --------------------------------------------------------------
@pytest.mark.parametrize("option, value, words", [
    ("--num-samples", "1000000000", "--num-samples must be at most"),
    ("--particles", "1000000000", "--particles must be at most"),
    ("--lr", "1e300", "--lr must be a positive number at most 10, got 1e+300"),
    ("--seed", "-1", "--seed must be at least 0"),
    ("--seed", "100000000000000000000", "--seed must be at most"),
])
def test_huge_and_negative_options_fail_first(model_file, tmp_path, capsys, option, value, words):
    assert main(["fit", str(model_file), *FAST, "--out", str(tmp_path / "o"),
                 f"{option}={value}"]) == 2
    assert words in _one_line(capsys)
    assert not (tmp_path / "o").exists()


def test_draws_that_cannot_fit_in_memory_fail_before_the_fit(tmp_path, capsys, monkeypatch):
    import pyro_relax.infer.runner as runner

    def never(*args, **kwargs):
        raise AssertionError("the fit ran")

    monkeypatch.setattr(runner, "fit_guide", never)
    big = tmp_path / "big.py"
    big.write_text("import pyro, pyro.distributions as dist\n"
                   "def model():\n"
                   "    pyro.sample('x', dist.Normal(0.0, 1.0).expand([100000]).to_event(1))\n")
    argv = ["fit", str(big), *FAST, "--out", str(tmp_path / "o"), "--num-samples", "10000000"]
    assert main(argv) == 1
    line = _one_line(capsys)
    assert "--num-samples: 10000000 draws of 100000 values need about" in line
    assert not (tmp_path / "o").exists()


# -- 10. site checks before the fit ----------------------------------------------------------------
@pytest.mark.parametrize("name, words", [("slash", "site 'a/b'"), ("wishart", "site 'W'")])
def test_sites_the_fit_cannot_handle_fail_before_it(model_file, tmp_path, capsys, name, words,
                                                    monkeypatch):
    import pyro_relax.infer.runner as runner

    def never(*args, **kwargs):
        raise AssertionError("the fit ran")

    monkeypatch.setattr(runner, "fit_guide", never)
    assert _fit(f"{model_file}:{name}", tmp_path / "o") == 1
    assert words in _one_line(capsys)
    assert _hidden(tmp_path) == [] and not (tmp_path / "o").exists()


# -- 11. what a run writes about itself --------------------------------------------------
def test_report_title_names_the_run_and_folder_mode_follows_umask(model_file, tmp_path):
    out = tmp_path / "my-run"
    old = os.umask(0o022)
    try:
        assert _fit(model_file, out) == 0
    finally:
        os.umask(old)
    page = (out / "report.html").read_text()
    title = page.split("<title>")[1].split("</title>")[0]
    assert "my-run" in title and ".tmp-" not in page
    assert out.stat().st_mode & 0o777 == 0o755


def test_diagnostics_json_is_strict(tmp_path):
    import numpy as np
    import torch

    from pyro_relax._results import write_results

    diag = {"final_elbo": float("-inf"), "x": np.float32("nan"), "stages": [{"khat": np.inf}]}
    samples = {"x": torch.randn(40, 1)}
    write_results(tmp_path, samples, diag, log_w=torch.zeros(40))

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    data = json.loads((tmp_path / "diagnostics.json").read_text(), parse_constant=no_constants)
    assert data["final_elbo"] is None and data["x"] is None and data["stages"][0]["khat"] is None


def test_steps_recorded_are_those_run(model_file, tmp_path, monkeypatch):
    import pyro_relax.infer.runner as runner

    real = runner.fit_guide

    def stops_early(*args, **kwargs):  # as early stopping does: fewer ELBO values than steps
        fit = real(*args, **kwargs)
        fit.elbo = fit.elbo[:3]
        return fit

    monkeypatch.setattr(runner, "fit_guide", stops_early)
    assert _fit(model_file, tmp_path / "o") == 0
    diag = json.loads((tmp_path / "o" / "diagnostics.json").read_text())
    assert diag["steps"] == 3 and diag["max_steps"] == 5


# -- 12. wording ---------------------------------------------------------------------------------
def test_a_folder_as_the_model_is_named_a_folder(tmp_path, capsys):
    (tmp_path / "models").mkdir()
    assert _fit(tmp_path / "models", tmp_path / "o") == 1
    line = _one_line(capsys)
    assert "is a folder" in line and "not found" not in line


def test_a_data_files_folder_is_called_so(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("1,2\n")
    with pytest.raises(ValueError, match="the data file's folder"):
        check_out(str(tmp_path), force=True, model_file=str(data), source="data file")


def test_one_distinct_draw_has_an_ess_of_one(tmp_path):
    import torch

    from pyro_relax._results import write_results

    log_w = torch.full((200,), -1e4)
    log_w[0] = 0.0  # all the weight on one draw
    table = write_results(tmp_path, {"x": torch.randn(200, 2)}, {}, log_w=log_w)
    assert (table["ess_bulk"] <= 1).all() and (table["ess_tail"] <= 1).all()


def test_few_draws_are_not_called_psis_corrected(model_file, tmp_path, capsys):
    argv = ["fit", str(model_file), *FAST, "--out", str(tmp_path / "o")]
    assert main([*argv, "--num-samples", "10"]) == 0
    out = capsys.readouterr().out
    assert "PSIS-corrected" not in out and "fewer than 25 draws" in out


def test_progress_is_one_line_per_stage_in_a_log(model_file, tmp_path):
    argv = [sys.executable, "-m", "pyro_relax.cli", "fit", str(model_file), "--guide", "normal",
            "--steps", "300", "--num-samples", "30", "--out", str(tmp_path / "o")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if " steps in " in ln]
    assert len(lines) == 1 and lines[0].startswith("fit"), proc.stderr


def test_line_progress_counts_a_loop_that_breaks(capsys):
    from pyro_relax._progress import progress_bar

    bar = progress_bar(range(100), desc="fit")
    for i in bar:
        if i == 9:
            break
    bar.set_postfix(elbo="-1.0")
    bar.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fit: 10/100 steps in ") and "elbo=-1.0" in err


# -- the first run: pyro-relax demo ----------------------------------------------------------------
def test_demo_table_keeps_the_verdict_whole_within_100_columns():
    from pyro_relax.demo import inference_table

    auto = {"method": "auto (the default)", "seconds": 1234.5, "mu": (-14.37, 13.39),
            "log_tau": (-10.95, 10.91), "ess_per_s": 12345.6, "khat": 0.91,
            "verdict": "unreliable", "advice": "raise --budget", "stage": "ais-40"}
    nuts = {"method": "Pyro NUTS", "seconds": 175.8, "mu": (4.76, 3.33), "log_tau": (1.1, 0.7),
            "ess_per_s": 0.2, "divergences": 6}
    lines = inference_table([auto, nuts]).splitlines()
    assert max(map(len, lines)) <= 100
    assert lines[1].startswith("auto (the default)")
    assert lines[1].endswith("k-hat 0.91 (unreliable)")
    assert lines[2].endswith("MCMC, 6 divergences")
    assert any("raise --budget" in ln for ln in lines) and any("ais-40" in ln for ln in lines)


def test_demo_runs_the_default_method_first(monkeypatch):
    import pyro_relax.infer.runner as runner
    from pyro_relax.demo import inference_demo

    asked = []
    real_fit, real_mcmc = runner.fit_guide, runner.run_mcmc

    def quick_fit(model, guide, **kwargs):
        asked.append(guide)
        return real_fit(model, "normal", steps=5, seed=kwargs["seed"], progress=False)

    def quick_mcmc(model, kernel, **kwargs):
        return real_mcmc(model, kernel, num_samples=20, warmup_steps=10, seed=0, progress=False)

    monkeypatch.setattr(runner, "fit_guide", quick_fit)
    monkeypatch.setattr(runner, "run_mcmc", quick_mcmc)
    rows = inference_demo(seed=0)
    assert asked == ["auto"] and [r["method"] for r in rows] == ["auto (the default)", "Pyro NUTS"]
    assert "verdict" in rows[0] and "khat" in rows[0]


def test_density_prints_no_lightning_notices_or_bars_in_a_log(tmp_path):
    pytest.importorskip("lightning")
    argv = [sys.executable, "-m", "pyro_relax.cli", "density", "two_moons", "--steps", "10",
            "--points", "200", "--out", str(tmp_path / "d")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for noise in ("Tip", "GPU available", "TPU available", "Trainer.fit", "Deprecat", "\r"):
        assert noise not in proc.stdout + proc.stderr, (noise, proc.stderr)
    assert proc.stdout.splitlines()[-1].startswith("wrote ")


@pytest.mark.parametrize("extra, replaced", [(None, True), ("data.txt", False)])
def test_force_and_a_run_of_an_older_version(model_file, tmp_path, capsys, extra, replaced):
    out = tmp_path / "old-run"
    out.mkdir()
    (out / MARKER).write_text('{"command": "fit", "started": "2026-01-01T00:00:00+0000"}')
    (out / "posterior.nc").write_text("old")
    (out / "summary.csv").write_text("old")
    if extra:
        (out / extra).write_text("mine")
    assert _fit(model_file, out, "--force") == (0 if replaced else 1)
    if replaced:
        assert (out / "posterior.nc").read_bytes()[:4] == b"\x89HDF"
    else:
        assert extra in _one_line(capsys) and (out / extra).read_text() == "mine"
        assert (out / "posterior.nc").read_text() == "old"
