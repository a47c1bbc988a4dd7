"""The multi-task section: tasks ranked from the worst, each beside the scripted expert on the same task.

Read from metrics/eval.json (per-task rates, failure counts) and, where present, the expert's table
(metrics/experts.json, keyed by task name): the policy/expert ratio says how much of what the demonstrations
could teach the policy learned; a task where the expert itself fails is not the policy's gap. Shown for
runs over MIN_TASKS tasks or more (a single-task run has its own table).
"""

from __future__ import annotations

from typing import Any

MIN_TASKS = 5
HEADERS = ["rank", "task", "family", "policy", "Wilson 95%", "expert", "policy / expert", "main failure"]
FAMILY_HEADERS = ["family", "tasks", "policy (mean over tasks)", "expert (mean)", "policy / expert", ">= 90%"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ratio(p: float, e: float | None) -> float | None:
    return p / e if e else None


def multitask(ev: dict[str, Any], experts: dict[str, Any] | None) -> dict[str, Any] | None:
    """Ranked task rows, family rows and a one-line summary, or None for runs of fewer than MIN_TASKS."""
    tasks: dict[str, dict] = ev.get("tasks", {})
    if len(tasks) < MIN_TASKS:
        return None
    ex = (experts or {}).get("tasks", {})
    ranked = sorted(tasks.items(), key=lambda kv: (kv[1]["success_rate"], kv[0]))
    rows = []
    for i, (name, t) in enumerate(ranked, 1):
        e = ex.get(name, {}).get("success_rate")
        fails = {k: v for k, v in (t.get("failures") or {}).items() if v}
        main = max(fails, key=lambda k: fails[k]) if fails else "–"
        lo, hi = t["wilson95"]
        rows.append(
            [
                str(i),
                name,
                str(t.get("family", "–")),
                f"{_pct(t['success_rate'])} ({t['successes']}/{t['n']})",
                f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                _pct(e),
                "–" if (r := _ratio(t["success_rate"], e)) is None else f"{r:.2f}",
                f"{main} ({fails[main]})" if fails else "–",
            ]
        )
    fam_rows = []
    for fam in sorted({str(t.get("family")) for t in tasks.values()}):
        ts = [(n, t) for n, t in tasks.items() if str(t.get("family")) == fam]
        p = sum(t["success_rate"] for _, t in ts) / len(ts)
        es = [ex[n]["success_rate"] for n, _ in ts if n in ex]
        e = sum(es) / len(es) if es else None
        r = _ratio(p, e)
        fam_rows.append(
            [
                fam,
                str(len(ts)),
                _pct(p),
                _pct(e),
                "–" if r is None else f"{r:.2f}",
                str(sum(t["success_rate"] >= 0.9 for _, t in ts)),
            ]
        )
    rates = [t["success_rate"] for t in tasks.values()]
    with_expert = [n for n in tasks if n in ex]
    return {
        "headers": HEADERS,
        "rows": rows,
        "family_headers": FAMILY_HEADERS,
        "family_rows": fam_rows,
        "tasks": len(tasks),
        "mean_task_success": _pct(sum(rates) / len(rates)),
        "at_least_90": sum(r >= 0.9 for r in rates),
        "expert_tasks": len(with_expert),
    }
