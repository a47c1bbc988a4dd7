"""Report stage: one self-contained HTML page (and a Markdown summary) that explains a pipeline run.

Why one page with everything embedded: a run is judged by looking at success with its uncertainty, the
training curves, the unit check that caught the seed's failure (positions ~20x smaller than rotations), the
executed paths and the failure videos together; an HTML file with base64 images survives being copied,
attached to an MLflow run or mailed, where a folder of loose PNGs does not.

Inputs (the stages' documented outputs): metrics/*.json, metrics/train_log.csv,
<scale.out_dir>/histograms.json, <eval.out_dir>/records.jsonl and videos/*.mp4.
Optional: the extracted demo arrays (demo paths), dvc.lock, git.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import os
import re
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from libero_dp.fileio import atomic_path
from libero_dp.metrics import wilson

FAILURE_LABELS = ("error", "timed_out_moving", "stuck", "gripper_never_closed")
VIDEO_EMBED_MAX = 2 * 1024 * 1024  # bytes; larger videos are linked so the page stays loadable
VIDEO_EMBED_TOTAL = 40 * 1024 * 1024  # bytes of video per page; failures first, the rest are linked
REQUIRED_METRICS = ("eval", "scale", "train")
UNITS = ("m", "cm", "mm")
MAX_FAILURES_LISTED = 25  # per label, so a 4500-episode eval does not produce a megabyte table

# Record keys: the documented field first, then spellings tolerated so a rename does not blank the report.
_K_INIT = ("init_index", "init", "init_state", "episode")
_K_PATH = ("eef_path", "eef", "eef_pos", "path")
_K_LABEL = ("failure", "failure_label", "label", "failure_cause")
_K_VIDEO = ("video", "video_path")


class ReportInputError(FileNotFoundError):
    """A documented input of the report is missing; the message names the stage that writes it."""


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Everything the report reads, already parsed, so rendering is a pure function of it (and testable)."""

    metrics: dict[str, dict]
    train_log: list[dict[str, float]]
    histograms: dict
    records: list[dict]
    videos: list[Path]
    eval_dir: Path
    params: dict
    demo_paths: dict[str, list[np.ndarray]] = field(default_factory=dict)
    lock: dict | None = None
    git: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise ReportInputError(
            f"{path}: not found; it is written by the '{stage}' stage (run `dvc repro {stage}`)"
        )
    return path


def read_train_log(path: Path) -> list[dict[str, float]]:
    """Rows of train_log.csv as floats; blank cells (no validation at that step) become NaN."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: _float(v) for k, v in r.items() if k})
    return rows


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def read_records(path: Path) -> list[dict]:
    recs = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{i}: not a JSON line ({e.msg}); expected one episode record per line"
                ) from None
    return recs


def read_demo_paths(extracted_dir: Path, per_task: int = 5) -> dict[str, list[np.ndarray]]:
    """First few demo eef paths (xyz, metres) per task name, from the extract stage's flat arrays."""
    ee = np.load(extracted_dir / "ee_pos.npy", mmap_mode="r")
    episodes = json.loads((extracted_dir / "episodes.json").read_text())
    names = {t["task_id"]: t["name"] for t in json.loads((extracted_dir / "tasks.json").read_text())}
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for e in episodes:
        name = names.get(e["task_id"], str(e["task_id"]))
        if len(out[name]) < per_task:
            out[name].append(np.asarray(ee[e["start"] : e["end"], :3], dtype=np.float64))
    return dict(out)


def git_info(cwd: Path | None = None) -> dict[str, str]:
    """HEAD sha, branch and whether tracked files differ, so a report names the code that produced it."""

    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
        return res.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return {"rev": "unknown"}
    return {"rev": sha[:12] + ("-dirty" if dirty else ""), "sha": sha, "branch": branch, "dirty": str(dirty)}


