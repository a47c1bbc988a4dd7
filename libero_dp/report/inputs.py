"""The report's inputs: the stages' documented outputs, parsed, plus the optional ones (demo paths, dvc.lock,
git), so that rendering is a pure function of an `Inputs`.

Inputs (the stages' documented outputs): metrics/*.json, metrics/train_log.csv,
<scale.out_dir>/histograms.json, <eval.out_dir>/records.jsonl and videos/*.mp4.
Optional: the extracted demo arrays (demo paths), dvc.lock, git.
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REQUIRED_METRICS = ("eval", "scale", "train")


class ReportInputError(FileNotFoundError):
    """A documented input of the report is missing; the message names the stage that writes it."""


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
