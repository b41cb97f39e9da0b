"""One self-contained HTML page for a run folder: verdict, summary, diagnostics, plots.

:func:`write_report` reads what a ``pyro-relax fit`` or ``mcmc`` run leaves in
its folder (``summary.csv``, ``diagnostics.json``, ``pairs.png``, ``elbo.png``,
``khat.png``) and writes ``report.html`` beside them. The page needs nothing
else: the figures are embedded as ``data:`` URIs, the style sheet is inline and
there is no script, so it opens the same from a mail attachment as from disk.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyro_relax.diagnostics.psis import khat_verdict

__all__ = ["REPORT_NAME", "report_verdict", "write_report"]

REPORT_NAME = "report.html"
_GENERATOR = "pyro-relax report"
_FIGURES = (
    ("elbo.png", "ELBO trace", "The ELBO at each optimization step (fit runs only)"),
    ("pairs.png", "Pair plot", "The first components of the posterior draws, two by two"),
    ("khat.png", "PSIS k-hat", "The Pareto k-hat of the importance weights (fit runs only)"),
)
_COLORS = {
    "good": "#1b7f3b",
    "acceptable": "#b86e00",
    "unreliable": "#b3261e",
    "mcmc": "#1f5fa8",
    "unknown": "#555555",
}
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
#verdict{color:#fff;padding:1rem 1.25rem;border-radius:.4rem;font-size:1.2rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
table.kv td,table.kv th{text-align:left}
.wide{overflow-x:auto}
img{max-width:100%;border:1px solid #ddd}
.note{color:#666;font-style:italic}
"""


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def report_verdict(diagnostics: Mapping[str, Any]) -> tuple[str, str]:
    """Say in one line how far a run's answer can be trusted.

    Arguments:
        diagnostics: A run's ``diagnostics.json`` as a dict. A fit run carries
            ``khat``/``verdict`` (and ``advice`` when unreliable); an MCMC run
            carries ``kernel`` and, with several chains, ``max_r_hat``.

    Returns:
        ``(level, text)``: ``level`` is one of ``"good"``, ``"acceptable"``,
        ``"unreliable"``, ``"mcmc"`` or ``"unknown"``; ``text`` is the sentence shown.

    Raises:
        TypeError: If ``diagnostics`` is not a mapping.

    Example:
        >>> report_verdict({"khat": 0.31, "verdict": "good"})
        ('good', 'k-hat 0.31 (good): the importance-corrected posterior can be trusted')
    """
    if not isinstance(diagnostics, Mapping):
        raise TypeError(f"report_verdict: expected a dict, got {type(diagnostics).__name__}")
    khat, verdict = _finite(diagnostics.get("khat")), diagnostics.get("verdict")
    advice = str(diagnostics.get("advice") or "").strip()
    if verdict == "mcmc" or (khat is None and "kernel" in diagnostics):
        rhat = _finite(diagnostics.get("max_r_hat"))
        ess = _finite(diagnostics.get("min_ess_bulk"))
        parts = ["MCMC draws (no k-hat)"]
        if rhat is not None:
            parts.append(f"max R-hat {rhat:.3f}")
        if ess is not None:
            parts.append(f"min bulk ESS {ess:.0f}")
        if rhat is not None and rhat > 1.01:
            return "unreliable", ", ".join(parts) + ": chains disagree (R-hat > 1.01); run longer"
        text = ", ".join(parts)
        return "mcmc", text + (f"; {advice}" if advice else "")
    if verdict in ("unconverged", "too few draws", "noisy weights"):
        reason = str(diagnostics.get("verdict_reason") or "").strip()
        return "unreliable", "; ".join(p for p in (f"{verdict}: {reason}", advice) if p)
    if khat is None:
        return "unknown", "unknown: no k-hat (fewer than 25 draws); raise --num-samples"
    level = verdict if verdict in ("good", "acceptable", "unreliable") else khat_verdict(khat)
    text = f"k-hat {khat:.2f} ({level})"
    if level == "good":
        return level, text + ": the importance-corrected posterior can be trusted"
    if level == "acceptable":
        return level, text + ": usable, but check the estimates you rely on"
    return level, text + ": unreliable; " + (
        advice or "try --guide auto, a larger --budget or pyro-relax mcmc --kernel nuts"
    )


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    attr = f' class="{cls}"' if cls else ""
    return (
        f'<div class="wide"><table{attr}><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _summary_html(path: Path) -> str:
    if not path.is_file():
        return '<p class="note">summary.csv was not written by this run.</p>'
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return '<p class="note">summary.csv is empty.</p>'
    header, body = rows[0], rows[1:]
    header[0] = header[0] or "parameter"

    def cell(text: str) -> str:
        try:
            return f"{float(text):.3f}"
        except ValueError:
            return text

    return _table(header, [[r[0]] + [cell(c) for c in r[1:]] for r in body if r])


def _diagnostics_html(diagnostics: Mapping[str, Any]) -> str:
    scalars = []
    for key, value in diagnostics.items():
        if key == "stages":
            continue
        if isinstance(value, Mapping):  # one level of nesting becomes dotted names
            scalars += [[f"{key}.{k}", _fmt(v)] for k, v in value.items()]
        else:
            scalars.append([str(key), _fmt(value)])
    out = _table(["name", "value"], scalars, cls="kv")
    stages = diagnostics.get("stages")
    if isinstance(stages, list) and stages and all(isinstance(s, Mapping) for s in stages):
        keys: list[str] = []
        for s in stages:
            keys += [str(k) for k in s if str(k) not in keys]
        rows = [[_fmt(s.get(k, "")) for k in keys] for s in stages]
        out += "<h3>Stages</h3>" + _table(keys, rows)
    return out


def _figure_html(folder: Path, name: str, title: str, what: str) -> str:
    path = folder / name
    if not path.is_file():
        return (
            f'<h2>{title}</h2><p class="note">{name} was not written by this run '
            f"({what[0].lower() + what[1:]}).</p>"
        )
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<h2>{title}</h2><p>{html.escape(what)}.</p>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
    )


