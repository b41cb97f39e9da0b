"""MkDocs hook: every tutorial script ``docs/tutorials/NAME.py`` becomes the page ``NAME.md``.

The tutorials are plain Python scripts in the percent format (jupytext's
``# %%`` cells). Markdown cells (``# %% [markdown]``, each line commented out)
become the page's prose; code cells become ``python`` code blocks; the script
itself is published beside the page for download. Scripts whose name starts
with ``_`` are helpers, not tutorials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

TUTORIALS = "tutorials"


def percent_to_markdown(source: str, script_name: str) -> str:
    """Turn a percent-format script into a Markdown page.

    Arguments:
        source: The script's text.
        script_name: The file name linked as the download at the end of the page.

    Returns:
        The page's Markdown.

    Raises:
        ValueError: If the script has no ``# %%`` cell.
    """
    cells: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    if not cells:
        raise ValueError(f"{script_name}: expected a percent-format script (# %% cells), got none")
    out: list[str] = []
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            continue
        if kind == "markdown":
            out.append("\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines))
        else:
            out.append("```python\n" + "\n".join(lines) + "\n```")
    out.append(f"[Download the script]({script_name}) and run it with `python {script_name} "
               "--quick`; the figures above are from the `--quick` run of the docs build.")
    return "\n\n".join(out) + "\n"


def on_files(files: Files, config: Any) -> Files:
    """Add one generated page per tutorial script."""
    folder = Path(config["docs_dir"]) / TUTORIALS
    for script in sorted(folder.glob("*.py")):
        if script.name.startswith("_"):
            continue
        page = percent_to_markdown(script.read_text(encoding="utf-8"), script.name)
        files.append(File.generated(config, f"{TUTORIALS}/{script.stem}.md", content=page))
    return files
