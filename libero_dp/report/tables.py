"""Statistics and table rows: success with Wilson intervals per task / family / overall, failure labels,
the unit check's reading, dvc.lock's summary, and the cells both the page and the summary show."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from libero_dp.metrics import wilson

FAILURE_LABELS = (
    "error",
    "wrong_object_moved",
    "right_object_wrong_place",
    "timed_out_moving",
    "stuck",
    "gripper_never_closed",
    "timeout",
)
UNITS = ("m", "cm", "mm")

# Record keys: the documented field first, then spellings tolerated so a rename does not blank the report.
_K_INIT = ("init_index", "init", "init_state", "episode")
_K_PATH = ("eef_path", "eef", "eef_pos", "path")
_K_LABEL = ("failure", "failure_label", "label", "failure_cause")
_K_VIDEO = ("video", "video_path")


def rget(rec: dict, keys: Sequence[str], default: Any = None) -> Any:
    for k in keys:
        if k in rec and rec[k] is not None:
            return rec[k]
    return default


@dataclass
class RateRow:
    """One line of a success table: counts, the Wilson interval and the per-episode means behind it."""

    name: str
    n: int
    successes: int
    steps_mean: float | None = None
    steps_median: float | None = None
    clip_rate: float | None = None
    out_of_range_rate: float | None = None
    inference_ms: float | None = None
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.n)


def _mean(xs: Iterable[Any]) -> float | None:
    v = [float(x) for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def rate_row(name: str, recs: list[dict]) -> RateRow:
    succ = [r for r in recs if r.get("success")]
    steps = [r["steps_to_success"] for r in succ if isinstance(r.get("steps_to_success"), (int, float))]
    return RateRow(
        name=name,
        n=len(recs),
        successes=len(succ),
        steps_mean=float(np.mean(steps)) if steps else None,
        steps_median=float(np.median(steps)) if steps else None,
        clip_rate=_mean(r.get("clip_rate") for r in recs),
        out_of_range_rate=_mean(r.get("out_of_range_rate") for r in recs),
        inference_ms=_mean(r.get("inference_ms") for r in recs),
        failures=dict(Counter(failure_label(r) for r in recs if not r.get("success"))),
    )


def failure_label(rec: dict) -> str:
    if rec.get("error"):
        return str(rget(rec, _K_LABEL, "error"))
    return str(rget(rec, _K_LABEL, "unlabelled"))


def _task_entries(ev: dict) -> dict[str, dict]:
    """Per-task dicts of metrics/eval.json, wherever the eval stage put them (tasks / per_task)."""
    for key in ("tasks", "per_task"):
        if isinstance(ev.get(key), dict):
            return {k: v for k, v in ev[key].items() if isinstance(v, dict)}
    return {
        k: v
        for k, v in ev.items()
        if isinstance(v, dict) and "success_rate" in v and k not in ("overall", "families", "per_family")
    }


def _family_entries(ev: dict) -> dict[str, dict]:
    for key in ("families", "per_family"):
        if isinstance(ev.get(key), dict):
            return {k: v for k, v in ev[key].items() if isinstance(v, dict)}
    return {}


def row_from_metrics(name: str, m: dict) -> RateRow:
    """A table row from an eval.json entry, for tasks that have no records (e.g. records were trimmed)."""
    n = int(m.get("n", m.get("episodes", 0)) or 0)
    succ = m.get("successes")
    if succ is None:
        succ = round(float(m.get("success_rate", 0.0)) * n)
    steps = m.get("steps_to_success", m.get("steps"))
    if isinstance(steps, dict):
        mean_s, med_s = steps.get("mean"), steps.get("median")
    else:
        mean_s, med_s = m.get("mean_steps_to_success", steps), m.get("median_steps_to_success")
    return RateRow(
        name=name,
        n=n,
        successes=int(succ),
        steps_mean=num(mean_s),
        steps_median=num(med_s),
        clip_rate=num(m.get("mean_clip_rate", m.get("clip_rate"))),
        out_of_range_rate=num(m.get("mean_out_of_range_rate", m.get("out_of_range_rate"))),
        inference_ms=num(m.get("mean_inference_ms", m.get("inference_ms"))),
        failures={k: int(v) for k, v in (m.get("failures") or {}).items() if v},
    )


def num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def task_rows(ev: dict, records: list[dict], warnings: list[str] | None = None) -> list[RateRow]:
    """Per-task rows from the episode records, cross-checked against metrics/eval.json."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[str(r.get("task"))].append(r)
    entries = _task_entries(ev)
    rows = [rate_row(t, recs) for t, recs in sorted(by_task.items())]
    for t, m in sorted(entries.items()):
        if t not in by_task:
            rows.append(row_from_metrics(t, m))
            if warnings is not None:
                warnings.append(f"task {t}: in metrics/eval.json but has no episode records")
    if warnings is not None:
        for row in rows:
            m = entries.get(row.name)
            if (
                m
                and isinstance(m.get("success_rate"), (int, float))
                and row.name in by_task
                and abs(float(m["success_rate"]) - row.rate) > 1e-6
            ):
                warnings.append(
                    f"task {row.name}: eval.json success_rate {m['success_rate']:.3f} != "
                    f"{row.rate:.3f} from records.jsonl (records are shown)"
                )
    return rows


def task_family(task: str) -> str:
    """LIBERO-90 task names start with their scene (KITCHEN_SCENE10_...): the scene is the task's family."""
    m = re.match(r"^([A-Z_]*SCENE\d+)_", task)
    return m.group(1) if m else task


