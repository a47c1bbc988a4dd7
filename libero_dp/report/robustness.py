"""The robustness table: one checkpoint on a base suite and its LIBERO-PRO variants, side by side.

Read from metrics/eval.json alone (per-task `suite` and rates). A variant suite is `<base>_<lan|object|swap|
task>`; it is compared with its base when both were evaluated: success with Wilson interval and the drop from
the base in points, per suite and per task (the same task name in both).
"""

from __future__ import annotations

from typing import Any

from libero_dp.metrics import rate_summary

VARIANTS = {
    "lan": "instruction reworded",
    "object": "objects replaced",
    "swap": "positions swapped",
    "task": "new task, same scene",
}
SUITE_HEADERS = ["suite", "perturbation", "success", "Wilson 95%", "episodes", "drop vs base (points)"]
TASK_HEADERS = ["task", "suite", "base success", "variant success", "drop (points)"]


def base_of(suite: str) -> tuple[str, str] | None:
    """(base suite, variant) for a LIBERO-PRO variant suite name, else None."""
    base, _, variant = suite.rpartition("_")
    return (base, variant) if variant in VARIANTS and base else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def robustness(ev: dict[str, Any]) -> dict[str, Any] | None:
    """Rows for the report, or None when no variant was evaluated beside its base suite."""
    tasks: dict[str, dict] = ev.get("tasks", {})
    by_suite: dict[str, dict[str, dict]] = {}
    for label, t in tasks.items():
        suite = t.get("suite")
        if suite:
            by_suite.setdefault(suite, {})[label.rpartition("/")[2]] = t
    pairs = [(s, *bv) for s in sorted(by_suite) if (bv := base_of(s)) and bv[0] in by_suite]
    if not pairs:
        return None

    def agg(ts: dict[str, dict]) -> dict[str, Any]:
        return rate_summary(sum(t["successes"] for t in ts.values()), sum(t["n"] for t in ts.values()))

    suite_rows, task_rows = [], []
    for base in sorted({b for _, b, _ in pairs}):
        b = agg(by_suite[base])
        suite_rows.append([base, "none (base)", _pct(b["success_rate"]), _wilson(b), str(b["n"]), "–"])
        for suite, _, variant in (p for p in pairs if p[1] == base):
            v = agg(by_suite[suite])
            drop = 100 * (b["success_rate"] - v["success_rate"])
            suite_rows.append(
                [suite, VARIANTS[variant], _pct(v["success_rate"]), _wilson(v), str(v["n"]), f"{drop:+.1f}"]
            )
            for name, vt in sorted(by_suite[suite].items()):
                bt = by_suite[base].get(name)
                if bt is None:
                    continue
                d = 100 * (bt["success_rate"] - vt["success_rate"])
                task_rows.append(
                    [name, suite, _pct(bt["success_rate"]), _pct(vt["success_rate"]), f"{d:+.1f}"]
                )
    return {
        "suite_headers": SUITE_HEADERS,
        "suite_rows": suite_rows,
        "task_headers": TASK_HEADERS,
        "task_rows": task_rows,
    }


def _wilson(r: dict[str, Any]) -> str:
    lo, hi = r["wilson95"]
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"
