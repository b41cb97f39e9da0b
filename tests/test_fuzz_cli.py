"""Fuzzing the pyro-relax command: bad model files and bad options fail cleanly.

Every failing run must exit non-zero with exactly one line on stderr that starts
with ``pyro-relax: error:`` (argparse's own usage errors, exit 2 with its usage
text, are accepted as they are), print no traceback, and leave the folders
exactly as they were. The default run draws a few cases; ``RELAX_SLOW=1`` or
``-m slow`` draws many more. The cases include model files that exit, sites the
fit cannot transform or write, hand-made markers and huge options; a signal
(SIGINT, SIGTERM, SIGHUP) at every stage of a run and a full disk at every file
are tried one by one.
"""

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pyro_relax.cli import main

SLOW = os.environ.get("RELAX_SLOW") == "1"

GOOD = textwrap.dedent(
    """
    import pyro, pyro.distributions as dist, torch

    def model():
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        pyro.sample("y", dist.Normal(0.0, s), obs=torch.tensor(0.3))
    """
)
# model kind -> (file name, file text, name after ':' or None)
MODELS = {
    "good": ("m.py", GOOD, None),
    "syntax": ("m.py", "def model(:\n    pass\n", None),
    "no_model": ("m.py", "x = 1\n", None),
    "other_name": ("m.py", GOOD, "nothing_here"),
    "required_args": ("m.py", GOOD.replace("def model():", "def model(x, y):"), None),
    "raises": ("m.py", GOOD + "\ndef bad():\n    raise KeyError('boom')\n", "bad"),
    "divides": ("m.py", GOOD + "\ndef bad():\n    return 1 / 0\n", "bad"),
    "import_fails": ("m.py", "import no_such_module_for_pyro_relax\n" + GOOD, None),
    "discrete": (
        "m.py",
        GOOD + "\ndef bad():\n    pyro.sample('k', dist.Bernoulli(0.5))\n",
        "bad",
    ),
    "nan": (
        "m.py",
        GOOD + "\ndef bad():\n    s = pyro.sample('s', dist.Normal(0.0, 1.0))\n"
        "    pyro.factor('f', s * float('nan'))\n",
        "bad",
    ),
    "no_latent": ("m.py", GOOD + "\ndef bad():\n    pass\n", "bad"),
    "not_py": ("m.txt", GOOD, None),
    "missing": (None, None, None),
    "folder": ("sub", None, None),  # a folder named as the model
    "exits_at_import": ("m.py", "import sys\nsys.exit(3)\n" + GOOD, None),
    "exits_in_model": ("m.py", GOOD + "\ndef bad():\n    import sys\n    sys.exit(0)\n", "bad"),
    "slash_site": (
        "m.py", GOOD + "\ndef bad():\n    pyro.sample('a/b', dist.Normal(0.0, 1.0))\n", "bad"
    ),
    "wishart": (
        "m.py",
        GOOD + "\ndef bad():\n"
        "    pyro.sample('W', dist.Wishart(torch.tensor(3.0), torch.eye(2)))\n",
        "bad",
    ),
}
# option fault -> extra arguments; later ones override the cheap defaults
COUNTS = ["--steps", "--num-samples", "--particles", "--chains", "--warmup", "--guide-steps"]
OUTS = ["file", "file_sub", "cwd", "parent", "model_dir", "home", "root", "not_ours", "empty",
        "empty_marker", "marker_lies"]
HUGE = [["--num-samples", "1000000000"], ["--particles", "1000000000"], ["--lr", "1e300"],
        ["--lr", "1e400"], ["--seed", "-1"], ["--seed", "100000000000000000000"],
        ["--steps", "1000000000000"], ["--chains", "100000"]]
