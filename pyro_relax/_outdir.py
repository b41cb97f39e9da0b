"""Output folders of the ``pyro-relax`` command: checked first, written aside, swapped in last.

Used only by :mod:`pyro_relax.cli`, the one place that writes files. A run

1. checks ``--out`` before anything runs (:func:`check_out`): it must not be a
   file, the current folder or one of its parents, the model's folder or one
   containing it, the home folder or ``/``; an existing folder needs ``--force``,
   and ``--force`` replaces only an empty folder or one marked as ours;
2. writes into a hidden temporary folder beside the target (:meth:`Output.open`),
   creating missing parents and remembering which ones it made;
3. swaps the result in (:meth:`Output.commit`): the old folder is renamed aside,
   the new one renamed into place, and only then the old one deleted, with
   SIGINT/SIGTERM held back meanwhile; or, on failure, removes the temporary
   folder and the parents it made (:meth:`Output.discard`).

:func:`write_results` writes what ``fit`` and ``mcmc`` put into that temporary folder.
"""

from __future__ import annotations

__all__ = ["MARKER", "Interrupted", "Output", "check_out", "signals_raise", "write_results"]

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pandas import DataFrame
    from torch import Tensor

MARKER = ".pyro-relax-run.json"
_SIGNALS = tuple(
    s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None
)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``written`` says whether the output was already in place."""

    def __init__(self, signum: int, written: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.written = written


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_interrupted) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM instead of acting on them; yields the list of those that came."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in _SIGNALS}
    try:
        yield pending
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def check_out(out: str, *, force: bool, model_file: str | None = None) -> Path:
    """Check that ``out`` may receive a run's results; return its absolute path.

    Nothing is created or changed.

    Arguments:
        out: the ``--out`` folder as the user typed it.
        force: whether ``--force`` was given.
        model_file: the model file, whose folder (and every folder holding it) is protected.

    Returns:
        The absolute, symlink-resolved path of the output folder.

    Raises:
        FileExistsError: if ``out`` is a file, or exists and may not be replaced.
        NotADirectoryError: if a parent of ``out`` is a file.
        ValueError: if ``out`` is empty or names a protected folder.
    """
    if not isinstance(out, str) or not out.strip():
        raise ValueError(f"expected --out to name a folder, got {out!r}")
    given = Path(out)
    if given.is_symlink():
        raise FileExistsError(f"--out {out} is a symbolic link; name a real folder")
    target = given.resolve()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"--out {out} is an existing file, expected a folder")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"--out {out}: {parent} is a file, not a folder")
            break
    # (folder, what it is, whether the folders holding it are protected too)
    protected = [
        (Path.cwd().resolve(), "the current folder or one holding it", True),
        (Path.home().resolve(), "the home folder", False),
        (Path(target.anchor), "the root folder", False),
    ]
    if model_file is not None:
        model_dir = Path(model_file).resolve().parent
        protected.append((model_dir, "the model file's folder or one holding it", True))
    for folder, what, holders in protected:
        if folder == target or holders and target in folder.parents:
            raise ValueError(f"--out {out} is {what}; name a new folder for the results")
    if target.is_dir():
        if not force:
            raise FileExistsError(f"output folder {out} exists; pass --force to replace it")
        if any(target.iterdir()) and not (target / MARKER).is_file():
            raise FileExistsError(
                f"--force replaces only empty folders or earlier pyro-relax outputs; {out} is "
                f"not empty and has no {MARKER}, so it is left alone"
            )
    return target


class Output:
    """One run's output folder: a temporary folder beside ``target`` until :meth:`commit`.

    Arguments:
        target: the checked, absolute output folder (from :func:`check_out`).
        record: what to write into the marker file (command, options).
        force: whether an existing empty or marked folder may be replaced.
    """

    def __init__(self, target: Path, record: dict[str, Any], *, force: bool = False) -> None:
        if not isinstance(target, Path) or not target.is_absolute():
            raise TypeError(f"Output: expected an absolute Path, got {target!r}")
        self.target = target
        self.force = force
        self.record = dict(record)
        self.tmp: Path | None = None
        self.made: list[Path] = []  # parents this run created, outermost first
        self.written = False

    def open(self) -> Path:
        """Create the missing parents and the temporary folder (with its marker); return it."""
        with _signals_held() as pending:  # so every folder made is also recorded
            for p in [p for p in reversed(self.target.parents) if not p.exists()]:
                p.mkdir()
                self.made.append(p)
            prefix = f".{self.target.name}.tmp-"
            self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.target.parent))
        if pending:
            raise Interrupted(pending[0])
        record = {**self.record, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (self.tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        return self.tmp

    def commit(self) -> None:
        """Swap the temporary folder into place; an old output is moved aside, then deleted."""
        if self.tmp is None:
            raise RuntimeError("Output.commit: open() was not called")
        with _signals_held() as pending:
            aside = None
            if self.target.exists() or self.target.is_symlink():
                self._check_replaceable()
                prefix = f".{self.target.name}.old-"
                holder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.target.parent))
                aside = holder / self.target.name
                os.rename(self.target, aside)
            try:
                os.rename(self.tmp, self.target)
            except BaseException:
                if aside is not None:
                    os.rename(aside, self.target)
                    shutil.rmtree(aside.parent, ignore_errors=True)
                raise
            self.tmp, self.written, self.made = None, True, []
            if aside is not None:
                shutil.rmtree(aside.parent, ignore_errors=True)
        if pending:
            raise Interrupted(pending[0], written=True)

    def _check_replaceable(self) -> None:
        # check_out ran before the run; look again, something may have appeared since
        t = self.target
        if t.is_symlink() or not t.is_dir():
            raise FileExistsError(f"{t} appeared during the run and is not a folder; left alone")
        if not self.force:
            raise FileExistsError(f"{t} appeared during the run; pass --force to replace it")
        if any(t.iterdir()) and not (t / MARKER).is_file():
            raise FileExistsError(f"{t} is not empty and has no {MARKER}; left alone")

    def discard(self) -> None:
        """Remove the temporary folder and the parents this run created (if still empty)."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        for p in reversed(self.made):
            try:
                p.rmdir()
            except OSError:
                break  # something else now lives there: keep it and everything above
        self.made = []

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """Open, yield the temporary folder, commit on success and discard on any failure."""
        try:
            yield self.open()
            self.commit()
        except BaseException:
            self.discard()
            raise


