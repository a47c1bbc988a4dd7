"""Closed-loop evaluation throughput on this machine: env steps/s and episodes/hour, 1 vs 2 Ray workers,
on-demand vs every-step rendering, with the scripted expert (no inference cost, so the numbers isolate the
simulator and the renderer).

    .venv/bin/python benchmarks/eval_throughput.py [--episodes 4] [--workers 1 2]

Each configuration runs the same episodes (drawer task, official init states 0..n-1) from an empty cache and
reports evaluate()'s own timing (episode phase: actor start-up and env construction included) and the
per-episode means. Writes benchmarks/results/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from libero_dp.config import EvalParams, ExecParams
from libero_dp.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


def run_config(task: str, episodes: int, workers: int, render: str, max_steps: int) -> dict:
    ep = EvalParams(
        policy="expert",
        tasks=[task],
        episodes_per_task=episodes,
        workers=workers,
        render=render,
        max_steps=max_steps,
        videos_success=0,
        videos_failure=0,
    )
    with tempfile.TemporaryDirectory(prefix="evalbench") as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        m = evaluate(
            ep,
            ExecParams(),
            t / "models",
            t / "stats.json",
            t / "demos",
            t / "out",
            t / "cache",
            progress=False,
        )
        wall = time.perf_counter() - t0
        recs = [json.loads(x) for x in (t / "out" / "records.jsonl").read_text().splitlines()]
    steps = sum(r["steps"] + r["wait_steps"] for r in recs)
    busy = sum(r["wall_s"] for r in recs)
    return {
        "workers": workers,
        "render": render,
        "episodes": len(recs),
        "successes": sum(r["success"] for r in recs),
        "env_steps": steps,
        "renders": sum(r["renders"] for r in recs),
        "env_steps_per_s": m["timing"]["env_steps_per_s"],
        "episodes_per_hour": m["timing"]["episodes_per_hour"],
        "mean_episode_wall_s": m["timing"]["mean_episode_wall_s"],
        # per worker, excluding Ray start-up and idle time: steps over the time actors spent in episodes
        "env_steps_per_s_per_busy_worker": steps / busy if busy else None,
        "render_s_per_render": (sum(r["render_s"] for r in recs) / max(1, sum(r["renders"] for r in recs))),
        "total_wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="libero_90:0")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--renders", nargs="+", default=["on_demand", "every_step"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_throughput.json")
    a = ap.parse_args()
    results = []
    load_before = os.getloadavg()
    for render in a.renders:
        for w in a.workers:
            r = run_config(a.task, a.episodes, w, render, a.max_steps)
            print(json.dumps(r))
            results.append(r)
    out = {
        "what": "expert policy on the official init states through evaluate(); Ray actors; both 128x128 "
        "cameras rendered via sim.render_views when rendering",
        "task": a.task,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "note": "shared 2-core machine; other jobs ran meanwhile: compare within this file",
        },
        "results": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
