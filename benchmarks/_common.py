"""Shared helpers of the benchmark scripts: timing, tables, JSON output, environment.

The benchmarks are scripts, not part of the package; they import this module
as ``_common`` (their own folder is on ``sys.path`` when run as
``python benchmarks/<name>.py``).
"""

from __future__ import annotations

__all__ = [
    "Column",
    "environment",
    "format_table",
    "interleaved_timing",
    "median",
    "parallel_map",
    "print_table",
    "profile_breakdown",
    "shutdown_pools",
    "stopwatch",
    "write_json",
]

import atexit
import contextlib
import cProfile
import dataclasses
import datetime
import json
import math
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a printed table.

    Arguments:
        key: the row dictionary key.
        header: the column title.
        fmt: a format spec for numbers (``".3f"``); strings are printed as they are.
    """

    key: str
    header: str
    fmt: str = ""


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Render ``rows`` as a plain-text table: text columns left-aligned, numbers right-aligned.

    Missing keys and ``None`` print as ``-``.

    Example:
        >>> cols = [Column("a", "name"), Column("b", "v", ".2f")]
        >>> print(format_table([{"a": "x", "b": 1.5}], cols))
        name     v
        ----  ----
        x     1.50
    """
    if not columns:
        raise ValueError("format_table: expected at least one column, got none")
    cells = [[_cell(row.get(c.key), c.fmt) for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c.key), int | float) or row.get(c.key) is None for row in rows)
        for c in columns
    ]
    widths = [
        max([len(c.header)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)
    ]

    def fmt_line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt_line([c.header for c in columns]), fmt_line(["-" * w for w in widths])]
    lines += [fmt_line(line) for line in cells]
    return "\n".join(lines)


def print_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    """Print a title line and :func:`format_table` of the rows, followed by a blank line."""
    print(f"\n{title}")
    print(format_table(rows, columns), flush=True)