FAULTS = {
    "count": st.sampled_from(COUNTS).flatmap(  # --warmup 0 is allowed
        lambda o: st.integers(-3, -1 if o == "--warmup" else 0).map(lambda v: [o, str(v)])
    ),
    "few_samples": st.integers(1, 3).map(lambda n: ["--num-samples", str(n)]),
    "lr": st.sampled_from(["0", "-1", "nan", "inf"]).map(lambda v: [f"--lr={v}"]),
    "guide": st.sampled_from(["gauss", "", "FLOW"]).map(lambda g: ["--guide", g]),
    "kernel": st.sampled_from(["hmc2", "", "NUTS"]).map(lambda k: ["--kernel", k]),
    "device": st.sampled_from(["gpu", "cuda:x", "cuda:99", "cpu:0", "tpu", ""]).map(
        lambda d: ["--device", d]
    ),
    "not_a_number": st.sampled_from(COUNTS).map(lambda o: [o, "many"]),
    "huge": st.sampled_from(HUGE),
    "out": st.sampled_from(OUTS),
}


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, list[str], str | None, bool]:
    """A command, a model kind, option faults, an output fault and whether to pass --force."""
    command = draw(st.sampled_from(["fit", "mcmc"]))
    kind = draw(st.sampled_from(sorted(MODELS)))
    names = draw(st.lists(st.sampled_from(sorted(set(FAULTS) - {"out"})), max_size=2))
    extra = [arg for name in names for arg in draw(FAULTS[name])]
    out = draw(st.none() | FAULTS["out"])
    assume(kind != "good" or names or out not in (None, "empty"))
    return command, kind, extra, out, draw(st.booleans())


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _run_case(case, base: Path, monkeypatch, capsys) -> None:
    command, kind, extra, out_fault, force = case
    root = Path(tempfile.mkdtemp(dir=base))
    work, home = root / "work", root / "home"
    work.mkdir()
    home.mkdir()
    (home / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    name, text, attr = MODELS[kind]
    if text is not None:
        (work / name).write_text(text)
    elif name is not None:
        (work / name).mkdir()
    spec = (name or "absent.py") + (f":{attr}" if attr else "")
    (root / "results.txt").write_text("a file")
    (root / "data").mkdir()
    (root / "data" / "mine.csv").write_text("1,2")
    (root / "empty").mkdir()
    for folder, marker in (("empty_marker", ""), ("marker_lies", '{"generator": "pyro-relax", '
                                                                 '"files": ["summary.csv"]}')):
        (root / folder).mkdir()
        (root / folder / "data.txt").write_text("1 2 3")
        (root / folder / ".pyro-relax-run.json").write_text(marker)
    out = {
        None: str(root / "new" / "out"),
        "file": str(root / "results.txt"),
        "file_sub": str(root / "results.txt" / "sub"),
        "cwd": ".",
        "parent": "..",
        "model_dir": str(work),
        "home": str(home),
        "root": "/",
        "not_ours": str(root / "data"),
        "empty": str(root / "empty"),
        "empty_marker": str(root / "empty_marker"),
        "marker_lies": str(root / "marker_lies"),
    }[out_fault]
    cheap = ["--steps", "2", "--num-samples", "4", "--particles", "1"]
    if command == "mcmc":
        cheap = ["--kernel", "mala", "--num-samples", "4", "--warmup", "2", "--guide-steps", "2"]
    argv = [command, spec, *cheap, "--no-progress", "--out", out, *extra]
    argv += ["--force"] if force else []
    before = _tree(root)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
        err = capsys.readouterr().err
        assert code == 2 and "usage:" in err and "Traceback" not in err, (argv, err)
    else:
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("INFO")]  # Pyro log
        assert code != 0, argv
        assert len(lines) == 1 and lines[0].startswith("pyro-relax: error:"), (argv, err)
        assert "Traceback" not in err, (argv, err)
    assert _tree(root) == before, argv
    shutil.rmtree(root)


@pytest.fixture
def rmtree_only_under_tmp(tmp_path, monkeypatch):
    """Make a regression fail safely: deleting anything outside tmp_path raises instead."""
    real = shutil.rmtree

    def guarded(path, *args, **kwargs):
        if tmp_path.resolve() not in Path(path).resolve().parents:
            raise AssertionError(f"test guard: refused to delete {path}")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", guarded)


FUZZ = settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.usefixtures("rmtree_only_under_tmp")
@pytest.mark.parametrize("kind", sorted(set(MODELS) - {"good"}))
def test_every_bad_model_fails_cleanly(kind, tmp_path, monkeypatch, capsys):
    _run_case(("fit", kind, [], None, False), tmp_path, monkeypatch, capsys)


@pytest.mark.usefixtures("rmtree_only_under_tmp")
@pytest.mark.parametrize("out", OUTS)
@pytest.mark.parametrize("force", [False, True])
def test_every_bad_out_fails_cleanly(out, force, tmp_path, monkeypatch, capsys):
    if out == "empty" and force:
        pytest.skip("--force may reuse an empty folder: that run succeeds")
    _run_case(("fit", "good", [], out, force), tmp_path, monkeypatch, capsys)


