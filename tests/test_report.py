"""report.html: content, guards, and a real browser loading it (headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pyro_relax.diagnostics import plot_elbo, plot_khat, plot_pairs
from pyro_relax.diagnostics.report import REPORT_NAME, report_verdict, write_report


def _run_folder(tmp_path: Path, diagnostics: dict, *, figures: bool = True) -> Path:
    """A folder laid out like a ``pyro-relax fit`` run (small real plots, a real summary)."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "summary.csv").write_text(
        ",mean,sd,ess_bulk,r_hat\nmu,0.512,1.031,812.4,1.001\nlog_tau<b>,-0.25,0.9,640.0,1.002\n"
    )
    (folder / "diagnostics.json").write_text(json.dumps(diagnostics))
    if figures:
        rng = np.random.default_rng(0)
        plot_elbo(-np.exp(-np.arange(60) / 20.0), path=folder / "elbo.png")
        plot_pairs({"x": rng.normal(size=(200, 2))}, path=folder / "pairs.png")
        plot_khat({"auto": 0.31}, path=folder / "khat.png")
    return folder


FIT_DIAG = {"guide": "auto", "khat": 0.31, "verdict": "good", "final_elbo": -12.5,
            "stages": [{"stage": "pathfinder", "seconds": 0.4, "khat": 0.9},
                       {"stage": "flow", "seconds": 3.1, "khat": 0.31}]}


def test_report_has_verdict_first_then_sections_and_embeds_images(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, FIT_DIAG)
    page = write_report(folder, None).read_text()
    order = [page.index(s) for s in ('id="verdict"', "<h2>Summary", "<h2>Diagnostics",
                                     "<h2>ELBO trace", "<h2>Pair plot", "<h2>PSIS k-hat")]
    assert order == sorted(order)
    assert "k-hat 0.31 (good)" in page
    assert page.count("data:image/png;base64,") == 3
    # self-contained: no file, http or script reference anywhere
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "<script" not in page
    assert "log_tau&lt;b&gt;" in page and "log_tau<b>" not in page  # escaped
    assert "pathfinder" in page and "812.400" in page


def test_report_notes_missing_figures_and_reads_mcmc_runs(tmp_path: Path) -> None:
    diag = {"kernel": "nuts", "max_r_hat": 1.002, "min_ess_bulk": 640.0, "seconds": 2.0}
    folder = _run_folder(tmp_path, diag, figures=False)
    page = write_report(folder, diag).read_text()
    assert "elbo.png was not written" in page and "data:image" not in page
    assert "max R-hat 1.002" in page and 'data-level="mcmc"' in page


@pytest.mark.parametrize(
    ("diag", "level"),
    [({"khat": 0.6, "verdict": "acceptable"}, "acceptable"),
     ({"khat": 1.3, "verdict": "unreliable", "advice": "use NUTS"}, "unreliable"),
     ({"khat": 0.2}, "good"),
     ({"guide": "flow"}, "unknown"),
     ({"kernel": "mala", "max_r_hat": 1.2}, "unreliable")],
)
def test_report_verdict_levels(diag: dict, level: str) -> None:
    got, text = report_verdict(diag)
    assert got == level
    if "advice" in diag:
        assert diag["advice"] in text


def test_report_guards(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="existing run folder"):
        write_report(tmp_path / "nope", {})
    with pytest.raises(ValueError, match="diagnostics.json"):
        write_report(tmp_path, None)
    with pytest.raises(TypeError, match="expected a dict"):
        report_verdict([0.3])  # type: ignore[arg-type]
    (tmp_path / "diagnostics.json").write_text("[1, 2]")
    with pytest.raises(TypeError, match="got list"):
        write_report(tmp_path, None)
    write_report(tmp_path, FIT_DIAG)
    with pytest.raises(ValueError, match="overwrite=True"):
        write_report(tmp_path, FIT_DIAG)
    assert write_report(tmp_path, {"khat": 0.9}, overwrite=True).read_text().count("0.90") >= 1
    # a file of the user's with that name is never replaced
    (tmp_path / REPORT_NAME).write_text("<html>my notes</html>")
    with pytest.raises(ValueError, match="not a pyro-relax report"):
        write_report(tmp_path, FIT_DIAG, overwrite=True)
    assert (tmp_path / REPORT_NAME).read_text() == "<html>my notes</html>"
    assert not list(tmp_path.glob(".report.html.tmp-*"))


def _chromium() -> str | None:
    """Debian's ``chromium`` (or RELAX_CHROMIUM, a path to a Chromium binary or wrapper)."""
    env = os.environ.get("RELAX_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browse(browser: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--window-size=1000,900", *extra, page.resolve().as_uri()]
    env = {**os.environ, "HOME": str(profile)}  # nothing written outside the temp folder
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (apt-get install "
                    "chromium; .ci/run installs it) and RELAX_CHROMIUM not set")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    from matplotlib.image import imread

    folder = _run_folder(tmp_path, {**FIT_DIAG, "khat": 1.2, "verdict": "unreliable",
                                    "advice": "run pyro-relax mcmc --kernel nuts"})
    page = write_report(folder, None)
    browser, profile = _chromium(), tmp_path / "profile"
    dom = _browse(browser, page, profile, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="verdict"' in dom.stdout and "k-hat 1.20 (unreliable)" in dom.stdout
    # any console message (error, uncaught exception, failed load) fails the test
    noisy = [ln for ln in dom.stderr.splitlines()
             if re.search(r"CONSOLE|Uncaught|Failed to load|ERR_FILE_NOT_FOUND", ln)]
    assert not noisy, noisy
    shot = tmp_path / "shot.png"
    res = _browse(browser, page, profile, f"--screenshot={shot}")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    # the verdict banner (red for unreliable, #b3261e) is painted in the first screenful
    red = np.array([0xB3, 0x26, 0x1E]) / 255.0
    top = pixels[: pixels.shape[0] // 4]
    share = (np.abs(top - red).max(axis=-1) < 0.03).mean()
    assert share > 0.02, f"verdict banner colour covers {share:.3%} of the top quarter"
