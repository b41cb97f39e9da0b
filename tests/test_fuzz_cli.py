"""Fuzzing the pyro-relax command: bad model files and bad options fail cleanly.

Every failing run must exit non-zero with exactly one line on stderr that starts
with ``pyro-relax: error:`` (argparse's own usage errors, exit 2 with its usage
text, are accepted as they are), print no traceback, and leave the folders
exactly as they were. The default run draws a few cases; ``RELAX_SLOW=1`` or
``-m slow`` draws many more.
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
}
# option fault -> extra arguments; later ones override the cheap defaults
COUNTS = ["--steps", "--num-samples", "--particles", "--chains", "--warmup", "--guide-steps"]
OUTS = ["file", "file_sub", "cwd", "parent", "model_dir", "home", "root", "not_ours", "empty"]
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
    if name is not None:
        (work / name).write_text(text)
    spec = (name or "absent.py") + (f":{attr}" if attr else "")
    (root / "results.txt").write_text("a file")
    (root / "data").mkdir()
    (root / "data" / "mine.csv").write_text("1,2")
    (root / "empty").mkdir()
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