@pytest.mark.usefixtures("rmtree_only_under_tmp")
@settings(FUZZ, max_examples=300 if SLOW else 15)
@given(case=cases())
def test_fuzz_cli_fails_cleanly(case, tmp_path, monkeypatch, capsys):
    _run_case(case, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
@pytest.mark.usefixtures("rmtree_only_under_tmp")
@settings(FUZZ, max_examples=300)
@given(case=cases())
def test_fuzz_cli_fails_cleanly_many(case, tmp_path, monkeypatch, capsys):
    _run_case(case, tmp_path, monkeypatch, capsys)


# -- a signal at every stage, and write errors (issue 23) ---------------------------------------
def _stage_targets():
    import pyro_relax._outdir as outdir
    import pyro_relax._results as results
    import pyro_relax.cli as cli
    import pyro_relax.diagnostics.report as report
    import pyro_relax.infer.runner as runner

    return {  # stage -> (object, attribute) whose call the signal arrives in
        "check_out": (cli, "check_out"),
        "import": (cli, "import_file"),
        "trial_run": (cli, "trial_run"),
        "open": (outdir.tempfile, "mkdtemp"),  # signals held: the folder is recorded
        "fit": (runner, "fit_guide"),
        "draws": (runner, "guide_draws"),
        "write": (results, "netcdf_bytes"),
        "report": (report, "write_report"),
        "commit": (outdir.os, "rename"),  # held until the swap is done
    }


STAGES = ["check_out", "import", "trial_run", "open", "fit", "draws", "write", "report", "commit"]


@pytest.mark.usefixtures("rmtree_only_under_tmp")
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("stage", STAGES)
def test_a_signal_at_every_stage_leaves_nothing_half_done(stage, signame, tmp_path, monkeypatch,
                                                          capsys):
    import signal

    owner, attr = _stage_targets()[stage]
    real = getattr(owner, attr)
    signum = getattr(signal, signame)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signum)  # the handler runs at once, in this call
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, interrupted)
    (tmp_path / "m.py").write_text(GOOD)
    out = tmp_path / "new" / "out"
    before = _tree(tmp_path)
    code = main(["fit", str(tmp_path / "m.py"), "--guide", "normal", "--steps", "2",
                 "--num-samples", "30", "--no-progress", "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("INFO")]
    assert code == 128 + signum, err
    if stage == "commit":  # held until the swap is done: the output is complete
        assert err == [f"pyro-relax: interrupted ({signame}) after {out} was written"]
        assert (out / "posterior.nc").is_file()
        assert [p for p in out.parent.iterdir() if p.name.startswith(".")] == []
    else:
        assert err == [f"pyro-relax: interrupted ({signame}); nothing written to {out}"], err
        assert _tree(tmp_path) == before


@pytest.mark.usefixtures("rmtree_only_under_tmp")
@pytest.mark.parametrize("what", ["marker", "netcdf", "json", "plot"])
@pytest.mark.parametrize("errno_name", ["ENOSPC", "EFBIG"])
def test_a_write_error_is_one_line_and_keeps_the_old_output(what, errno_name, tmp_path,
                                                            monkeypatch, capsys):
    import errno

    import pyro_relax.diagnostics as diagnostics

    (tmp_path / "m.py").write_text(GOOD)
    out = tmp_path / "out"
    argv = ["fit", str(tmp_path / "m.py"), "--guide", "normal", "--steps", "2",
            "--num-samples", "30", "--no-progress", "--out", str(out), "--force"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    code = getattr(errno, errno_name)

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    write_text, write_bytes = Path.write_text, Path.write_bytes
    if what == "marker":
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full() if
                            self.name == ".pyro-relax-run.json" else write_text(self, *a, **k))
    elif what == "json":
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full() if
                            self.name == "diagnostics.json" else write_text(self, *a, **k))
    elif what == "netcdf":
        monkeypatch.setattr(Path, "write_bytes", lambda self, *a, **k: full() if
                            self.name == "posterior.nc" else write_bytes(self, *a, **k))
    else:
        monkeypatch.setattr(diagnostics, "plot_pairs", full)
    assert main(argv) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("INFO")]
    assert len(err) == 1 and err[0].startswith("pyro-relax: error: could not write"), err
    assert os.strerror(code) in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
