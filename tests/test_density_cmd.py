"""``pyro-relax density``: the work behind the subcommand (pyro_relax.density_fit), end to end.

The subcommand is wired into ``pyro_relax.cli`` by its owner; these tests drive
``add_density_parser``/``run_density`` through the same checks and atomic output
(``pyro_relax._outdir``) that ``fit`` uses.
"""

import argparse
import json
import math
import os

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from pyro_relax._outdir import Output, check_out  # noqa: E402
from pyro_relax.density_fit import (  # noqa: E402
    FLOWS,
    add_density_parser,
    build_flow,
    check_density_args,
    load_data,
    load_density_model,
    run_density,
    split_data,
)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="pyro-relax")
    sub = parser.add_subparsers(dest="command", required=True)
    p = add_density_parser(sub)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return parser.parse_args(["density", *argv])


def _command(argv):
    """What the CLI does for ``density``: check, then write aside and swap in."""
    args = _parse(argv)
    target = check_out(args.out, force=args.force)
    check_density_args(args)
    output = Output(target, {"command": "density"}, force=args.force)
    with output.writing() as tmp:
        return args, run_density(args, tmp)


def _test_nll(flow, x, args):
    _, _, test = split_data(x, args.val_fraction, args.test_fraction, args.seed)
    d = flow()
    with torch.no_grad():
        lp = d.log_prob(test) if d.exact else d.log_prob_iw(test, args.particles)
    return float(-lp.mean())


def test_builtin_2d_end_to_end(tmp_path):
    out = tmp_path / "moons"
    args, metrics = _command(["two_moons", "--flow", "spline", "--steps", "40", "--points",
                              "400", "--layers", "2", "--hidden", "16", "--batch-size", "64",
                              "--lr", "5e-3", "--out", str(out)])
    for name in ("model.pt", "metrics.json", "loss.png", "density.png"):
        assert (out / name).is_file(), name
    written = json.loads((out / "metrics.json").read_text())
    assert written["exact"] and written["n_train"] == 320 and written["n_test"] == 40
    for part in ("train", "val", "test"):
        nll = written[f"{part}_nll"]
        assert math.isfinite(nll)
        assert written[f"{part}_bits_per_dim"] == pytest.approx(nll / (2 * math.log(2)))
    # model.pt is the trained (best) flow in one call: it reproduces the test NLL written
    flow = load_density_model(out)
    x = load_data("two_moons", n=400, seed=0)
    assert _test_nll(flow, x, args) == pytest.approx(written["test_nll"], abs=1e-4)
    untrained = build_flow("spline", 2, num_layers=2, hidden=16)
    assert _test_nll(untrained, x, args) > written["test_nll"] + 0.1  # it learned something
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_csv_with_header_and_a_bound_flow(tmp_path):
    rng = np.random.default_rng(0)
    data = np.c_[rng.normal(size=300), rng.normal(size=300) * 0.5 + 1.0]
    csv = tmp_path / "points.csv"
    csv.write_text("a,b\n" + "\n".join(f"{u:.6f},{v:.6f}" for u, v in data) + "\n")
    out = tmp_path / "run"
    _, metrics = _command([str(csv), "--flow", "augment", "--steps", "20", "--layers", "1",
                           "--hidden", "8", "--particles", "8", "--batch-size", "32",
                           "--out", str(out)])
    assert not metrics["exact"] and metrics["columns"] == 2 and metrics["n_train"] == 240
    assert (out / "density.png").is_file()
    assert math.isfinite(metrics["test_nll"])
    assert load_density_model(out / "model.pt").log_prob(torch.zeros(3, 2)).shape == (3,)


