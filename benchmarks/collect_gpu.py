"""Collection on a many-core GPU host -> the "collect" section of benchmarks/results/libero90_gpu.json.

The same code path as `dvc repro collect`: libero_dp.collect with one worker process per core; each worker
runs expert attempts state-only, then renders each kept demo from its stored states through sim.render_views
(EGL on the GPU; worker w renders on GPU w mod #GPUs unless MUJOCO_EGL_DEVICE_ID is set) and writes it in the
official layout. Measures demos/h and rendered frames/s, next to this project's 2-core figures
(benchmarks/results/collect_scale.json).

    python benchmarks/collect_gpu.py --tasks libero_90:9 libero_90:20 libero_90:46 libero_90:0 --demos 8 \\
        --out benchmarks/results/libero90_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def host() -> dict[str, Any]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True)
        gpus = [x.strip() for x in out.stdout.decode().splitlines() if x.strip()]
    except OSError:
        gpus = []
    return {"cpus": os.cpu_count(), "gpus": gpus, "platform": platform.platform(), "mujoco_gl": "egl"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--tasks", nargs="+", default=["libero_90:9", "libero_90:20", "libero_90:46", "libero_90:0"]
    )
    ap.add_argument("--demos", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "libero90_gpu.json")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from collect_scale import run  # the 2-core benchmark's measurement, unchanged

    r = run(args.tasks, args.demos, args.workers)
    r["rendered_frames_per_s_per_worker"] = r["images_per_s_per_worker"] / 2  # two cameras per frame
    r["rendered_frames_per_s_host"] = r["demos_per_hour"] / 3600 * r["frames_per_demo"]
    base_path = ROOT / "benchmarks" / "results" / "collect_scale.json"
    section: dict[str, Any] = {"host": host(), "tasks": args.tasks, "demos_per_task": args.demos, **r}
    if base_path.is_file():
        base = json.loads(base_path.read_text())["workers"]["runs"]
        best = max(base, key=lambda x: x["demos_per_hour"])
        section["vs_2core_machine"] = {
            "baseline": f"collect_scale.json, {best['workers']} workers on 2 CPU cores (llvmpipe)",
            "baseline_demos_per_hour": best["demos_per_hour"],
            "demos_per_hour_ratio": r["demos_per_hour"] / best["demos_per_hour"],
            "baseline_frames_per_s_per_worker": best["images_per_s_per_worker"] / 2,
            "render_per_worker_ratio": r["images_per_s_per_worker"] / best["images_per_s_per_worker"],
        }
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    doc["collect"] = section
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps({k: v for k, v in section.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