def write_report(
    folder: str | os.PathLike[str],
    diagnostics: Mapping[str, Any] | None = None,
    *,
    title: str | None = None,
    overwrite: bool = False,
    name: str | None = None,
) -> Path:
    """Write ``report.html`` into a run folder from the files the run wrote there.

    Arguments:
        folder: The run's output folder (``summary.csv``, ``diagnostics.json`` and
            the PNGs ``pairs.png``, ``elbo.png``, ``khat.png``; missing ones are noted
            on the page, not an error).
        diagnostics: The run's diagnostics dict; ``None`` reads ``diagnostics.json``.
        title: The page title; by default from the guide or kernel and ``name``.
        overwrite: Replace a ``report.html`` that is already there. Even then only a
            page this function wrote is replaced; any other file is refused.
        name: The run's name in the title (default: the folder's name; a run
            written into a temporary folder passes its output folder's name).

    Returns:
        The path of the page written.

    Raises:
        TypeError: If ``diagnostics`` is not a mapping or ``name`` not a string.
        ValueError: If ``folder`` is not a folder, if ``diagnostics`` is ``None`` and
            ``diagnostics.json`` is missing or not a JSON object, or if ``report.html``
            exists and ``overwrite`` is false or the file is not a report.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_report(folder, {"guide": "auto", "khat": 0.2, "verdict": "good"}).name
        'report.html'
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"write_report: expected an existing run folder, got {str(folder)!r}")
    if diagnostics is None:
        source = folder / "diagnostics.json"
        if not source.is_file():
            raise ValueError(f"write_report: expected {source} (or a diagnostics dict), not found")
        try:
            diagnostics = json.loads(source.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"write_report: {source} is not valid JSON ({err})") from err
    if not isinstance(diagnostics, Mapping):
        raise TypeError(
            f"write_report: expected diagnostics as a dict, got {type(diagnostics).__name__}"
        )
    target = folder / REPORT_NAME
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise ValueError(f"write_report: {target} exists; pass overwrite=True to replace it")
        head = target.read_bytes()[:400].decode("utf-8", "replace") if target.is_file() else ""
        if _GENERATOR not in head:
            raise ValueError(
                f"write_report: {target} exists and is not a pyro-relax report; "
                "refusing to replace it"
            )
    method = diagnostics.get("guide") or diagnostics.get("kernel") or "run"
    if name is not None and not isinstance(name, str):
        raise TypeError(f"write_report: expected name a str, got {type(name).__name__}")
    title = title or f"pyro-relax {method}: {name or folder.resolve().name}"
    level, text = report_verdict(diagnostics)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{_GENERATOR}">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f'<div id="verdict" data-level="{level}" style="background:{_COLORS[level]}">'
        f"<strong>Verdict:</strong> {html.escape(text)}</div>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>",
        _summary_html(folder / "summary.csv"),
        "<h2>Diagnostics</h2>",
        _diagnostics_html(diagnostics),
        *(_figure_html(folder, *fig) for fig in _FIGURES),
        "</body></html>",
    ]
    tmp = folder / f".{REPORT_NAME}.tmp-{os.getpid()}"
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target
