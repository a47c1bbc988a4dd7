"""Collection at scale on this machine -> benchmarks/results/collect_scale.json.

1. workers: the same demos (fresh resets, 128x128 images) collected with 1 and with 2 worker processes from
   an empty cache: wall time, state-only seconds per episode, render seconds per demo, images rendered per
   second per worker, disk per demo.
2. libero_90: the measured build of the whole libero_90 dataset at N demos per task (the collect metrics of
   `make data-libero90 N=...`, read from a DVC experiment or a metrics file), and its projection to 10 and
   50 demos per task from the measured per-demo cost.

    .venv/bin/python benchmarks/collect_scale.py [--tasks libero_90:9 libero_90:20] [--demos 2]
        [--suite-metrics <collect.json of the libero_90 build>]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

from libero_dp.collect import collect
from libero_dp.config import CollectParams

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "collect_scale.json"


def run(tasks: list[str], demos: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="collectscale") as tmp:
        t = Path(tmp)
        p = CollectParams(
            tasks=tasks,
            demos_per_task=demos,
            expert_check_episodes=0,
            workers=workers,
            max_steps=600,
            on_task_failure="skip",
            out_dir=str(t / "demos"),
        )
        t0 = time.perf_counter()
        m = collect(p, cache_root=t / "cache")
        wall = time.perf_counter() - t0
    per = list(m["tasks"].values())
    n = m["num_demos"]
    frames = sum(v["mean_episode_length"] * v["demos"] for v in per)
    render_s = sum(v["mean_render_s_per_demo"] * v["demos"] for v in per)
    return {
        "workers": workers,
        "demos": n,
        "wall_s": wall,
        "demos_per_hour": 3600.0 * n / wall,
        "state_only_s_per_attempt": mean(v["mean_wall_s_per_attempt"] for v in per),
        "render_s_per_demo": render_s / n,
        "frames_per_demo": frames / n,
        "images_per_s_per_worker": 2 * frames / render_s,  # two cameras per frame
        "disk_bytes_per_demo": m["disk_bytes"] / n,
    }


def suite_summary(path: Path) -> dict[str, Any]:
    m = json.loads(path.read_text())
    per = list(m["tasks"].values())
    n = m["num_demos"]
    per_demo_s = m["wall_s"] / n
    return {
        "metrics": str(path),
        "tasks_built": len(per),
        "tasks_skipped": m.get("skipped", {}),
        "demos": n,
        "wall_s": m["wall_s"],
        "disk_bytes": m["disk_bytes"],
        "disk_bytes_per_demo": m["disk_bytes"] / n,
        "state_only_s_per_attempt": mean(v["mean_wall_s_per_attempt"] for v in per),
        "render_s_per_demo": mean(v["mean_render_s_per_demo"] for v in per),
        "attempts_per_demo": sum(v["attempts"] for v in per) / n,
        "projection": {
            f"{k}_demos_per_task": {
                "hours_same_workers": per_demo_s * k * len(per) / 3600.0,
                "disk_gb": m["disk_bytes"] / n * k * len(per) / 1e9,
            }
            for k in (10, 50)
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["libero_90:9", "libero_90:20"])
    ap.add_argument("--demos", type=int, default=2)
    ap.add_argument("--skip-workers", action="store_true")
    ap.add_argument("--suite-metrics", type=Path, default=None)
    a = ap.parse_args()
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    out: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "loadavg_before": os.getloadavg(),
        }
    }
    if not a.skip_workers:
        runs = [run(a.tasks, a.demos, w) for w in (1, 2)]
        for r in runs:
            print(json.dumps(r))
        out["workers"] = {"tasks": a.tasks, "demos_per_task": a.demos, "runs": runs}
        out["worker_speedup"] = runs[1]["demos_per_hour"] / runs[0]["demos_per_hour"]
        out["state_only_vs_render"] = runs[0]["render_s_per_demo"] / runs[0]["state_only_s_per_attempt"]
    else:
        for k in ("workers", "worker_speedup", "state_only_vs_render"):
            if k in old:
                out[k] = old[k]
    if a.suite_metrics:
        out["libero_90"] = suite_summary(a.suite_metrics)
    elif "libero_90" in old:
        out["libero_90"] = old["libero_90"]
    out["machine"]["loadavg_after"] = os.getloadavg()
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