def load_inputs(
    scaled_dir: Path,
    eval_dir: Path,
    extracted_dir: Path | None = None,
    metrics_dir: Path = Path("metrics"),
    params_file: Path = Path("params.yaml"),
    lock_file: Path = Path("dvc.lock"),
    repo_dir: Path | None = None,
) -> Inputs:
    """Read the documented inputs (missing -> ReportInputError naming the stage) and the optional ones."""
    metrics_dir, eval_dir = Path(metrics_dir), Path(eval_dir)
    metrics = {p.stem: json.loads(p.read_text()) for p in sorted(metrics_dir.glob("*.json"))}
    for name in REQUIRED_METRICS:
        if name not in metrics:
            _need(metrics_dir / f"{name}.json", name)
    warnings: list[str] = []
    train_log = read_train_log(_need(metrics_dir / "train_log.csv", "train"))
    histograms = json.loads(_need(Path(scaled_dir) / "histograms.json", "scale").read_text())
    records = read_records(_need(eval_dir / "records.jsonl", "eval"))
    videos = sorted((eval_dir / "videos").glob("*.mp4")) if (eval_dir / "videos").is_dir() else []
    demo_paths: dict[str, list[np.ndarray]] = {}
    if extracted_dir is not None:
        try:
            demo_paths = read_demo_paths(Path(extracted_dir))
        except (OSError, KeyError, ValueError) as e:
            warnings.append(f"demo paths unavailable ({extracted_dir}: {e}); executed paths are shown alone")
    params = yaml.safe_load(params_file.read_text()) if params_file.exists() else {}
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else None
    if lock is None:
        warnings.append(f"{lock_file} not found: stage hashes unavailable (run through `dvc repro`)")
    return Inputs(
        metrics=metrics,
        train_log=train_log,
        histograms=histograms,
        records=records,
        videos=videos,
        eval_dir=eval_dir,
        params=params or {},
        demo_paths=demo_paths,
        lock=lock,
        git=git_info(repo_dir),
        warnings=warnings,
    )


# ------------------------------------------------------------------------------------------- statistics
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
        steps_mean=_num(mean_s),
        steps_median=_num(med_s),
        clip_rate=_num(m.get("mean_clip_rate", m.get("clip_rate"))),
        out_of_range_rate=_num(m.get("mean_out_of_range_rate", m.get("out_of_range_rate"))),
        inference_ms=_num(m.get("mean_inference_ms", m.get("inference_ms"))),
        failures={k: int(v) for k, v in (m.get("failures") or {}).items() if v},
    )


def _num(x: Any) -> float | None:
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


