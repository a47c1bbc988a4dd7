"""The summary written to metrics/eval.json: per-task, per-family and overall success with Wilson intervals,
action clipping, failure labels and timing."""

from __future__ import annotations

from statistics import mean, median
from typing import Any

from libero_dp import sim
from libero_dp.bddl import family_of
from libero_dp.config import EvalParams, ExecParams
from libero_dp.evaluate.episode import FAILURE_LABELS
from libero_dp.metrics import rate_summary


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(mean(xs)) if xs else None


def summarise(
    ep: EvalParams,
    xp: ExecParams,
    tasks: list[sim.TaskSpec],
    records: list[dict],
    new: list[dict],
    t_episodes: float,
    wall_s: float,
    key: str,
    image_size: int,
    videos: list[str],
) -> dict[str, Any]:
    """Per-task and overall success with Wilson intervals, action clipping, failure labels, timing."""
    per_task: dict[str, Any] = {}
    for task in tasks:
        label = task.label
        rs = [r for r in records if r["task"] == label]
        succ = [r for r in rs if r["success"]]
        labels = {lab: sum(r.get("failure") == lab for r in rs) for lab in FAILURE_LABELS}
        sts = [r["steps_to_success"] for r in succ]
        per_task[label] = {
            **rate_summary(len(succ), len(rs)),
            "suite": task.suite,
            "family": family_of(task),
            "mean_steps_to_success": _mean(sts),
            "median_steps_to_success": float(median(sts)) if sts else None,
            "mean_clip_rate": _mean([r["clip_rate"] for r in rs]),
            "mean_out_of_range_rate": _mean([r["out_of_range_rate"] for r in rs]),
            "mean_inference_ms": _mean([r["inference_ms"] for r in rs]),
            "errors": sum(bool(r["error"]) for r in rs),
            "failures": labels,
        }
    n = len(records)
    succ_n = sum(r["success"] for r in records)
    steps_new = sum(r["steps"] + (r["wait_steps"] if r["steps"] else 0) for r in new)
    overall = {
        **rate_summary(succ_n, n),
        "mean_task_success_rate": _mean([t["success_rate"] for t in per_task.values()]),
        "errors": sum(bool(r["error"]) for r in records),
        "mean_clip_rate": _mean([r["clip_rate"] for r in records]),
        "mean_out_of_range_rate": _mean([r["out_of_range_rate"] for r in records]),
        "mean_inference_ms": _mean([r["inference_ms"] for r in records]),
        "failures": {lab: sum(r.get("failure") == lab for r in records) for lab in FAILURE_LABELS},
    }
    families: dict[str, Any] = {}
    for fam in sorted({t["family"] for t in per_task.values()}):
        ts = [(name, t) for name, t in per_task.items() if t["family"] == fam]
        fr = [r for r in records if r["task"] in dict(ts)]
        families[fam] = {
            **rate_summary(sum(r["success"] for r in fr), len(fr)),
            "tasks": len(ts),
            "mean_task_success_rate": _mean([t["success_rate"] for _, t in ts]),
            "tasks_at_least_90pct": sum(t["success_rate"] >= 0.9 for _, t in ts),
            "failures": {lab: sum(r.get("failure") == lab for r in fr) for lab in FAILURE_LABELS},
        }
    suites: dict[str, Any] = {}
    for su in sorted({t.suite for t in tasks}):
        labels = {t.label for t in tasks if t.suite == su}
        sr = [r for r in records if r["task"] in labels]
        suites[su] = {**rate_summary(sum(r["success"] for r in sr), len(sr)), "tasks": len(labels)}
    timing = {
        "wall_s": wall_s,
        "episodes_run": len(new),
        "episodes_cached": n - sum(not r.get("grounding") for r in new),  # of the protocol's episodes
        "episodes_per_hour": 3600.0 * len(new) / t_episodes if new and t_episodes > 0 else None,
        "env_steps_per_s": steps_new / t_episodes if new and t_episodes > 0 else None,
        "mean_episode_wall_s": _mean([r["wall_s"] for r in new]),
        "renders_per_step": (sum(r["renders"] for r in new) / steps_new) if steps_new else None,
        "workers": ep.workers,
    }
    return {
        "policy": ep.policy,
        "overall": overall,
        "families": families,
        "suites": suites,
        "tasks": per_task,
        "exec": xp.model_dump(),
        "eval": {k: v for k, v in ep.model_dump().items() if k != "out_dir"},
        "image_size": image_size,
        "timing": timing,
        "cache_key": key,
        "videos": videos,
    }
