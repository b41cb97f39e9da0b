"""The documentation site: a strict build, every public name in the API reference, tutorials.

The strict ``mkdocs build`` (no tutorial is executed; their figures are committed) runs
once per session into a temporary folder, so the repository is never written to.
``make docs`` is the full build: it runs every tutorial at its ``--quick`` size first.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pyro_relax

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted(p for p in (ROOT / "docs" / "tutorials").glob("*.py")
                   if not p.name.startswith("_"))
needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs/mkdocstrings not installed (pip install -e '.[docs]')",
)


def public_names() -> list[tuple[str, str]]:
    """``(module, name)`` for every name in an ``__all__`` of the package, its
    subpackages and its public top-level modules."""
    modules = ["pyro_relax"] + [
        m.name for m in pkgutil.walk_packages(pyro_relax.__path__, "pyro_relax.")
        if (m.ispkg or m.name.count(".") == 1)
        and not any(part.startswith("_") for part in m.name.split("."))
    ]
    out = []
    for name in modules:
        module = importlib.import_module(name)
        out += [(name, n) for n in getattr(module, "__all__", ())]
    return out


def _resolve(path: str) -> Any:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(path)


def missing_from_reference(ids: set[str], names: list[tuple[str, str]]) -> list[str]:
    """The public names with no anchor in the reference: an anchor counts when it is
    ``module.name`` itself or any documented path to the very same object."""
    by_last: dict[str, list[str]] = {}
    for anchor in ids:
        by_last.setdefault(anchor.rsplit(".", 1)[-1], []).append(anchor)
    missing = []
    for module, name in names:
        if f"{module}.{name}" in ids:
            continue
        obj = getattr(importlib.import_module(module), name)
        same = False
        for anchor in by_last.get(name, []):
            try:
                same = _resolve(anchor) is obj
            except (ImportError, AttributeError):
                same = False
            if same:
                break
        if not same:
            missing.append(f"{module}.{name}")
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                          "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, f"strict mkdocs build failed:\n{res.stdout}\n{res.stderr[-4000:]}"
    warnings = [ln for ln in res.stderr.splitlines() if "WARNING" in ln]
    assert not warnings, warnings
    return out


@needs_mkdocs
def test_api_reference_lists_every_public_name(site: Path) -> None:
    ids: set[str] = set()
    for page in (site / "api").rglob("*.html"):
        ids |= set(re.findall(r'id="(pyro_relax[\w.]*)"', page.read_text(encoding="utf-8")))
    names = public_names()
    assert len(names) > 150  # the package's surface, not an empty scan
    assert missing_from_reference(ids, names) == []


def test_missing_from_reference_detects_a_gap() -> None:
    names = [("pyro_relax.surjections", "AbsSurjection"), ("pyro_relax.infer", "AutoFlowGuide")]
    ids = {"pyro_relax.infer.guides.AutoFlowGuide"}  # the same object, documented elsewhere
    assert missing_from_reference(ids, names) == ["pyro_relax.surjections.AbsSurjection"]
    assert missing_from_reference({"pyro_relax.stochastic.MALA"},
                                  [("pyro_relax.infer", "MALA")]) == ["pyro_relax.infer.MALA"]


@needs_mkdocs
def test_site_has_every_page_and_tutorial_figure(site: Path) -> None:
    for page in ("index.html", "math/index.html", "methods/index.html", "inference/index.html"):
        assert (site / page).is_file(), page
    for script in TUTORIALS:
        page = (site / "tutorials" / script.stem / "index.html").read_text(encoding="utf-8")
        figures = re.findall(r'<img alt="[^"]*" src="\.\./figures/([\w.-]+)"', page)
        assert figures, f"{script.name}: no figure on its page"
        for fig in figures:
            assert (site / "tutorials" / "figures" / fig).is_file(), fig
        assert "--quick" in page and (site / "tutorials" / script.name).is_file()


def _hook() -> Any:
    spec = importlib.util.spec_from_file_location("tutorial_hook",
                                                  ROOT / "docs" / "_hooks" / "tutorials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_mkdocs
def test_percent_to_markdown() -> None:
    source = "# %% [markdown]\n# # Title\n#\n# Some *prose*.\n\n# %%\nx = 1\n\n\n# %%\n"
    page = _hook().percent_to_markdown(source, "t.py")
    assert page.startswith("# Title\n\nSome *prose*.\n\n```python\nx = 1\n```\n\n")
    assert "[Download the script](t.py)" in page
    with pytest.raises(ValueError, match="percent-format"):
        _hook().percent_to_markdown("print(1)\n", "t.py")


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_a_percent_script_whose_figures_exist(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert text.startswith("# %% [markdown]\n# # "), "a tutorial opens with its title cell"
    assert '"--quick"' in text and '"--out"' in text
    shown = re.findall(r"\]\(figures/([\w.-]+)\)", text)
    assert shown, "a tutorial shows at least one figure"
    for fig in shown:
        assert f'"{fig}"' in text, f"{fig} is shown but never saved"
        assert (ROOT / "docs" / "tutorials" / "figures" / fig).is_file(), fig
    compile(text, str(script), "exec")


def test_exactly_five_tutorials() -> None:
    assert [p.stem for p in TUTORIALS] == ["abs_flow", "diffusion_checkerboard", "digits",
                                           "posterior_guide", "snf_double_well"]


@pytest.mark.slow
@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_at_quick_size(script: Path, tmp_path: Path) -> None:
    """Each tutorial runs to the end in its --quick size and writes the figures it shows
    (slow: 10 to 40 s each on one thread; ``make docs`` runs them too)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    shown = re.findall(r"\]\(figures/([\w.-]+)\)", script.read_text(encoding="utf-8"))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(shown)