# -- what a run writes -----------------------------------------------------------
def write_results(
    tmp: Path,
    samples: dict[str, Any],
    diagnostics: dict[str, Any],
    *,
    chains: int = 1,
    log_w: Tensor | None = None,
    elbo: list[float] | None = None,
    mcmc: object = None,
    seed: int = 0,
) -> DataFrame:
    """Write posterior.nc, summary.csv, diagnostics.json, the plots and report.html into ``tmp``.

    Returns the summary table (a ``pandas.DataFrame``).

    With log weights (a guide's draws), the ``posterior`` group and the summary
    hold the PSIS-corrected posterior (resampled, equally weighted) and the raw
    draws with their weights go into the group ``guide_draws``.
    """
    import numpy as np

    from pyro_relax.diagnostics import (
        plot_elbo,
        plot_khat,
        plot_pairs,
        summarize,
        to_inference_data,
    )
    from pyro_relax.diagnostics.report import write_report
    from pyro_relax.diagnostics.resample import corrected_inference_data

    flat = {
        k: v.detach().cpu().reshape((-1,) + tuple(v.shape[2 if mcmc else 1 :])).numpy()
        for k, v in samples.items()
    }
    lw = None if log_w is None else log_w.detach().cpu().double().numpy()
    if lw is not None and lw.shape[0] >= 25:
        idata, info = corrected_inference_data(flat, lw, elbo_trace=elbo, seed=seed)
        diagnostics["posterior"] = {"corrected_by": "PSIS resampling", **info}
        shown = {k: np.asarray(idata["posterior"][k]).reshape((-1,) + v.shape[1:])
                 for k, v in flat.items()}
    else:
        idata = to_inference_data(flat, log_weights=lw, elbo_trace=elbo, chains=chains)
        shown = flat
    idata.to_netcdf(str(tmp / "posterior.nc"))
    table = summarize(idata)
    table.to_csv(tmp / "summary.csv")
    diagnostics["min_ess_bulk"] = float(np.nanmin(table["ess_bulk"]))
    if chains > 1:
        diagnostics["max_r_hat"] = float(np.nanmax(table["r_hat"]))
    (tmp / "diagnostics.json").write_text(json.dumps(diagnostics, indent=2, default=_json) + "\n")
    plot_pairs(shown, path=tmp / "pairs.png")
    if elbo:
        plot_elbo(elbo, path=tmp / "elbo.png")
    if "khat" in diagnostics:
        plot_khat({diagnostics.get("guide", "guide"): diagnostics["khat"]}, path=tmp / "khat.png")
    write_report(tmp, diagnostics)  # report.html: verdict, summary, diagnostics, plots
    return table


def _json(value: object) -> float | str:
    """JSON for what ``json`` cannot write itself (numpy scalars, dtypes, ...)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