def test_early_stopping_on_validation_nll(tmp_path):
    _, metrics = _command(["rings", "--steps", "3000", "--points", "200", "--layers", "1",
                           "--hidden", "8", "--batch-size", "32", "--lr", "0.05",
                           "--patience", "1", "--out", str(tmp_path / "r")])
    assert metrics["stopped_early"] and metrics["steps"] < 3000


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD = {
    "strategy": (lambda t: ["two_moons", "--strategy", "horovod"],
                 "expected --strategy auto or ddp, got 'horovod'"),
    "devices": (lambda t: ["two_moons", "--devices", str((os.cpu_count() or 1) + 1),
                           "--strategy", "ddp"], "expected at most .* CPU processes"),
    "devices_auto": (lambda t: ["two_moons", "--devices", "2"], "needs --strategy ddp"),
    "gpu": (lambda t: ["two_moons", "--device", "cuda:0", "--devices",
                       str(torch.cuda.device_count() + 1), "--strategy", "ddp"],
            "GPU devices"),
    "nan": (lambda t: [_write(t, "n.csv", "1,2\n3,nan\n5,6\n")],
            r"expected finite values in n.csv; point 2, column 2 is nan"),
    "columns": (lambda t: [_write(t, "c.csv", "1,2\n3,4\n"), "--columns", "3"],
                "expected 3 columns .* got 2"),
    "ragged": (lambda t: [_write(t, "r.csv", "x,y\n1,2\n3,4,5\n")],
               "expected 2 columns on every row of r.csv .* line 3 has 3"),
    "text": (lambda t: [_write(t, "s.csv", "1,2\n3,abc\n")],
             "expected a number in every cell of s.csv; line 2, column 2 holds 'abc'"),
    "empty": (lambda t: [_write(t, "e.csv", "a,b\n")], "expected rows of numbers in e.csv"),
    "suffix": (lambda t: [_write(t, "d.txt", "1,2\n")], "expected DATA a .npy or .csv file"),
    "missing": (lambda t: [str(t / "nothere.csv")], "nothere.csv does not exist"),
    "name": (lambda t: ["moons2"], "expected DATA a .npy or .csv file or one of"),
    "flow_dim": (lambda t: [_write(t, "one.csv", "\n".join(map(str, range(30)))), "--flow",
                            "max"], "--flow max needs data with at least 2 columns, got 1"),
    "dequantize": (lambda t: ["two_moons", "--flow", "dequantize"], "needs integers 0, 1"),
    "lr": (lambda t: ["two_moons", "--lr", "-1"], "expected --lr a positive number"),
    "fraction": (lambda t: ["two_moons", "--val-fraction", "1.5"],
                 "expected --val-fraction strictly between 0 and 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, case):
    make, message = BAD[case]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message) as info:
        _command([*make(tmp_path), "--out", str(out), "--steps", "2"])
    assert "\n" not in str(info.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_npy_inputs(tmp_path):
    np.save(tmp_path / "ok.npy", np.arange(20.0))
    assert load_data(str(tmp_path / "ok.npy")).shape == (20, 1)
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="expected a numeric array in s.npy, got dtype <U1"):
        load_data(str(tmp_path / "s.npy"))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"expected a 2-D array .* got shape \(2, 2, 2\)"):
        load_data(str(tmp_path / "cube.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="expected junk.npy a numeric .npy array"):
        load_data(str(tmp_path / "junk.npy"))


@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_every_flow_choice_builds_and_has_a_finite_log_prob(kind):
    torch.manual_seed(0)
    x = torch.randint(0, 4, (6, 3)).float() if "dequantize" in kind else torch.randn(6, 3)
    flow = build_flow(kind, 3, num_layers=1, hidden=8, num_bins=4)
    d = flow()
    lp = d.log_prob(x) if d.exact else d.log_prob_iw(x, 4)
    assert lp.shape == (6,) and bool(torch.isfinite(lp).all())
    assert d.exact == (kind in ("spline", "affine", "abs", "sort", "max"))


@pytest.mark.slow
def test_two_processes_through_the_command(tmp_path):
    """--devices 2 --strategy ddp (gloo, spawned workers): the command's process keeps its
    output folder and gets the trained flow back."""
    out = tmp_path / "ddp"
    args, metrics = _command(["eight_gaussians", "--steps", "20", "--points", "400",
                              "--layers", "1", "--hidden", "16", "--batch-size", "64",
                              "--devices", "2", "--strategy", "ddp", "--out", str(out)])
    assert metrics["devices"] == 2 and metrics["steps"] == 20
    flow = load_density_model(out)
    x = load_data("eight_gaussians", n=400, seed=0)
    assert _test_nll(flow, x, args) == pytest.approx(metrics["test_nll"], abs=1e-4)


def test_a_diverging_fit_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FloatingPointError, match="NLL of the trained flow is nan; lower --lr"):
        _command(["two_moons", "--flow", "affine", "--steps", "200", "--points", "400",
                  "--lr", "1e6", "--out", str(out)])
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["spline", "affine"])
def test_one_column_gaussian_is_fitted(tmp_path, kind):
    """Issue 23: on N(0, 1) data the one-column stack gave samples of mean -1.27, sd 2.25 and a
    test NLL of 4.6 to 5.1 nats (four randomly started splines); --flow affine was ignored."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "g.npy", rng.normal(size=(2000, 1)))
    out = tmp_path / kind
    args, metrics = _command([str(tmp_path / "g.npy"), "--flow", kind, "--steps", "100",
                              "--layers", "2", "--hidden", "8", "--out", str(out)])
    entropy = 0.5 * math.log(2 * math.pi * math.e)  # 1.419 nats, the NLL of the true law
    # 200 test points: the NLL's Monte Carlo sd is about 0.05 nats
    assert abs(metrics["test_nll"] - entropy) < 0.2
    flow = load_density_model(out)
    torch.manual_seed(0)
    s = flow.sample((4000,))
    assert abs(float(s.mean())) < 0.15 and abs(float(s.std()) - 1.0) < 0.15
    layers = [type(layer.wrapped).__name__ for layer in flow.layers]
    assert layers == (["Spline", "Spline", "ActNorm"] if kind == "spline" else ["ActNorm"])


@pytest.mark.parametrize("kind", ["dequantize", "vdequantize"])
def test_dequantized_2d_integers_write_their_plot(tmp_path, kind):
    """Issue 23: the density plot evaluated the integer model on a continuous grid, which the
    dequantization layer refuses, and the whole run was thrown away after training."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "counts.npy", rng.integers(0, 6, size=(300, 2)).astype(float))
    out = tmp_path / kind
    _, metrics = _command([str(tmp_path / "counts.npy"), "--flow", kind, "--steps", "3",
                           "--layers", "1", "--hidden", "8", "--particles", "2",
                           "--out", str(out)])
    assert (out / "density.png").is_file() and math.isfinite(metrics["test_nll"])


def test_a_one_row_file_is_told_how_many_rows_it_needs():
    """Issue 23: a one-row file said 'got -1 of 1 points'."""
    import pytest
    import torch

    with pytest.raises(ValueError, match=r"got 0 of 1 point \(1 go to validation and 1 to test"):
        split_data(torch.zeros(1, 2), 0.1, 0.1, 0)