def _init_worker(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


_POOLS: dict[tuple[int, int | None], Any] = {}


def _pool(workers: int, threads: int | None) -> Any:
    """A process pool kept for the whole run (spawning imports torch: seconds per worker)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    key = (workers, threads)
    if key not in _POOLS:
        ctx = multiprocessing.get_context("spawn")
        _POOLS[key] = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                          initargs=(threads,))
    return _POOLS[key]


def shutdown_pools() -> None:
    """Stop the worker processes that :func:`parallel_map` started."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown()


atexit.register(shutdown_pools)


def parallel_map(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    workers: int = 1,
    threads: int | None = 1,
) -> list[Any]:
    """``[fn(*job) for job in jobs]``, in up to ``workers`` spawned worker processes.

    With ``workers == 1`` (or a single job) everything runs here, in order. ``fn``
    must be a module-level function and the jobs picklable; results keep the
    order of ``jobs``. Each worker process uses ``threads`` torch threads (``None``:
    leave torch alone, and do not import it, in the workers). The workers stay
    up for later calls with the same ``workers`` and ``threads`` until
    :func:`shutdown_pools` (or the end of the program).

    Example:
        >>> parallel_map(divmod, [(7, 2), (9, 4)])
        [(3, 1), (2, 1)]
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"parallel_map: expected workers >= 1, got {workers!r}")
    if workers == 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    pool = _pool(workers, threads)
    futures = [pool.submit(fn, *job) for job in jobs]
    return [f.result() for f in futures]


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence.

    Example:
        >>> median([3.0, 1.0, 2.0])
        2.0
    """
    if len(values) == 0:
        raise ValueError("median: expected at least one value, got none")
    return float(statistics.median(values))


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """Measure the wall time of a ``with`` block; the yielded dict gets ``"seconds"`` at exit.

    Example:
        >>> with stopwatch() as t:
        ...     pass
        >>> t["seconds"] >= 0
        True
    """
    out: dict[str, float] = {"seconds": float("nan")}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


def interleaved_timing(
    steps: Mapping[str, Callable[[], object]],
    rounds: int = 20,
    inner: int = 5,
    warmup: int = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time several callables in alternation: seconds per call, one sample per round and name.

    Each round calls every function ``inner`` times in turn, so a change of
    machine load affects all of them alike; ratios taken round by round are
    robust to other processes sharing the CPU. With ``clock=time.thread_time``
    (CPU time of this thread, right for single-threaded CPU work) time spent
    waiting for the CPU while other processes run is not counted at all.

    Arguments:
        steps: name -> a function doing one unit of work (e.g. one training step).
        rounds: number of samples per function.
        inner: calls per sample (the sample is their mean).
        warmup: untimed calls of each function first.
        clock: the clock, in seconds (wall time by default).

    Returns:
        name -> ``rounds`` per-call times in seconds.

    Example:
        >>> t = interleaved_timing({"noop": lambda: None}, rounds=3, inner=2, warmup=1)
        >>> len(t["noop"])
        3
    """
    for name, value in (("rounds", rounds), ("inner", inner)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"interleaved_timing: expected {name} >= 1, got {value!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"interleaved_timing: expected warmup >= 0, got {warmup!r}")
    if not steps:
        raise ValueError("interleaved_timing: expected at least one function, got none")
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = clock()
            for _ in range(inner):
                fn()
            samples[name].append((clock() - start) / inner)
    return samples


def profile_breakdown(
    fn: Callable[[], object],
    calls: int,
    groups: Mapping[str, Sequence[str]],
    top: int = 10,
    passthrough: Sequence[str] = (),
    clock: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Profile ``calls`` calls of ``fn`` with cProfile and split its own time into groups.

    A function belongs to the first group with a key that is a substring of
    its label ``path:line(name)``. The own time of a built-in (a C function
    such as ``torch.gather``, which has no path) that matches no group, and of
    a function whose label contains one of ``passthrough`` (thin wrappers such
    as ``torch/nn/functional.py``), is handed to its callers in proportion to
    the time spent from each, so the tensor ops that Pyro's spline code calls
    count as Pyro's spline time. What is left unmatched is ``"other"``.

    Arguments:
        fn: the function to profile (one unit of work).
        calls: how many times to call it.
        groups: group name -> label substrings.
        top: how many of the costliest functions (by own time) to list.
        passthrough: label substrings of functions whose time goes to their callers.
        clock: the profiler's timer in seconds (e.g. ``time.thread_time`` for CPU
            time); cProfile's default wall clock if ``None``.

    Returns:
        ``{"seconds_per_call": ..., "groups": {name: fraction of the total}, "top": [...]}``
        where each entry of ``top`` has ``function``, ``group``, ``calls`` and ``fraction``.

    Example:
        >>> out = profile_breakdown(lambda: sorted(range(100)), 5, {"sorting": ["sorted"]})
        >>> sorted(out), out["groups"]["sorting"] > 0
        (['groups', 'seconds_per_call', 'top'], True)
    """
    if not isinstance(calls, int) or calls < 1:
        raise ValueError(f"profile_breakdown: expected calls >= 1, got {calls!r}")
    prof = cProfile.Profile() if clock is None else cProfile.Profile(clock)
    now = clock or time.perf_counter
    start = now()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    elapsed = now() - start
    stats: dict[tuple, tuple] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0

    def label(key: tuple) -> str:
        return f"{key[0]}:{key[1]}({key[2]})"

    def own_group(key: tuple) -> str | None:
        text = label(key)
        return next((g for g, keys in groups.items() if any(k in text for k in keys)), None)

    memo: dict[tuple, dict[str, float]] = {}

    def shares_of(key: tuple, depth: int = 0) -> dict[str, float]:
        """Fractions of ``key``'s own time per group."""
        if key in memo:
            return memo[key]
        passes = any(k in label(key) for k in passthrough)
        group = None if passes else own_group(key)
        handed_on = passes or key[0] == "~"  # "~": a built-in, which has no file
        if group is not None or not handed_on or depth > 20:
            out = {group or "other": 1.0}
        else:
            # only callers that are profiled and not the function itself share its time,
            # so the shares sum to one (a recursive or unprofiled caller used to leak some)
            callers = {c: v for c, v in stats[key][4].items() if c in stats and c != key}
            weight = sum(c[2] for c in callers.values())
            out = {}
            if weight > 0:
                for caller, c in callers.items():
                    for g, f in shares_of(caller, depth + 1).items():
                        out[g] = out.get(g, 0.0) + f * c[2] / weight
            out = out or {"other": 1.0}
        memo[key] = out
        return out

    totals = dict.fromkeys(list(groups) + ["other"], 0.0)
    entries = []
    for key, (_, ncalls, tottime, _, _) in stats.items():
        shares = shares_of(key)
        for g, f in shares.items():
            totals[g] += f * tottime / total
        main = max(shares, key=lambda g: shares[g])
        entries.append((tottime, ncalls, _short(label(key)), main))
    entries.sort(key=lambda e: -e[0])
    top_list = [
        {"function": name, "group": g, "calls": int(n), "fraction": t / total}
        for t, n, name, g in entries[:top]
    ]
    return {"seconds_per_call": elapsed / calls, "groups": totals, "top": top_list}


def _short(label: str) -> str:
    """Trim a profiler label's path to the part after ``site-packages/`` or the repo root."""
    for marker in ("site-packages/", os.getcwd() + "/"):
        if marker in label:
            return label.split(marker, 1)[1]
    return label


def environment() -> dict[str, Any]:
    """Versions and machine facts to store next to benchmark results."""
    import pyro
    import torch

    import pyro_relax

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "pyro": pyro.__version__,
        "pyro_relax": pyro_relax.__version__,
    }
    try:
        import zuko

        info["zuko"] = zuko.__version__
    except ImportError:
        info["zuko"] = None
    return info


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` plus an ``"environment"`` entry as indented JSON; return the path.

    Non-finite floats are written as ``null`` so that strict JSON readers accept the file;
    dataclasses, tensors and paths are converted (see :func:`_finite`).

    Example:
        >>> import tempfile, json
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = write_json(Path(d) / "r.json", {"x": float("nan")})
        ...     json.loads(p.read_text())["x"] is None
        True
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"write_json: the folder {str(path.parent)!r} does not exist")
    data = {"environment": environment(), **payload}
    path.write_text(json.dumps(_finite(data), indent=2) + "\n")
    return path


def _finite(obj: Any) -> Any:
    """Make ``obj`` JSON-ready: non-finite floats to ``None``, dataclasses to dicts,
    tensors and paths to lists and strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _finite(dataclasses.asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # tensors and arrays
        return _finite(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
