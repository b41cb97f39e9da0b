"""Progress bars that suit where they are shown: a live bar on a terminal, one line in a log.

Every training loop and sampler of the package makes its bar with
:func:`progress_bar`. On a terminal (or in a notebook) that is a ``tqdm`` bar.
When stderr is a file or a pipe (a log, CI, ``nohup``), a live bar would write
thousands of carriage-return updates; there the bar stays silent while it runs
and writes one line when its stage ends: ``fit: 400/5000 steps in 12.3 s (elbo=-3.1)``.
"""

from __future__ import annotations

__all__ = ["LineProgress", "interactive", "progress_bar"]

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any


def interactive(file: IO[str] | None = None) -> bool:
    """Whether a live bar suits ``file`` (default ``sys.stderr``): a terminal or a notebook.

    Pyro's MCMC draws its own bar; callers pass ``progress and interactive()`` to it.
    """
    file = sys.stderr if file is None else file
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed stream
        return False


class LineProgress:
    """A stand-in for ``tqdm`` that writes one line, when it is closed or its iterable ends.

    It has the part of ``tqdm``'s interface the package uses: iteration,
    :meth:`update`, :meth:`set_postfix`, :meth:`set_description` and :meth:`close`.

    Arguments:
        iterable: what to iterate over, or None for a bar driven by :meth:`update`.
        total: the expected count (default: ``len(iterable)`` where it has one).
        initial: the count to start from (a resumed run).
        desc: the stage's name, first on the line.
        unit: what is counted (default ``"steps"``).
        file: where the line goes (default: ``sys.stderr`` at closing time).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> for _ in LineProgress(range(3), desc="fit", file=out):
        ...     pass
        >>> out.getvalue().startswith("fit: 3/3 steps in ")
        True
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: int | None = None,
        initial: int = 0,
        desc: str | None = None,
        unit: str | None = None,
        file: IO[str] | None = None,
        **_: object,  # tqdm's display options (leave, position, ...) do not apply
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.n = iterable, total, int(initial)
        self.desc, self.unit, self.file = desc or "progress", unit or "steps", file
        self.postfix = ""
        self.start = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        """Iterate, counting; the line is written when the iterable ends (or at :meth:`close`)."""
        if self.iterable is None:
            raise TypeError("LineProgress: nothing to iterate over (iterable=None)")
        for item in self.iterable:
            self.n += 1  # counted when handed out: a loop that breaks has done it
            yield item
        self.close()

    def __del__(self) -> None:
        """A bar left open (a loop that broke, never closed) writes its line when collected."""
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: nothing to write to
            pass

    def __enter__(self) -> LineProgress:
        """Use as a context manager: closed (its line written) on leaving."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more."""
        self.n += n

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:  # noqa: ANN401 - shown as text
        """Remember values to show after the count (``loss=...``)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename the stage."""
        self.desc = desc or self.desc

    def close(self) -> None:
        """Write the stage's one line (once)."""
        if self.closed:
            return
        self.closed = True
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        line = f"{self.desc}: {count} {self.unit} in {time.perf_counter() - self.start:.1f} s"
        line += f" ({self.postfix})" if self.postfix else ""
        file = self.file if self.file is not None else sys.stderr
        print(line, file=file, flush=True)


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool = False,
                 **kwargs: Any) -> Any:  # noqa: ANN401 - a tqdm bar or a LineProgress
    """A progress bar: ``tqdm`` on a terminal, :class:`LineProgress` when stderr is not one.

    Arguments:
        iterable: what to iterate over (or None, for ``update``).
        disable: show nothing (the loops' ``progress=False``).
        **kwargs: ``tqdm``'s arguments (``total``, ``initial``, ``desc``, ``leave``, ...).

    Returns:
        An object with ``tqdm``'s iteration, ``update``, ``set_postfix`` and ``close``.

    Example:
        >>> list(progress_bar(range(3), disable=True, desc="fit"))
        [0, 1, 2]
    """
    from tqdm.auto import tqdm

    file = kwargs.get("file") or sys.stderr
    if disable or interactive(file):
        return tqdm(iterable, disable=disable, **kwargs)
    return LineProgress(iterable, **kwargs)
