"""A checkpoint's failures on one page: episodes grouped by cause, counts per family, and the failure videos.

Why a page of its own: the pipeline's report (libero_dp.report) explains a whole run and needs every stage's
outputs; a committed checkpoint evaluated on a CPU (`tools/checkpoint.py eval --videos K`) has only its
records, metrics and videos. This page reads those alone and renders them with the report's own grouping
(`libero_dp.report._failures`), table and video macros and CSS, so a failure cause looks the same in both.

Causes are the eval stage's labels, read from the final sim state against the task's goal predicates:
wrong_object_moved, right_object_wrong_place, timed_out_moving, stuck, gripper_never_closed, timeout, error.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from libero_dp.fileio import atomic_path
from libero_dp.report import CSS, FAILURE_LABELS, VideoBudget, _failures, html_table, md_table, video_figure
from libero_dp.report.inputs import read_records
from libero_dp.report.tables import RateRow, rate_cells, row_from_metrics


def _rate(r: RateRow) -> str:
    """The report's success cell and interval cell (rate_cells), in one."""
    _, _, rate, interval, *_ = rate_cells(r)
    return f"{rate} {interval}"


def family_causes(metrics: dict) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows: per family, its success and its failures by cause (causes that occur anywhere)."""
    fams = [row_from_metrics(name, f) for name, f in sorted((metrics.get("families") or {}).items())]
    seen = [c for c in FAILURE_LABELS if any(r.failures.get(c) for r in fams)]
    rows = [[r.name, _rate(r), *[r.failures.get(c, 0) for c in seen]] for r in fams]
    return ["family", "success", *seen], rows


def build(metrics_path: Path, eval_dir: Path, out_dir: Path, title: str) -> dict[str, Any]:
    """Write out_dir/index.html (videos embedded up to the report's budget) and out_dir/summary.md.

    metrics_path: the `tools/checkpoint.py eval` output; eval_dir: the folder it evaluated into
    (records.jsonl, videos/). Returns the per-cause counts and the videos placed under each cause.
    """
    metrics = json.loads(Path(metrics_path).read_text())
    rec_file = Path(eval_dir) / "records.jsonl"
    if not rec_file.is_file():
        raise FileNotFoundError(f"{rec_file}: missing; expected the records of the evaluation {metrics_path}")
    records = read_records(rec_file)
    vdir = Path(eval_dir) / "videos"
    videos = sorted(vdir.glob("*.mp4")) if vdir.is_dir() else []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fail = _failures(
        SimpleNamespace(records=records, videos=videos, eval_dir=Path(eval_dir)), out_dir, VideoBudget()
    )
    heads, fam_rows = family_causes(metrics)
    overall = _rate(row_from_metrics("overall", metrics["overall"]))
    row_heads = ["task", "episode", "init", "seed", "steps", "clip rate", "error", "video"]
    where = html.escape(str(metrics.get("measured_on", "")))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>Overall {html.escape(overall)}; measured on {where}. "
        f"{fail['n']} failed episodes: "
        + ", ".join(f"{html.escape(k)} {n}" for k, n in fail["counts"])
        + ".</p>",
        "<h2>By family</h2>",
        html_table(heads, fam_rows),
    ]
    md = [
        f"# {title}",
        "",
        f"Overall {overall}; measured on {metrics.get('measured_on', '')}.",
        "",
    ]
    md += ["## By family", "", md_table(heads, fam_rows), "", "## By cause", ""]
    for g in fail["groups"]:
        parts += [
            f"<h2>{html.escape(g['label'])}: {g['n']} episode(s)</h2>",
            html_table(row_heads, g["rows"]),
        ]
        parts += ["<div class='videos'>", *[video_figure(v) for v in g["videos"]], "</div>"]
        md += [
            f"### {g['label']}: {g['n']} episode(s)",
            "",
            md_table(row_heads[:5], [r[:5] for r in g["rows"]]),
        ]
        md += ["", "Videos: " + (", ".join(v["name"] for v in g["videos"]) or "none"), ""]
    parts.append("</body></html>")
    for name, text in (("index.html", "\n".join(parts)), ("summary.md", "\n".join(md))):
        with atomic_path(out_dir / name, Path(name).suffix) as tmp:
            tmp.write_text(text)
    return {
        "failed": fail["n"],
        "counts": dict(fail["counts"]),
        "videos": {g["label"]: [v["name"] for v in g["videos"]] for g in fail["groups"]},
    }
