"""Report stage: one self-contained HTML page (and a Markdown summary) that explains a pipeline run.

Why one page with everything embedded: a run is judged by looking at success with its uncertainty, the
training curves, the unit check that caught the seed's failure (positions ~20x smaller than rotations), the
executed paths and the failure videos together; an HTML file with base64 images survives being copied,
attached to an MLflow run or mailed, where a folder of loose PNGs does not.

The package, imports flowing one way: `inputs` (reading the stages' outputs) <- `tables` (statistics, table
rows) <- `figures` (matplotlib) <- `page` (Jinja2 environments) <- this file (`render`: the context the
templates libero_dp/templates/report.html.j2 and summary.md.j2 are filled with; videos; writing).
"""

from __future__ import annotations

import base64
import csv
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from libero_dp.fileio import atomic_path
from libero_dp.report.figures import (
    _plt,
    _short,
    fig_action_magnitude,
    fig_failures,
    fig_histograms,
    fig_paths,
    fig_success,
    fig_training,
    pick_path_episodes,
    png_b64,
)
from libero_dp.report.grounding import grounding_table
from libero_dp.report.inputs import (
    REQUIRED_METRICS,
    Inputs,
    ReportInputError,
    git_info,
    load_inputs,
    read_demo_paths,
    read_records,
    read_train_log,
)
from libero_dp.report.multitask import multitask
from libero_dp.report.page import CSS, html_table, md_table, render_html, render_md, video_figure
from libero_dp.report.robustness import robustness
from libero_dp.report.tables import (
    _K_INIT,
    _K_VIDEO,
    FAILURE_LABELS,
    LOCK_HEADERS,
    RATE_HEADERS,
    UNITS,
    RateRow,
    failure_label,
    family_rows,
    flatten_metrics,
    fmt,
    lock_summary,
    num,
    overall_row,
    rate_cells,
    rate_row,
    ratio_info,
    ratio_verdict,
    rget,
    scalars,
    task_rows,
)

__all__ = [
    "CSS",
    "FAILURE_LABELS",
    "LOCK_HEADERS",
    "RATE_HEADERS",
    "REQUIRED_METRICS",
    "UNITS",
    "Inputs",
    "RateRow",
    "Report",
    "ReportInputError",
    "VideoBudget",
    "_plt",
    "_short",
    "build_report",
    "failure_label",
    "flatten_metrics",
    "git_info",
    "html_table",
    "load_inputs",
    "match_video",
    "md_table",
    "png_b64",
    "rate_row",
    "ratio_verdict",
    "read_demo_paths",
    "read_records",
    "read_train_log",
    "render",
    "video_html",
    "video_name",
    "write_tasks_csv",
]

VIDEO_EMBED_MAX = 2 * 1024 * 1024  # bytes; larger videos are linked so the page stays loadable
VIDEO_EMBED_TOTAL = 40 * 1024 * 1024  # bytes of video per page; failures first, the rest are linked
MAX_FAILURES_LISTED = 25  # per label, so a 4500-episode eval does not produce a megabyte table


# ----------------------------------------------------------------------------------------------- videos
def video_name(rec: dict) -> str | None:
    """The eval stage's name for an episode's video: <task>_s<seed>_e<episode:03d>_<success|failure>.mp4."""
    if rec.get("task") is None or rec.get("seed") is None or rec.get("episode") is None:
        return None
    return (
        f"{rec['task']}_s{rec['seed']}_e{int(rec['episode']):03d}_"
        f"{'success' if rec.get('success') else 'failure'}.mp4"
    )


def match_video(rec: dict, videos: list[Path], eval_dir: Path) -> Path | None:
    """The record's own video field if it has one, else the file the eval stage names after the episode."""
    v = rget(rec, _K_VIDEO)
    if v:
        for cand in (Path(v), eval_dir / v, eval_dir / "videos" / Path(v).name):
            if cand.exists():
                return cand
    name = video_name(rec)
    return next((p for p in videos if p.name == name), None) if name else None