# ------------------------------------------------------------------------------------------------ plots
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_b64(fig: Any, dpi: int = 90) -> str:
    """Render and close a figure; base64 PNG for a data: URI."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _short(name: str, n: int = 48) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def fig_success(rows: list[RateRow], title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.28 * len(rows) + 1.0)))
    y = np.arange(len(rows))[::-1]
    rates = np.array([r.rate for r in rows])
    lo = np.array([r.interval[0] for r in rows])
    hi = np.array([r.interval[1] for r in rows])
    ax.barh(y, rates, color="#4c78a8", height=0.6)
    err = np.maximum(0.0, [rates - lo, hi - rates])  # Wilson bounds meet the rate at 0 and 1 up to fp noise
    ax.errorbar(rates, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_yticks(y, [_short(r.name) for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("success rate (bars: Wilson 95% interval)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return png_b64(fig)


def fig_training(log: list[dict[str, float]]) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))

    def series(col: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [
            (r["step"], r[col])
            for r in log
            if math.isfinite(r.get("step", math.nan)) and math.isfinite(r.get(col, math.nan))
        ]
        return (
            (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
            if pts
            else (np.zeros(0), np.zeros(0))
        )

    ax = axes[0]
    for col, style in (("loss", "-"), ("val_mse", "o-")):
        x, yv = series(col)
        if len(x):
            ax.plot(x, yv, style, label="train loss" if col == "loss" else "validation MSE (raw units)", ms=4)
    if any(len(series(c)[0]) and (series(c)[1] > 0).all() for c in ("loss", "val_mse")):
        ax.set_yscale("log")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    for ax, col, title in (
        (axes[1], "lr", "learning rate"),
        (axes[2], "samples_per_s", "throughput (samples/s)"),
    ):
        x, yv = series(col)
        if len(x):
            ax.plot(x, yv, color="C2" if col == "lr" else "C3")
        else:
            ax.text(0.5, 0.5, f"no {col} logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return png_b64(fig)


def _absmax(stats: dict[str, dict]) -> tuple[list[str], np.ndarray]:
    names = list(stats)
    return names, np.array([max(abs(stats[n]["min"]), abs(stats[n]["max"])) for n in names])


def fig_action_magnitude(scale_m: dict) -> str:
    """max |a| per dimension at each step of the transform, log scale, so a 20x imbalance is visible."""
    plt = _plt()
    stages = [
        ("actions_raw", "raw LIBERO action (OSC units)"),
        ("actions_physical", f"physical ({scale_m.get('pos_unit')}, {scale_m.get('rot_repr')})"),
        ("actions_model", f"model input ({scale_m.get('norm')})"),
    ]
    stages = [(k, t) for k, t in stages if isinstance(scale_m.get(k), dict)]
    fig, axes = plt.subplots(1, len(stages) + 1, figsize=(5 * (len(stages) + 1), 3.8))
    for ax, (key, title) in zip(axes, stages, strict=False):
        names, mags = _absmax(scale_m[key])
        colors = [
            "#e45756" if n in ("x", "y", "z") else "#9d755d" if n == "gripper" else "#4c78a8" for n in names
        ]
        ax.bar(range(len(names)), np.maximum(mags, 1e-12), color=colors)
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("max |value| (training split)")
        ax.grid(axis="y", alpha=0.3)
    ax = axes[-1]
    by_unit = scale_m.get("pos_rot_ratio_by_unit") or {}
    units = [u for u in UNITS if u in by_unit] + [u for u in by_unit if u not in UNITS]
    chosen = str(scale_m.get("pos_unit"))
    vals = [float(by_unit[u]) for u in units]
    ax.bar(units, vals, color=["#f58518" if u == chosen else "#bab0ac" for u in units])
    ax.axhline(1.0, color="black", lw=1, ls="--")
    ax.axhspan(0.2, 5, color="#54a24b", alpha=0.12, label="comparable (0.2-5)")
    ax.set_yscale("log")
    ax.set_title(f"max|pos| / max|rot| by position unit (chosen: {chosen})", fontsize=10)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return png_b64(fig)


def fig_histograms(hist: dict) -> str | None:
    """Per-dimension distributions before (raw, physical) and after (model) scaling."""
    plt = _plt()
    rows = [(k, [n for n in hist if n.startswith(k + "/")]) for k in ("raw", "physical", "model")]
    rows = [(k, sorted(v, key=lambda s: int(s.split("/")[1]))) for k, v in rows if v]
    if not rows:
        return None
    ncol = max(len(v) for _, v in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.9 * ncol, 1.7 * len(rows)), squeeze=False)
    names = {
        "raw": hist.get("raw_names") or [],
        "physical": hist.get("action_names") or [],
        "model": hist.get("action_names") or [],
    }
    for i, (kind, keys) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            if j >= len(keys):
                ax.axis("off")
                continue
            h = hist[keys[j]]
            edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
            ax.stairs(counts, edges, fill=True, color="#4c78a8" if kind == "model" else "#72b7b2")
            dim = int(keys[j].split("/")[1])
            nm = names[kind][dim] if dim < len(names[kind]) else str(dim)
            ax.set_title(f"{kind} {nm}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
    fig.tight_layout()
    return png_b64(fig, dpi=80)


def pick_path_episodes(records: list[dict], n: int) -> list[dict]:
    """Alternate successes and failures (with a recorded eef path), spread over tasks, so both behaviours
    and more than one scene are shown."""
    with_path = [r for r in records if _path(r) is not None]
    pools = [[r for r in with_path if r.get("success")], [r for r in with_path if not r.get("success")]]
    out: list[dict] = []
    shown: Counter[str] = Counter()
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                best = min(range(len(pool)), key=lambda i: shown[str(pool[i].get("task"))])
                rec = pool.pop(best)
                shown[str(rec.get("task"))] += 1
                out.append(rec)
    return out


def _path(rec: dict) -> np.ndarray | None:
    p = rget(rec, _K_PATH)
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a[:, :3] if a.ndim == 2 and a.shape[1] >= 3 and len(a) else None


def nearest_demo(path: np.ndarray, demos: list[np.ndarray]) -> np.ndarray | None:
    """The demo whose start is closest to the episode's start: the most comparable reference."""
    if not demos:
        return None
    return min(demos, key=lambda d: float(np.linalg.norm(d[0] - path[0])))


