"""The goal lines of issue 9 ("right answers on real posteriors") from benchmark rows.

``auto`` must be within 0.2 reference sd on every mean and 20% on every sd on
each of the 13 posteriordb posteriors, with ESS per second at least 3x the
reference NUTS on each and 10x in the median over posteriors; a "diagnostic
lie" is a fit whose k-hat says good (below 0.7) while a mean is off by more
than 0.3 reference sd. With several seeds a posterior's numbers are the
medians over seeds; a seed that failed makes its method fail there.
"""

from __future__ import annotations

__all__ = ["diagnostic_lies", "goal13_report", "reference_nuts"]

import math
from typing import Any

import numpy as np

MEAN_TOL, SD_TOL, LIE_KHAT, LIE_MEAN = 0.2, 0.2, 0.7, 0.3
PER_POSTERIOR, MEDIAN_RATIO = 3.0, 10.0


def reference_nuts(rows: list[dict[str, Any]]) -> str:
    """The NUTS the goal compares with: ``nuts-dense`` when it ran, else ``nuts``."""
    return "nuts-dense" if any(r["method"] == "nuts-dense" for r in rows) else "nuts"


def _median(rows: list[dict[str, Any]], target: str, method: str) -> dict[str, Any] | None:
    mine = [r for r in rows if r["target"] == target and r["method"] == method]
    if not mine:
        return None
    if any("error" in r for r in mine):
        return {"error": next(r["error"] for r in mine if "error" in r)}
    out: dict[str, Any] = {"seeds": len(mine)}
    for key in ("ess_per_s", "ess_per_cpu_s", "khat", "mean_err", "sd_err", "seconds"):
        vals = [r[key] for r in mine if r.get(key) is not None]
        out[key] = float(np.median(vals)) if vals else None
    out["capped"] = any(r.get("capped") for r in mine)
    return out


def diagnostic_lies(rows: list[dict[str, Any]]) -> list[str]:
    """Every row (any method, any seed) with k-hat < 0.7 and worst mean error > 0.3 sd."""
    out = []
    for r in rows:
        k, err = r.get("khat"), r.get("mean_err")
        if k is not None and err is not None and k < LIE_KHAT and err > LIE_MEAN:
            out.append(f"{r['target']} {r['method']} seed {r['seed']}: k-hat {k:.2f}, "
                       f"worst mean error {err:.2f} sd")
    return out


def goal13_report(rows: list[dict[str, Any]], posteriors: tuple[str, ...]) -> list[str]:
    """The goal lines (one per posterior that ran, then the summary and the lies)."""
    nuts = reference_nuts(rows)
    lines, ratios, accurate, fast = [], [], [], []
    ran = [p for p in posteriors if any(r["target"] == p for r in rows)]
    for target in ran:
        auto, ref = _median(rows, target, "auto"), _median(rows, target, nuts)
        if auto is None:
            continue
        if "error" in auto:
            lines.append(f"{target}: auto failed ({auto['error']})")
            accurate.append(False)
            fast.append(False)
            continue
        ok = auto["mean_err"] <= MEAN_TOL and auto["sd_err"] <= SD_TOL
        accurate.append(ok)
        text = (f"{target}: auto mean err {auto['mean_err']:.3f} sd, sd err "
                f"{auto['sd_err']:.3f}, k-hat {_fmt(auto['khat'])}, ESS/s "
                f"{auto['ess_per_s']:.2f} ({'accurate' if ok else 'NOT accurate'})")
        if ref is not None and "error" not in ref and ref["ess_per_s"]:
            # per CPU second where both rows have it (robust to a loaded machine), else wall
            key = "ess_per_cpu_s" if auto["ess_per_cpu_s"] and ref["ess_per_cpu_s"] else \
                "ess_per_s"
            ratio = auto[key] / ref[key]
            ratios.append(ratio)
            fast.append(ratio >= PER_POSTERIOR)
            capped = " (NUTS capped)" if ref["capped"] else ""
            unit = "ESS/cpu s" if key == "ess_per_cpu_s" else "ESS/s"
            text += (f"; {nuts} ESS/s {ref['ess_per_s']:.3f}{capped}, ratio {ratio:.1f}x "
                     f"({unit})")
        elif ref is not None:
            # NUTS gave no draw within its cap: auto's ratio is unbounded
            ratios.append(math.inf)
            fast.append(True)
            text += f"; {nuts} gave no draws ({ref['error']}), ratio inf"
        lines.append(text)
    if accurate:
        n = len(accurate)
        lines.append(f"auto accurate (mean <= {MEAN_TOL} sd, sd <= {SD_TOL:.0%}) on "
                     f"{sum(accurate)}/{n} posteriors: "
                     f"{'met' if all(accurate) and n == len(posteriors) else 'not met'}")
    if ratios:
        med = float(np.median(ratios))
        met = all(fast) and med >= MEDIAN_RATIO and len(fast) == len(posteriors)
        lines.append(f"auto ESS/s >= {PER_POSTERIOR:.0f}x {nuts} on {sum(fast)}/{len(fast)}; "
                     f"median ratio {med:.1f}x (goal {MEDIAN_RATIO:.0f}x): "
                     f"{'met' if met else 'not met'}")
    lies = diagnostic_lies(rows)
    lines.append(f"diagnostic lies (k-hat < {LIE_KHAT}, mean err > {LIE_MEAN} sd): "
                 f"{len(lies)}")
    lines += ["  " + s for s in lies]
    return lines


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