class VideoBudget:
    """Total bytes of video embedded in one page: 90 tasks x 4 videos would otherwise make it ~100 MB."""

    def __init__(self, total: int | None = None) -> None:
        self.left = VIDEO_EMBED_TOTAL if total is None else total

    def take(self, size: int) -> bool:
        if size < VIDEO_EMBED_MAX and size <= self.left:
            self.left -= size
            return True
        return False


def video_info(path: Path, out_dir: Path, budget: VideoBudget | None = None) -> dict[str, Any]:
    """Embedded (<2 MB, within the page's budget) so the page is self-contained, else a relative link."""
    size = path.stat().st_size
    embed = (budget or VideoBudget()).take(size)
    if embed:
        src = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = os.path.relpath(path, out_dir)
    return {"src": src, "name": path.name, "size_mb": size / 1e6, "embedded": embed}


def video_html(path: Path, out_dir: Path, budget: VideoBudget | None = None) -> str:
    """The page's <figure> for one video (embedded or linked, see video_info)."""
    return video_figure(video_info(path, out_dir, budget))


# ------------------------------------------------------------------------------------------------ build
@dataclass
class Report:
    """Rendered report: the HTML page, the Markdown summary and the rows they were built from."""

    html: str
    markdown: str
    tasks: list[RateRow]
    families: list[RateRow]
    overall: RateRow
    images: int
    warnings: list[str]


def _failures(inputs: Inputs, out_dir: Path, budget: VideoBudget) -> dict[str, Any]:
    """Failed episodes grouped by label (with their videos), then the remaining videos, in budget order."""
    failed = [r for r in inputs.records if not r.get("success")]
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in failed:
        by_label[failure_label(r)].append(r)
    used: set[Path] = set()
    groups = []
    for lab in [*FAILURE_LABELS, *sorted(set(by_label) - set(FAILURE_LABELS))]:
        recs = by_label.get(lab, [])
        if not recs:
            continue
        rows, vids = [], []
        for r in recs[:MAX_FAILURES_LISTED]:
            v = match_video(r, inputs.videos, inputs.eval_dir)
            rows.append(
                [
                    str(r.get("task")),
                    str(r.get("episode", "–")),
                    str(rget(r, _K_INIT, "–")),
                    str(r.get("seed", "–")),
                    str(r.get("steps", "–")),
                    fmt(num(r.get("clip_rate")), ".2%"),
                    str(r.get("error") or "")[:200],
                    "below" if v else "",
                ]
            )
            if v is not None and v not in used:
                used.add(v)
                vids.append(video_info(v, out_dir, budget))
        groups.append(
            {
                "label": lab,
                "n": len(recs),
                "rows": rows,
                "more": len(recs) - MAX_FAILURES_LISTED,
                "videos": vids,
            }
        )
    return {
        "n": len(failed),
        "counts": Counter(failure_label(r) for r in failed).most_common(),
        "groups": groups,
        "other_videos": [video_info(v, out_dir, budget) for v in inputs.videos if v not in used],
    }