def fig_paths(episodes: list[dict], demo_paths: dict[str, list[np.ndarray]]) -> str | None:
    plt = _plt()
    if not episodes:
        return None
    fig, axes = plt.subplots(len(episodes), 3, figsize=(13, 3.6 * len(episodes)), squeeze=False)
    for i, rec in enumerate(episodes):
        ex = _path(rec)
        demo = nearest_demo(ex, demo_paths.get(str(rec.get("task")), []))
        status = "success" if rec.get("success") else f"failure: {failure_label(rec)}"
        for j, (a, b, lbl) in enumerate(((0, 1, "xy"), (0, 2, "xz"), (1, 2, "yz"))):
            ax = axes[i][j]
            if demo is not None:
                ax.plot(demo[:, a], demo[:, b], color="#54a24b", lw=1.5, label="demo (nearest start)")
            ax.plot(
                ex[:, a],
                ex[:, b],
                color="#e45756" if not rec.get("success") else "#4c78a8",
                lw=1.5,
                label="executed",
            )
            ax.plot(ex[0, a], ex[0, b], "ko", ms=4, label="start")
            ax.plot(ex[-1, a], ex[-1, b], "kx", ms=6, label="end")
            ax.set_xlabel(f"{lbl[0]} (m)")
            ax.set_ylabel(f"{lbl[1]} (m)")
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_title(
                    f"{_short(str(rec.get('task')), 40)} init {rget(rec, _K_INIT, '?')} "
                    f"seed {rec.get('seed', '?')}\n{status}",
                    fontsize=9,
                    loc="left",
                )
                ax.legend(fontsize=7)
    fig.tight_layout()
    return png_b64(fig, dpi=80)


def fig_failures(records: list[dict]) -> str | None:
    plt = _plt()
    failed = [r for r in records if not r.get("success")]
    if not failed:
        return None
    tasks = sorted({str(r.get("task")) for r in failed})
    labels = list(FAILURE_LABELS) + sorted({failure_label(r) for r in failed} - set(FAILURE_LABELS))
    counts = {
        lab: [sum(1 for r in failed if r.get("task") == t and failure_label(r) == lab) for t in tasks]
        for lab in labels
    }
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.28 * len(tasks) + 1.2)))
    left = np.zeros(len(tasks))
    y = np.arange(len(tasks))[::-1]
    for k, lab in enumerate(labels):
        c = np.array(counts[lab], dtype=float)
        if c.sum():
            ax.barh(y, c, left=left, label=lab, color=f"C{k}", height=0.6)
            left += c
    ax.set_yticks(y, [_short(t) for t in tasks], fontsize=8)
    ax.set_xlabel("failed episodes")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("failures by label")
    return png_b64(fig)


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


def video_html(path: Path, out_dir: Path, budget: VideoBudget | None = None) -> str:
    """Embedded (<2 MB, within the page's budget) so the page is self-contained, else a relative link."""
    size = path.stat().st_size
    embed = (budget or VideoBudget()).take(size)
    if embed:
        src = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = html.escape(os.path.relpath(path, out_dir))
    return (
        f'<figure class="video"><video controls muted loop preload="metadata" width="256" src="{src}">'
        f"</video><figcaption>{html.escape(path.name)} ({size / 1e6:.2f} MB"
        f"{'' if embed else ', linked'})</figcaption></figure>"
    )


