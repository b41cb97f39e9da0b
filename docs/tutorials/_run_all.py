"""Run every tutorial (``docs/tutorials/*.py``) and time it; ``make docs`` calls this.

Usage: ``python docs/tutorials/_run_all.py [--quick] [--limit SECONDS] [--out FOLDER]``.
Each tutorial runs in its own process with one torch thread and writes its figures
into ``--out`` (by default the site's ``docs/tutorials/figures``). Exits 1 when one
fails or, with ``--quick``, uses more than ``--limit`` CPU seconds (CPU rather than wall
time, so that a machine shared with other jobs does not fail the build).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--limit", type=float, default=60.0,
                        help="CPU seconds allowed per --quick run")
    parser.add_argument("--out", type=Path, default=HERE / "figures")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    failed = []
    for script in sorted(HERE.glob("[!_]*.py")):
        cmd = [sys.executable, str(script), "--out", str(args.out)]
        cmd += ["--quick"] if args.quick else []
        start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter() - start
        seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        status = "ok" if res.returncode == 0 else f"FAILED (exit {res.returncode})"
        if res.returncode == 0 and args.quick and seconds > args.limit:
            status = f"TOO SLOW (limit {args.limit:.0f} CPU s)"
        print(f"{script.name:<28} {seconds:6.1f} CPU s {wall:6.1f} s wall  {status}", flush=True)
        if status != "ok":
            failed.append(script.name)
            sys.stderr.write(res.stdout[-2000:] + res.stderr[-4000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