def render(inputs: Inputs, paths_episodes: int = 3, out_dir: Path = Path("reports")) -> Report:
    """Build the HTML page and Markdown summary from parsed inputs; nothing is written here."""
    warnings = list(inputs.warnings)
    ev, scale_m, train_m = inputs.metrics["eval"], inputs.metrics["scale"], inputs.metrics.get("train", {})
    tasks = task_rows(ev, inputs.records, warnings)
    fams = family_rows(ev, inputs.records)
    overall = overall_row(inputs.records, tasks)
    images: dict[str, str | None] = {
        "success": fig_success(tasks, "success rate per task") if tasks else None,
        "families": fig_success(fams, "success rate per family") if fams else None,
        "training": fig_training(inputs.train_log) if inputs.train_log else None,
        "magnitude": fig_action_magnitude(scale_m),
        "histograms": fig_histograms(inputs.histograms),
        "paths": fig_paths(pick_path_episodes(inputs.records, paths_episodes), inputs.demo_paths),
        "failures": fig_failures(inputs.records),
    }
    if images["paths"] is None and paths_episodes:
        warnings.append("no episode record carries an eef path; path plots omitted")
    log = [r for r in inputs.train_log if math.isfinite(r.get("loss", math.nan))]
    vals = [r for r in inputs.train_log if math.isfinite(r.get("val_mse", math.nan))]
    best_val = min(vals, key=lambda r: r["val_mse"]) if vals else None
    val_dims = train_m.get("val_mse_dim") if isinstance(train_m.get("val_mse_dim"), dict) else {}
    context = {
        "git": inputs.git,
        "warnings": warnings,
        "exec": inputs.params.get("exec") or {},
        "overall": overall,
        "interval": overall.interval,
        "n_tasks": len(tasks),
        "rate_headers": RATE_HEADERS,
        "task_cells": [rate_cells(r) for r in [*tasks, overall]],
        "family_cells": [rate_cells(r) for r in fams],
        "images": images,
        "train": {
            "final_loss": log[-1]["loss"] if log else None,
            "final_step": int(log[-1]["step"]) if log else "–",
            "final_lr": log[-1].get("lr") if log else None,
            "best_val_mse": best_val["val_mse"] if best_val else None,
            "best_val_step": int(best_val["step"]) if best_val else "–",
            "scalars": scalars({k: v for k, v in train_m.items() if k != "val_mse_dim"}),
            "val_dims": [[k, fmt(num(v), ".4g")] for k, v in val_dims.items()],
        },
        "ratio": ratio_info(scale_m),
        "robustness": robustness(ev),
        "grounding": grounding_table(ev),
        "multitask": multitask(ev, inputs.metrics.get("experts")),
        "has_demo_paths": bool(inputs.demo_paths),
        "failures": _failures(inputs, out_dir, VideoBudget()),
        "lock_headers": LOCK_HEADERS,
        "lock_rows": lock_summary(inputs.lock),
        "params": [(k, yaml.safe_dump(v, sort_keys=False)) for k, v in inputs.params.items()],
        "params_yaml": yaml.safe_dump(inputs.params, sort_keys=False).rstrip(),
    }
    return Report(
        html=render_html("report.html.j2", context),
        markdown=render_md("summary.md.j2", context),
        tasks=tasks,
        families=fams,
        overall=overall,
        images=sum(v is not None for v in images.values()),
        warnings=warnings,
    )


def write_tasks_csv(path: Path, rows: list[RateRow], overall: RateRow | None = None) -> None:
    """Per-task success with interval bounds, flat, for `dvc plots` across experiments."""
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "success_rate", "wilson_low", "wilson_high", "n", "clip_rate"])
        for r in [*rows, *([overall] if overall else [])]:
            lo, hi = r.interval
            w.writerow(
                [
                    r.name,
                    f"{r.rate:.6g}",
                    f"{lo:.6g}",
                    f"{hi:.6g}",
                    r.n,
                    "" if r.clip_rate is None else f"{r.clip_rate:.6g}",
                ]
            )


def build_report(
    out_dir: Path, inputs: Inputs, paths_episodes: int = 3, tasks_csv: Path | None = None
) -> tuple[Report, list[Path]]:
    """Render and write index.html + summary.md (each atomically); return the report and the written files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = render(inputs, paths_episodes, out_dir)
    written = []
    for name, text in (("index.html", rep.html), ("summary.md", rep.markdown)):
        with atomic_path(out_dir / name, Path(name).suffix) as tmp:
            tmp.write_text(text)
            tmp.chmod(0o644)  # mkstemp's 0600 would hide the page from a web server or another user
        written.append(out_dir / name)
    if tasks_csv is not None:
        write_tasks_csv(Path(tasks_csv), rep.tasks, rep.overall)
        written.append(Path(tasks_csv))
    return rep, written
