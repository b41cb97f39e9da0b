"""Smoke tests of ``benchmarks/density.py`` and ``benchmarks/_common.py`` at tiny sizes.

They check that every section of the density benchmark runs end to end, that
the JSON it writes has the promised structure, that parameter counts are
matched, and that bad options are refused; not the benchmark's numbers.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import density  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Tiny sizes: every section runs a couple of optimizer steps on a few points.
TINY = {
    "n-train": 64, "n-test": 32, "steps": 2, "batch-size": 16, "hidden": 4, "surj-hidden": 4,
    "num-particles": 2, "set-steps": 2, "digits-steps": 2, "digits-layers": 1,
    "digits-hidden": 8, "digits-noise-hidden": 4, "digits-batch": 16, "timing-rounds": 2,
    "timing-inner": 1, "timing-warmup": 1, "profile-calls": 1, "workers": 1,
}


def tiny_argv(**extra: object) -> list[str]:
    opts = {**TINY, **extra}
    return ["--quick"] + [a for k, v in opts.items() for a in (f"--{k}", str(v))]


@pytest.mark.parametrize("device", DEVICES)
def test_density_benchmark_runs_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    out = tmp_path / "density.json"
    argv = tiny_argv(device=device) + ["--datasets", "two_moons,sign_symmetric", "--json", str(out)]
    assert density.main(argv) == 0
    printed = capsys.readouterr().out
    for title in ("Parameter counts", "2-D test NLL", "Exchangeable sets", "Digits 8x8",
                  "pyro-relax vs zuko", "Training step time", "ratio ours/zuko"):
        assert title in printed
    res = json.loads(out.read_text())
    assert res["environment"]["torch"] == torch.__version__
    # toy: every model on every requested data set, finite NLLs, matched parameter counts
    rows = res["toy"]["rows"]
    assert {(r["dataset"], r["model"]) for r in rows} == {
        (d, m) for d in ("two_moons", "sign_symmetric") for m in density.TOY_MODELS
    }
    assert all(math.isfinite(r["test_nll"]) for r in rows)
    for r in rows:
        # the counts trained are those printed (matching itself is checked at default sizes
        # below: at hidden=4 even the narrowest augmented flow is larger than the spline flow)
        assert r["params"] == res["toy"]["params"][r["model"]]["params"], r
    # sets and digits
    assert [r["model"] for r in res["sets"]["rows"]] == ["spline", "sort"]
    assert res["sets"]["rows"][0]["params"] == res["sets"]["rows"][1]["params"]
    digits = res["digits"]["rows"]
    assert [r["dequantization"] for r in digits] == ["uniform", "variational"]
    for r in digits:
        # the NLL of discrete data is positive and so is the bound above it (after 2 steps
        # it may still exceed log2 17, the uniform model's, so only the sign is checked)
        assert r["test_bpd_iw"] > 0 and math.isfinite(r["test_bpd_bound"])
    # zuko: NLL rows, timing rows, the ratio and its profile when above 1
    z = res["zuko"]
    assert [r["dataset"] for r in z["nll"]] == ["two_moons", "sign_symmetric"]
    assert all(math.isclose(r["diff"], r["ours_nll"] - r["zuko_nll"]) for r in z["nll"])
    t = z["timing"]
    assert t["ratio_ours_over_zuko"] > 0 and len(t["ratio_samples"]) == TINY["timing-rounds"]
    assert {r["flow"] for r in t["rows"]} >= {"pyro-relax Flow", "zuko NSF",
                                               "raw Pyro TransformedDistribution"}
    assert (t["profile"] is not None) == (t["ratio_ours_over_zuko"] > 1.0)
    if t["profile"] is not None:
        assert math.isclose(sum(t["profile"]["groups"].values()), 1.0, rel_tol=1e-6)


def test_toy_plain_nll_is_reused_by_the_zuko_section() -> None:
    cfg = density.config_from_args(density.build_parser().parse_args(
        tiny_argv() + ["--datasets", "rings", "--models", "spline"]))
    toy = {"rows": [{"dataset": "rings", "model": "spline", "test_nll": 123.0}]}
    out = density.run_zuko(cfg, toy)
    assert out["nll"][0]["ours_nll"] == 123.0


def test_default_sizes_match_parameter_counts_within_5_percent() -> None:
    cfg = density.DEFAULT
    builders = density.toy_builders(cfg)
    target = density.count_parameters(density._flow(builders["spline"], cfg.hidden))
    for name, builder in builders.items():
        _, n = density.match_hidden(builder, target)
        assert abs(n / target - 1) < 0.05, (name, n, target)
    target = density.count_parameters(
        density._flow(density._digits_builder(cfg, False), cfg.digits_hidden))
    _, n = density.match_hidden(density._digits_builder(cfg, True), target)
    assert abs(n / target - 1) < 0.05


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "0"],
        ["--datasets", "no_such_set"],
        ["--sections", "toy,nope"],
        ["--models", "abs,sort"],  # the reference spline flow is required
        ["--lr", "-1"],
        ["--workers", "0"],
        ["--device", "gpu0"],
        ["--json", "/no/such/folder/out.json"],
    ],
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert density.main(["--quick", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_interleaved_timing_and_ratios() -> None:
    calls = {"a": 0, "b": 0}

    def a() -> None:
        calls["a"] += 1

    def b() -> None:
        calls["b"] += 1
        sum(range(20_000))  # clearly slower than a

    t = _common.interleaved_timing({"a": a, "b": b}, rounds=4, inner=3, warmup=2)
    assert calls == {"a": 2 + 4 * 3, "b": 2 + 4 * 3}
    assert len(t["a"]) == len(t["b"]) == 4
    assert _common.median(t["b"]) > _common.median(t["a"])
    with pytest.raises(ValueError, match="rounds"):
        _common.interleaved_timing({"a": a}, rounds=0)


def test_profile_breakdown_attributes_builtins_to_callers() -> None:
    def slow_sorting() -> None:
        # a comprehension (own time of slow_sorting) and the built-in sorted() it calls
        sorted([(i * 7919) % 100_003 for i in range(200_000)])

    out = _common.profile_breakdown(slow_sorting, 2, {"mine": [Path(__file__).name]})
    assert math.isclose(sum(out["groups"].values()), 1.0, rel_tol=1e-9)
    assert out["groups"]["mine"] > 0.5
    # the built-in sorted() has no file; called from this file's slow_sorting, it counts as mine
    builtin = [e for e in out["top"] if "builtins.sorted" in e["function"]]
    assert len(builtin) == 1 and builtin[0]["group"] == "mine"


def test_format_table_and_write_json(tmp_path: Path) -> None:
    cols = [_common.Column("name", "name"), _common.Column("v", "value", ".2f")]
    text = _common.format_table([{"name": "a", "v": 1.0}, {"name": "bb", "v": None}], cols)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "value"] and lines[2].endswith("1.00")
    assert lines[3].endswith("-")
    with pytest.raises(ValueError, match="column"):
        _common.format_table([], [])
    path = _common.write_json(tmp_path / "r.json", {"x": [1.0, float("inf")],
                                                   "t": torch.tensor([1, 2])})
    data = json.loads(path.read_text())
    assert data["x"] == [1.0, None] and data["t"] == [1, 2] and "environment" in data
    with pytest.raises(FileNotFoundError):
        _common.write_json(tmp_path / "missing" / "r.json", {})


def test_parallel_map_keeps_order_in_worker_processes() -> None:
    jobs = [(17, 5), (9, 4), (100, 7)]
    # threads=None: the workers do not import torch, which keeps this test fast
    try:
        got = _common.parallel_map(divmod, jobs, workers=2, threads=None)
        again = _common.parallel_map(pow, [(2, 5), (3, 2)], workers=2, threads=None)
    finally:
        _common.shutdown_pools()
    assert got == [divmod(*j) for j in jobs] and again == [32, 9]
    with pytest.raises(ValueError, match="workers"):
        _common.parallel_map(divmod, jobs, workers=0)


# ---------------------------------------------------------------- inference benchmark

import _inference_goal  # noqa: E402
import _inference_nuts  # noqa: E402
import inference  # noqa: E402


def test_inference_quick_goal_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    argv = ["--quick", "--goal", "--only", "eight_schools_noncentered", "--methods",
            "auto,iaf,nuts-dense", "--workers", "1", "--json", str(out)]
    rows = inference.main(argv)
    assert [(r["target"], r["method"]) for r in rows] == [
        ("eight_schools_noncentered", m) for m in ("auto", "iaf", "nuts-dense")]
    for r in rows:
        assert "error" not in r, r
        assert r["seconds"] > 0 and 1 <= r["ess"] and math.isfinite(r["mean_err"])
        assert math.isclose(r["ess_per_s"], r["ess"] / r["seconds"]) and r["cpu_seconds"] > 0
    auto, iaf, nuts = rows
    assert auto["auto_method"] and auto["stages"][0]["stage"] == "pathfinder"
    # weighted draws: PSIS ESS at most the draws, k-hat finite; the chain: at most its draws
    assert iaf["ess"] <= inference.QUICK.draws and math.isfinite(iaf["khat"])
    assert nuts["draws"] <= inference.QUICK.mcmc_samples and "khat" not in nuts
    data = json.loads(out.read_text())
    assert [r["method"] for r in data["rows"]] == ["auto", "iaf", "nuts-dense"]
    assert data["goal13"][0].startswith("eight_schools_noncentered: auto mean err")
    assert any(line.startswith("diagnostic lies") for line in data["goal13"])
    # merging the file with itself doubles the rows (two "seeds") under one budget
    merged = tmp_path / "merged.json"
    assert len(inference.main(["--merge", str(out), str(out), "--json", str(merged)])) == 6
    assert json.loads(merged.read_text())["budget"] == data["budget"]
    with pytest.raises(SystemExit, match="overwrite"):
        inference.main(argv)


def _row(target: str, method: str, **values: float) -> dict[str, object]:
    return {"target": target, "method": method, "seed": 0, **values}


def test_inference_goal13_lines_and_diagnostic_lies() -> None:
    good = {"mean_err": 0.1, "sd_err": 0.1, "khat": 0.3}
    rows = [
        _row("arK", "auto", ess_per_s=40.0, **good),
        _row("arK", "nuts-dense", ess_per_s=2.0, mean_err=0.05, sd_err=0.05),
        _row("kidiq", "auto", ess_per_s=10.0, mean_err=0.1, sd_err=0.3, khat=0.5),
        _row("kidiq", "nuts-dense", ess_per_s=5.0, mean_err=0.05, sd_err=0.05),
        _row("kidiq", "iaf", ess_per_s=90.0, mean_err=0.45, sd_err=0.5, khat=0.6),  # a lie
        _row("kidiq", "mvn", ess_per_s=90.0, mean_err=0.45, sd_err=0.5, khat=0.9),  # honest
    ]
    lines = _inference_goal.goal13_report(rows, ("arK", "kidiq"))
    assert "ratio 20.0x" in lines[0] and "(accurate)" in lines[0]
    assert "ratio 2.0x" in lines[1] and "NOT accurate" in lines[1]
    assert lines[2].startswith("auto accurate") and "1/2" in lines[2] and "not met" in lines[2]
    assert "on 1/2; median ratio 11.0x" in lines[3] and lines[3].endswith("not met")
    assert lines[4].endswith(": 1") and "kidiq iaf" in lines[5] and len(lines) == 6
    # all accurate and fast on every posterior asked for: met
    rows = rows[:2] + [_row("kidiq", "auto", ess_per_s=60.0, **good), rows[3]]
    lines = _inference_goal.goal13_report(rows, ("arK", "kidiq"))
    assert lines[2].endswith(": met") and lines[3].endswith(": met")
    # a method that failed is reported, never counted as accurate
    failed = [_row("arK", "auto", error="FloatingPointError: x")]
    assert "auto failed" in _inference_goal.goal13_report(failed, ("arK",))[0]


def test_inference_nuts_cap_and_bad_options() -> None:
    import pyro
    import pyro.distributions as dist

    def model() -> None:
        pyro.sample("s", dist.LogNormal(0.0, 1.0))

    run = _inference_nuts.run_nuts(model, 5, 0, seed=0, cap=1e-9)
    assert run.capped and run.draws == 1 and run.samples["s"].shape == (1, 1)
    assert bool((run.samples["s"] > 0).all())  # constrained back to the support
    assert run.samples["s"].dtype == torch.float64
    with pytest.raises(TimeoutError, match="warmup"):
        _inference_nuts.run_nuts(model, 5, 3, seed=0, cap=1e-9)
    with pytest.raises(ValueError, match="num_samples"):
        _inference_nuts.run_nuts(model, 0, 3, seed=0)
    with pytest.raises(ValueError, match="cap"):
        _inference_nuts.run_nuts(model, 5, 3, seed=0, cap=0)
    for argv in (["--methods", "nope"], ["--goal", "--only", "gmm40"], ["--workers", "0"],
                 ["--merge", "/no/such/file.json"], ["--json", "/no/such/folder/x.json"]):
        with pytest.raises(SystemExit):
            inference.main(["--quick", *argv])


def test_peers_protocol_runs_and_summarizes(tmp_path, capsys):
    pytest.importorskip("zuko")
    out = tmp_path / "peers.json"
    argv = ["--peers", "--peers-steps", "2", "--peers-n-test", "64", "--workers", "1",
            "--peers-datasets", "rings,two_moons", "--json", str(out)]
    assert density.main(argv) == 0
    result = json.loads(out.read_text())
    models = {(r["dataset"], r["model"]) for r in result["rows"]}
    # ours and zuko everywhere; abs and sort only where the data has their symmetry
    assert {("rings", m) for m in ("pyro-relax", "zuko NSF", "abs", "sort", "augment")} <= models
    assert ("two_moons", "abs") not in models and ("two_moons", "augment") in models
    for r in result["rows"]:
        assert r["cpu_s_per_100"] > 0 and math.isfinite(r["true_nll"])
        assert r["gap"] == pytest.approx(r["test_nll"] - r["true_nll"])
    summary = {s["model"]: s for s in result["summary"]}
    assert summary["zuko NSF"]["median_time_vs_zuko"] == 1.0
    assert "time / zuko" in capsys.readouterr().out
    assert density.main(["--peers", "--peers-datasets", "moons"]) == 2
    assert density.main(["--peers", "--peers-lr", "0"]) == 2