# ----------------------------------------------------------------------------------------------- tables
def _fmt(x: Any, spec: str = ".3f") -> str:
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
        f"{_fmt(r.steps_mean, '.1f')} / {_fmt(r.steps_median, '.0f')}",
        _fmt(r.clip_rate, ".2%"),
        _fmt(r.out_of_range_rate, ".2%"),
        _fmt(r.inference_ms, ".1f"),
    ]


def overall_row(records: list[dict], rows: list[RateRow]) -> RateRow:
    """Pooled over all episodes (not a mean of task rates), so the interval reflects every episode."""
    if records:
        return rate_row("overall", records)
    return RateRow("overall", sum(r.n for r in rows), sum(r.successes for r in rows))


def html_table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def esc(c: Any) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


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


def _scalars(d: dict, limit: int = 40) -> list[list[str]]:
    flat = []

    def walk(x: Any, key: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(x, (int, float, str, bool)) or x is None:
            flat.append([key, _fmt(x, ".4g") if isinstance(x, float) else str(x)])

    walk(d, "")
    return flat[:limit]


# ------------------------------------------------------------------------------------------------ build
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222}
h1{margin-bottom:4px} h2{border-bottom:2px solid #4c78a8;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top} th{background:#eef3f8}
tbody tr:nth-child(even){background:#fafafa} img{max-width:100%;border:1px solid #eee}
.callout{background:#fff6e5;border-left:5px solid #f58518;padding:8px 12px;margin:12px 0}
.ok{background:#eaf6ea;border-left-color:#54a24b} .warn{background:#fdecea;border-left:5px solid #e45756;
padding:8px 12px} .videos{display:flex;flex-wrap:wrap;gap:12px} figure.video{margin:0}
figcaption{font-size:11px;color:#555} nav a{margin-right:12px}
pre{background:#f6f8fa;padding:8px;font-size:12px}
.kpi{display:flex;gap:16px;flex-wrap:wrap}.kpi div{background:#eef3f8;padding:8px 14px;border-radius:6px}
.kpi b{display:block;font-size:20px}
"""


def _img(b64: str | None, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">' if b64 else ""


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


def _ratio_text(scale_m: dict) -> tuple[str, bool]:
    chosen = scale_m.get("pos_unit")
    r = _num(scale_m.get("pos_rot_ratio"))
    by_unit = scale_m.get("pos_rot_ratio_by_unit") or {}
    parts = [
        f"Chosen position unit <b>{html.escape(str(chosen))}</b> with rotation as "
        f"<b>{html.escape(str(scale_m.get('rot_repr')))}</b>: "
        f"max|pos| / max|rot| = <b>{_fmt(r, '.3g')}</b> ({ratio_verdict(r)})."
    ]
    others = [
        f"{u}: {_fmt(_num(by_unit.get(u)), '.3g')} ({ratio_verdict(_num(by_unit.get(u)))})"
        for u in UNITS
        if u in by_unit
    ]
    if others:
        parts.append("Same data in other units — " + "; ".join(others) + ".")
    parts.append(
        "The seed's failure: positions in metres were ~20x smaller than the rotation values "
        "(ratio ~0.05), the model's outputs left the training range and were clipped; the fix, "
        "centimetres, brings the ratio to order 1."
    )
    ok = r is not None and 0.2 <= r <= 5
    return " ".join(parts), ok


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
    exec_p = inputs.params.get("exec") or {}
    lo, hi = overall.interval
    ratio_html, ratio_ok = _ratio_text(scale_m)
    log = [r for r in inputs.train_log if math.isfinite(r.get("loss", math.nan))]
    vals = [r for r in inputs.train_log if math.isfinite(r.get("val_mse", math.nan))]
    best_val = min(vals, key=lambda r: r["val_mse"]) if vals else None

    # failures: grouped by label, with videos where they exist
    failed = [r for r in inputs.records if not r.get("success")]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in failed:
        groups[failure_label(r)].append(r)
    used: set[Path] = set()
    budget = VideoBudget()
    fail_html = []
    for lab in [*FAILURE_LABELS, *sorted(set(groups) - set(FAILURE_LABELS))]:
        recs = groups.get(lab, [])
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
                    _fmt(_num(r.get("clip_rate")), ".2%"),
                    str(r.get("error") or "")[:200],
                    "below" if v else "",
                ]
            )
            if v is not None and v not in used:
                used.add(v)
                vids.append(video_html(v, out_dir, budget))
        more = len(recs) - MAX_FAILURES_LISTED
        fail_html.append(
            f"<h3>{html.escape(lab)} — {len(recs)} episode(s)</h3>"
            + html_table(["task", "episode", "init", "seed", "steps", "clip rate", "error", "video"], rows)
            + (f"<p>… and {more} more.</p>" if more > 0 else "")
            + (
                f'<div class="videos">{"".join(vids)}</div>'
                if vids
                else "<p><i>no video for these episodes</i></p>"
            )
        )
    other_videos = [v for v in inputs.videos if v not in used]

    params_html = "".join(
        f"<details{' open' if k in ('exec', 'scale') else ''}><summary><b>{html.escape(k)}</b></summary>"
        f"<pre>{html.escape(yaml.safe_dump(v, sort_keys=False))}</pre></details>"
        for k, v in inputs.params.items()
    )
    lock_rows = lock_summary(inputs.lock)
    git = inputs.git
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("success", "success"),
            ("training", "training"),
            ("units", "units & scaling"),
            ("paths", "paths"),
            ("failures", "failures"),
            ("provenance", "params & provenance"),
        )
    )
    kpi = (
        f'<div class="kpi"><div>overall success<b>{overall.rate:.1%}</b>'
        f"[{lo:.1%}, {hi:.1%}] Wilson 95%</div>"
        f"<div>episodes<b>{overall.n}</b>{len(tasks)} task(s)</div>"
        f"<div>exec.steps / stride<b>{exec_p.get('steps', '–')} / {exec_p.get('stride', '–')}</b>"
        f"temporal ensemble: {exec_p.get('temporal_ensemble', '–')}</div>"
        f"<div>pos/rot ratio<b>{_fmt(_num(scale_m.get('pos_rot_ratio')), '.3g')}</b>unit "
        f"{html.escape(str(scale_m.get('pos_unit')))}</div>"
        f"<div>final train loss<b>{_fmt(log[-1]['loss'] if log else None, '.4g')}</b>"
        f"step {int(log[-1]['step']) if log else '–'}</div>"
        f"<div>clip rate<b>{_fmt(overall.clip_rate, '.2%')}</b>mean over episodes</div>"
        f"<div>git<b>{html.escape(git.get('rev', 'unknown'))}</b>"
        f"{html.escape(git.get('branch', ''))}</div></div>"
    )
    warn_html = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in warnings)
    train_scalars = _scalars({k: v for k, v in train_m.items() if k != "val_mse_dim"})
    val_dims = train_m.get("val_mse_dim") if isinstance(train_m.get("val_mse_dim"), dict) else {}

    body = f"""
<h1>LIBERO diffusion-policy pipeline report</h1>
<p>git {html.escape(git.get("sha", git.get("rev", "unknown")))} · pipeline params below · generated by the
<code>report</code> stage</p>
<nav>{nav}</nav>
{kpi}
{warn_html}
<h2 id="success">Success per task</h2>
<p>Wilson 95% score intervals; steps to success over successful episodes; clip rate = fraction of executed
actions clipped to LIBERO's [-1, 1] (mean over episodes); out of range = model outputs outside the training
range.</p>
{html_table(RATE_HEADERS, [rate_cells(r) for r in [*tasks, overall]], "rates")}
{_img(images["success"], "success rate per task")}
{
        (
            "<h3>Per family</h3>"
            + html_table(RATE_HEADERS, [rate_cells(r) for r in fams])
            + _img(images["families"], "success per family")
        )
        if fams
        else ""
    }
<h2 id="training">Training</h2>
<p>Final train loss {_fmt(log[-1]["loss"] if log else None, ".4g")};
best validation MSE {_fmt(best_val["val_mse"] if best_val else None, ".4g")} at step
{int(best_val["step"]) if best_val else "–"}; final learning rate
{_fmt(log[-1].get("lr") if log else None, ".3g")}.</p>
{_img(images["training"], "training and validation loss, learning rate")}
<details><summary>metrics/train.json</summary>{html_table(["key", "value"], train_scalars)}
{html_table(["dim", "val MSE"], [[k, _fmt(_num(v), ".4g")] for k, v in val_dims.items()]) if val_dims else ""}
</details>
<h2 id="units">Action magnitudes before and after scaling</h2>
<div class="callout {"ok" if ratio_ok else ""}">{ratio_html}</div>
{_img(images["magnitude"], "action magnitude per dimension")}
{_img(images["histograms"], "action histograms raw / physical / model")}
<h2 id="paths">Executed end-effector path vs demonstration</h2>
<p>Three projections per episode; the demo is the one of the same task whose start is nearest.
{"" if inputs.demo_paths else "<b>Demo arrays not available: executed paths only.</b>"}</p>
{_img(images["paths"], "end-effector paths") or "<p><i>no episode carries an eef path</i></p>"}
<h2 id="failures">Failure analysis</h2>
<p>{len(failed)} of {overall.n} episodes failed.
{", ".join(f"{k}: {v}" for k, v in Counter(failure_label(r) for r in failed).most_common())}</p>
{_img(images["failures"], "failures by label")}
{"".join(fail_html)}
{
        (
            '<h3>Other videos</h3><div class="videos">'
            + "".join(video_html(v, out_dir, budget) for v in other_videos)
            + "</div>"
        )
        if other_videos
        else ""
    }
<h2 id="provenance">Params and provenance</h2>
<p>git revision <code>{html.escape(git.get("rev", "unknown"))}</code>
(branch {html.escape(git.get("branch", "?"))}).</p>
{html_table(LOCK_HEADERS, lock_rows) if lock_rows else "<p><i>no dvc.lock</i></p>"}
{params_html}
"""
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>LIBERO DP report</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )

    md = [
        "# LIBERO diffusion-policy pipeline report",
        "",
        f"git `{git.get('rev', 'unknown')}` · exec.steps={exec_p.get('steps')} "
        f"stride={exec_p.get('stride')} · full report with plots and videos: `index.html`",
        "",
        f"**Overall success {overall.rate:.1%} ({overall.successes}/{overall.n}), "
        f"Wilson 95% [{lo:.1%}, {hi:.1%}]**",
        "",
        *(f"> warning: {w}" for w in warnings),
        "",
        "## Success per task",
        "",
        md_table(RATE_HEADERS, [rate_cells(r) for r in [*tasks, overall]]),
        "",
    ]
    if fams:
        md += ["## Per family", "", md_table(RATE_HEADERS, [rate_cells(r) for r in fams]), ""]
    by_unit = scale_m.get("pos_rot_ratio_by_unit") or {}
    md += [
        "## Units",
        "",
        re.sub(r"</?b>", "**", ratio_html),
        "",
        md_table(
            ["unit", "max|pos| / max|rot|", "reading"],
            [
                [
                    u + (" (chosen)" if u == str(scale_m.get("pos_unit")) else ""),
                    _fmt(_num(v), ".3g"),
                    ratio_verdict(_num(v)),
                ]
                for u, v in by_unit.items()
            ],
        ),
        "",
        "## Training",
        "",
        f"final loss {_fmt(log[-1]['loss'] if log else None, '.4g')}, best val MSE "
        f"{_fmt(best_val['val_mse'] if best_val else None, '.4g')} at step "
        f"{int(best_val['step']) if best_val else '–'}",
        "",
        "## Failures",
        "",
        md_table(["label", "episodes"], Counter(failure_label(r) for r in failed).most_common())
        if failed
        else "no failed episodes",
        "",
        "## Provenance",
        "",
        f"git `{git.get('sha', git.get('rev'))}`",
        "",
        md_table(LOCK_HEADERS, lock_rows) if lock_rows else "no dvc.lock",
        "",
        "## Params",
        "",
        "```yaml",
        yaml.safe_dump(inputs.params, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return Report(
        html=page,
        markdown="\n".join(md),
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
