"""The execution-length lesson at scale, on a fixed checkpoint: success against exec.steps from the files that
`make eval-libero90 TASKS=... EPISODES=n EXEC_STEPS=s` wrote (metrics/checkpoints/NAME_steps<s>.json, the
same tasks and official init states for every s), with Wilson intervals, per task and overall.

    for s in 8 16 32 64; do make eval-libero90 TASKS="..." EPISODES=4 EXEC_STEPS=$s; done
    python benchmarks/exec_sweep_summary.py --out benchmarks/results/libero90_exec_sweep_cpu.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libero_dp.fileio import write_json  # noqa: E402
from libero_dp.metrics import rate_summary  # noqa: E402


def summarize(files: dict[int, Path]) -> dict:
    """One row per exec.steps; the runs must cover the same tasks with the same number of episodes."""
    runs = {s: json.loads(p.read_text()) for s, p in sorted(files.items())}
    shapes = {s: sorted((t, v["n"]) for t, v in r["tasks"].items()) for s, r in runs.items()}
    if len({json.dumps(v) for v in shapes.values()}) != 1:
        names = [str(p) for p in files.values()]
        raise ValueError(f"{names}: field 'tasks' differs between the runs (tasks, episodes): {shapes}")
    rows = {}
    for s, r in runs.items():
        o = r["overall"]
        rows[s] = {
            **rate_summary(o["successes"], o["n"]),
            "tasks": {t: [v["successes"], v["n"]] for t, v in r["tasks"].items()},
            "mean_inference_ms": o.get("mean_inference_ms"),
            "eval_wall_s": r.get("timing", {}).get("wall_s"),
            "measured_on": r.get("measured_on"),
            "file": str(files[s]),
        }
    return {"exec_steps": rows, "episodes_per_task": next(iter(shapes.values()))[0][1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="libero90", help="metrics/checkpoints/NAME_steps*.json")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    files = {
        int(m.group(1)): p
        for p in (ROOT / "metrics" / "checkpoints").glob(f"{a.name}_steps*.json")
        if (m := re.fullmatch(rf"{re.escape(a.name)}_steps(\d+)\.json", p.name))
    }
    if not files:
        raise SystemExit(f"no metrics/checkpoints/{a.name}_steps<N>.json (make eval-libero90 EXEC_STEPS=N)")
    res = summarize(files)
    write_json(a.out, res)
    for s, r in res["exec_steps"].items():
        lo, hi = r["wilson95"]
        print(f"exec.steps={s}: {r['successes']}/{r['n']} = {r['success_rate']:.0%} [{lo:.0%}, {hi:.0%}]")


if __name__ == "__main__":
    main()
