"""The pyro-relax command: outputs, and one-line errors that leave nothing behind."""

import json
import textwrap

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
    assert diag["verdict"] in ("good", "acceptable", "unreliable")
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
    assert 1.0 <= diag["ess"] <= 200.0 and diag["verdict"] in ("good", "acceptable", "unreliable")


def test_zero_particles_exit_nonzero(model_file, tmp_path, capsys):
    argv = ["fit", str(model_file), "--particles", "0", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "--particles must be at least 1" in capsys.readouterr().err