def family_rows(ev: dict, records: list[dict]) -> list[RateRow]:
    """Per-family rows: records' `family`, else eval.json `families`, else scenes when there are several."""
    fams: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("family"):
            fams[str(r["family"])].append(r)
    if fams:
        return [rate_row(f, recs) for f, recs in sorted(fams.items())]
    if _family_entries(ev):
        return [row_from_metrics(f, m) for f, m in sorted(_family_entries(ev).items())]
    for r in records:
        fams[task_family(str(r.get("task")))].append(r)
    tasks = {str(r.get("task")) for r in records}
    if len(fams) > 1 and len(fams) < len(tasks):
        return [rate_row(f, recs) for f, recs in sorted(fams.items())]
    return []


def ratio_verdict(r: float | None) -> str:
    """Plain-language reading of max|pos| / max|rot|: within 5x either way the two are comparable."""
    if r is None or not math.isfinite(r) or r <= 0:
        return "n/a"
    if 0.2 <= r <= 5:
        return "comparable magnitudes"
    if r < 0.2:
        return f"positions {1 / r:.0f}x smaller than rotations"
    return f"positions {r:.0f}x larger than rotations"


def flatten_metrics(metrics: dict[str, dict]) -> dict[str, float]:
    """All numbers of metrics/*.json as '<file>.<key.path>' (lists of numbers get .0, .1, ...) for MLflow."""
    out: dict[str, float] = {}

    def walk(x: Any, key: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}.{k}")
        elif isinstance(x, (list, tuple)) and len(x) <= 16:
            for i, v in enumerate(x):
                walk(v, f"{key}.{i}")
        elif isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
            out[re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key)[:250]] = float(x)

    for stem, m in metrics.items():
        walk(m, stem)
    return out


def fmt(x: Any, spec: str = ".3f") -> str:
    """A cell: floats with `spec`, missing or non-finite as an en dash, anything else as str."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


RATE_HEADERS = [
    "name",
    "episodes",
    "success",
    "Wilson 95%",
    "steps to success (mean / median)",
    "clip rate",
    "out of range",
    "inference ms",
]


def rate_cells(r: RateRow) -> list[str]:
    lo, hi = r.interval
    return [
        r.name,
        str(r.n),
        f"{r.rate:.1%} ({r.successes}/{r.n})",
        f"[{lo:.1%}, {hi:.1%}]",
        f"{fmt(r.steps_mean, '.1f')} / {fmt(r.steps_median, '.0f')}",
        fmt(r.clip_rate, ".2%"),
        fmt(r.out_of_range_rate, ".2%"),
        fmt(r.inference_ms, ".1f"),
    ]


def overall_row(records: list[dict], rows: list[RateRow]) -> RateRow:
    """Pooled over all episodes (not a mean of task rates), so the interval reflects every episode."""
    if records:
        return rate_row("overall", records)
    return RateRow("overall", sum(r.n for r in rows), sum(r.successes for r in rows))


def lock_summary(lock: dict | None) -> list[list[str]]:
    """Per stage: a fingerprint of its dvc.lock entry, its outputs' hashes and what it depends on."""
    rows = []
    for name, st in ((lock or {}).get("stages") or {}).items():
        if name == "report":  # its own entry describes the previous report, not this one
            continue
        fp = hashlib.sha256(json.dumps(st, sort_keys=True, default=str).encode()).hexdigest()[:12]
        outs = ", ".join(
            f"{o.get('path')}:{str(o.get('md5') or o.get('hash') or '?')[:10]}"
            + (f" ({o['nfiles']} files)" if o.get("nfiles") else "")
            for o in st.get("outs") or []
        )
        params = ", ".join(sorted(k for f in (st.get("params") or {}).values() for k in (f or {})))
        rows.append([name, fp, str(len(st.get("deps") or [])), params, outs])
    return rows


LOCK_HEADERS = ["stage", "lock entry sha256", "deps", "params", "outs (md5)"]


def scalars(d: dict, limit: int = 40) -> list[list[str]]:
    """(dotted key, value) rows of a nested dict's scalars, for a key/value table."""
    flat = []

    def walk(x: Any, key: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(x, (int, float, str, bool)) or x is None:
            flat.append([key, fmt(x, ".4g") if isinstance(x, float) else str(x)])

    walk(d, "")
    return flat[:limit]


def ratio_info(scale_m: dict) -> dict[str, Any]:
    """The unit check in words: the chosen unit's max|pos| / max|rot|, its reading, the other units'."""
    r = num(scale_m.get("pos_rot_ratio"))
    by_unit = scale_m.get("pos_rot_ratio_by_unit") or {}
    chosen = str(scale_m.get("pos_unit"))
    return {
        "unit": chosen,
        "rot_repr": str(scale_m.get("rot_repr")),
        "value": fmt(r, ".3g"),
        "verdict": ratio_verdict(r),
        "ok": r is not None and 0.2 <= r <= 5,
        "others": [
            (u, fmt(num(by_unit.get(u)), ".3g"), ratio_verdict(num(by_unit.get(u))))
            for u in UNITS
            if u in by_unit
        ],
        "unit_cells": [
            [u + (" (chosen)" if u == chosen else ""), fmt(num(v), ".3g"), ratio_verdict(num(v))]
            for u, v in by_unit.items()
        ],
    }
