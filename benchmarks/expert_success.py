"""Scripted-expert success rates, state-only, under the official protocol (episode k from init state k).

    python benchmarks/expert_success.py --tasks libero_90:0 libero_90:9 --episodes 50

Writes benchmarks/results/expert_success.json (entries for other tasks already in the file are kept).
`--init fresh` starts from fresh env resets (reset seed = seed_base + k) instead, as training demos do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libero_dp import sim  # noqa: E402
from libero_dp.expert import make_expert, run_episode  # noqa: E402


def bench_task(task: sim.TaskSpec, args: argparse.Namespace) -> dict[str, Any]:
    """Run `args.episodes` expert episodes on one task and summarise them."""
    env = sim.make_env(task, render=False)
    expert = make_expert(task, max_pos_action=args.max_pos_action)
    inits = sim.official_init_states(task) if args.init == "official" else None
    episodes = []
    max_pos = 0.0
    try:
        for k in tqdm(range(args.episodes), desc=task.name[:40], unit="ep"):
            seed = k if args.init == "official" else args.seed_base + k
            init = None if inits is None else inits[k % len(inits)]
            peak = [0.0]

            def on_step(
                i: int, state: np.ndarray, action: np.ndarray, obs: dict, done: bool, peak: list = peak
            ) -> None:
                peak[0] = max(peak[0], float(np.max(np.abs(action[:3]))))

            t0 = time.perf_counter()
            r = run_episode(env, task, expert, seed, init, args.max_steps, on_step=on_step)
            r["wall_s"] = time.perf_counter() - t0
            r["reset_seed"] = seed
            episodes.append(r)
            max_pos = max(max_pos, peak[0])
    finally:
        env.close()
    steps = [r["steps_to_success"] for r in episodes if r["success"]]
    n = len(episodes)
    return {
        "task": task.name,
        "suite": task.suite,
        "index": task.index,
        "init": args.init,
        "episodes": n,
        "max_steps": args.max_steps,
        "success_rate": sum(r["success"] for r in episodes) / n,
        "final_success_rate": sum(r["final_success"] for r in episodes) / n,
        "mean_steps_to_success": statistics.fmean(steps) if steps else None,
        "median_steps_to_success": statistics.median(steps) if steps else None,
        "max_steps_to_success": max(steps) if steps else None,
        "mean_length": statistics.fmean(r["length"] for r in episodes),
        "failure_causes": dict(Counter(r["failure_cause"] for r in episodes if not r["success"])),
        "wall_s_per_episode": statistics.fmean(r["wall_s"] for r in episodes),
        "max_abs_pos_action": max_pos,
        "max_pos_action_cap": args.max_pos_action,
        "per_episode": [
            {k: r[k] for k in ("reset_seed", "success", "steps_to_success", "length", "failure_cause")}
            for r in episodes
        ],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--tasks", nargs="+", default=["libero_90:0"], help="task selections (see sim.resolve_tasks)"
    )
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--max-pos-action", type=float, default=0.3)
    p.add_argument("--init", choices=["official", "fresh"], default="official")
    p.add_argument("--seed-base", type=int, default=1000, help="reset seed of fresh episode 0 (--init fresh)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "expert_success.json")
    args = p.parse_args(argv)

    results: dict[str, Any] = {}
    if args.out.exists():
        results = json.loads(args.out.read_text())
    for task in sim.resolve_tasks(args.tasks):
        summary = bench_task(task, args)
        key = task.key if args.init == "official" else f"{task.key}[fresh]"
        results[key] = summary
        print(
            f"{key}: success {summary['success_rate']:.2%} (final {summary['final_success_rate']:.2%}), "
            f"median steps {summary['median_steps_to_success']}, failures {summary['failure_causes']}, "
            f"{summary['wall_s_per_episode']:.2f} s/episode, "
            f"max |pos action| {summary['max_abs_pos_action']:.3f}"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
