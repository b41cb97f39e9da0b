"""Output folders of the ``pyro-relax`` command: checked first, written aside, swapped in last.

Used only by :mod:`pyro_relax.cli`, the one place that writes files. A run

1. checks ``--out`` before anything runs (:func:`check_out`): it must not be a
   file, the current folder or one of its parents, the model's folder or one
   containing it, the home folder or ``/``; an existing folder needs ``--force``,
   and ``--force`` replaces only an empty folder or an earlier run's: its marker
   :data:`MARKER` (JSON written by the run, listing the files it wrote) must
   account for every file in it, so a file the user added keeps the folder;
2. writes into a hidden temporary folder beside the target (:meth:`Output.open`),
   with the mode the umask gives, creating missing parents and remembering which
   ones it made; temporary folders of runs on this machine whose process is gone
   (SIGKILL) are removed first;
3. swaps the result in (:meth:`Output.commit`): the old folder is renamed aside,
   the new one renamed into place, and only then the old one deleted, with
   SIGINT/SIGTERM/SIGHUP held back meanwhile; or, on failure (an error, a signal,
   a full disk), removes the temporary folder and the parents it made
   (:meth:`Output.discard`).

What ``fit`` and ``mcmc`` put into that temporary folder is written by
:func:`pyro_relax._results.write_results`.
"""

from __future__ import annotations

__all__ = ["MARKER", "Interrupted", "Output", "check_out", "signals_raise"]

import errno
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARKER = ".pyro-relax-run.json"
_GENERATOR = "pyro-relax"  # the marker's "generator"; its "files" lists what the run wrote
# SIGHUP: the terminal was closed
_SIGNALS = tuple(
    getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)
)
# what runs of older versions (whose marker has no file list) wrote
_OLD_OUTPUTS = frozenset({
    "posterior.nc", "summary.csv", "diagnostics.json", "pairs.png", "elbo.png", "khat.png",
    "report.html", "model.pt", "metrics.json", "density.png", "loss.png",
})
_OLD_LIGHTNING = r"lightning(/metrics\.csv|/checkpoints(/[\w.-]+\.ckpt)?)?"
_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived; ``written`` says whether the output was in place."""

    def __init__(self, signum: int, written: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.written = written


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted` inside the block (main thread)."""
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
    """Record SIGINT/SIGTERM/SIGHUP instead of acting on them; yields those that arrived."""
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


def check_out(
    out: str, *, force: bool, model_file: str | None = None, source: str = "model file"
) -> Path:
    """Check that ``out`` may receive a run's results; return its absolute path.

    Nothing is created or changed.

    Arguments:
        out: the ``--out`` folder as the user typed it.
        force: whether ``--force`` was given.
        model_file: the model file, whose folder (and every folder holding it) is protected.
        source: what ``model_file`` is, for the messages (``"model file"``, ``"data file"``).

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
        protected.append((model_dir, f"the {source}'s folder or one holding it", True))
    for folder, what, holders in protected:
        if folder == target or holders and target in folder.parents:
            raise ValueError(f"--out {out} is {what}; name a new folder for the results")
    if target.is_dir():
        if not force:
            raise FileExistsError(f"output folder {out} exists; pass --force to replace it")
        why = _not_replaceable(target)
        if why is not None:
            raise FileExistsError(
                f"--force replaces only empty folders or earlier pyro-relax outputs; {out} {why}, "
                "so it is left alone"
            )
    return target


def _not_replaceable(folder: Path) -> str | None:
    """Why ``folder`` may not be replaced, or None: it is empty, or holds only a run's files.

    The marker must be one a run wrote (JSON naming the generator and the files it
    wrote); any other file in the folder is the user's, and keeps the folder.
    """
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
    if not found:
        return None
    if MARKER not in found:
        return f"is not empty and has no {MARKER}"
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        record = None
    files = record.get("files") if isinstance(record, dict) else None
    if isinstance(record, dict) and "generator" not in record and record.get("command") in (
        "fit", "mcmc", "density"
    ):  # an older pyro-relax's marker lists no files: only the names a run writes count
        files = [f for f in found if f in _OLD_OUTPUTS or re.fullmatch(_OLD_LIGHTNING, f)]
    elif (record or {}).get("generator") != _GENERATOR or not isinstance(files, list):
        return f"has a {MARKER} that does not list the files a pyro-relax run wrote"
    foreign = sorted(found - {MARKER} - {str(f) for f in files})
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"holds files the earlier run did not write ({', '.join(foreign[:3])}{more})"
    return None


def _umask() -> int:
    old = os.umask(0o077)
    os.umask(old)
    return old


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: keep its folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


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
        """Create the missing parents and the temporary folder (with its marker); return it.

        Temporary folders of earlier runs on this machine whose process is gone
        (killed by SIGKILL, say) are removed first. The folder gets the mode the
        umask gives (``mkdtemp`` alone would make it 0700).
        """
        self._remove_stale()
        with _signals_held() as pending:  # so every folder made is also recorded
            for p in [p for p in reversed(self.target.parents) if not p.exists()]:
                p.mkdir()
                self.made.append(p)
            prefix = f".{self.target.name}.tmp-"
            self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.target.parent))
        if pending:
            raise Interrupted(pending[0])
        os.chmod(self.tmp, 0o777 & ~_umask())
        self.record.update(generator=_GENERATOR, pid=os.getpid(), host=socket.gethostname(),
                           started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self._write_marker(files=None)
        return self.tmp

    def _write_marker(self, files: list[str] | None) -> None:
        assert self.tmp is not None
        record = {**self.record, "files": files}
        (self.tmp / MARKER).write_text(json.dumps(record, indent=2, default=str) + "\n")

    def _remove_stale(self) -> None:
        parent = self.target.parent
        if not parent.is_dir():
            return
        for old in parent.glob(f".{self.target.name}.tmp-*"):
            try:
                record = json.loads((old / MARKER).read_text())
            except (OSError, ValueError):
                continue
            if (isinstance(record, dict) and record.get("generator") == _GENERATOR
                    and record.get("host") == socket.gethostname()
                    and not _pid_alive(record.get("pid"))):
                shutil.rmtree(old, ignore_errors=True)

    def commit(self) -> None:
        """Swap the temporary folder into place; an old output is moved aside, then deleted."""
        if self.tmp is None:
            raise RuntimeError("Output.commit: open() was not called")
        self._write_marker(sorted(p.relative_to(self.tmp).as_posix() for p in self.tmp.rglob("*")
                                  if p.name != MARKER))
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
        why = _not_replaceable(t)
        if why is not None:
            raise FileExistsError(f"{t} {why}; left alone")

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
        """Open, yield the temporary folder, commit on success and discard on any failure.

        A full disk (or file-size limit) becomes one ``OSError`` naming the folder,
        whose old content is left as it was.
        """
        try:
            yield self.open()
            self.commit()
        except OSError as err:
            self.discard()
            if err.errno not in _FULL:
                raise
            raise OSError(f"could not write the results for {self.target} "
                          f"({os.strerror(err.errno)}); nothing there was changed") from err
        except BaseException:
            self.discard()
            raise
