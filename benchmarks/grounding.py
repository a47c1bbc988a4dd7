"""Language grounding within a scene, with the scripted expert as the reference.

For two tasks A and B of one scene (same objects and fixtures, so A's official init states load into B's
env), start from A's init state k, act for B, and read which goal holds: B's at any step (followed, the
protocol's success: a policy's episode ends at `done`, as the eval stage's grounding does; A's may hold too
when B contains it), else A's at the final state (ignored), or neither. The expert is
given B's goal (it reads goals, not sentences), so its followed rate is the reference a policy given B's
instruction is measured against; where it is below 100% the causes are the expert's failure labels.
For a learned policy the same test runs inside the eval stage (`eval.grounding_inits`, `make grounding`),
on the pairs of libero_dp.evaluate.grounding, and the report gets its table.

    python benchmarks/grounding.py --suite libero_goal --inits 2 --out metrics/grounding_expert.json
    python benchmarks/grounding.py --suite libero_90 --scenes KITCHEN_SCENE3 KITCHEN_SCENE10 --inits 2

Pairs: every ordered pair (A, B), A != B, of tasks whose bddl `(:objects ...)` and `(:fixtures ...)` blocks
are identical and whose init states have the length of B's sim state. A pair whose B goal already holds at
A's init state is skipped (nothing to follow).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libero_dp import expert as expert_mod  # noqa: E402
from libero_dp import sim  # noqa: E402
from libero_dp.evaluate import grounding  # noqa: E402
from libero_dp.fileio import write_json  # noqa: E402
from libero_dp.metrics import wilson  # noqa: E402
from libero_dp.report.tables import task_family  # noqa: E402

OUTCOMES = grounding.OUTCOMES
pairs = grounding.scene_pairs


def run_pair(a: sim.TaskSpec, b: sim.TaskSpec, inits: list[int], max_steps: int) -> list[dict]:
    """B's expert from A's init states; which goal holds at the end (own process: two envs)."""
    sim.setup_gl()
    env_b = sim.make_env(b, render=False)
    env_a = sim.make_env(a, render=False)
    states_a = sim.official_init_states(a)
    out = []
    try:
        for k in inits:
            rec = {"a": a.key, "b": b.key, "init": k, "instruction": b.language}
            state = states_a[k % len(states_a)]
            if len(state) != len(sim.get_state(env_b)):
                out.append({**rec, "outcome": "skipped", "why": "init state does not fit B's scene"})
                continue
            sim.reset_to(env_b, k, state)
            if sim.check_success(env_b):
                out.append({**rec, "outcome": "skipped", "why": "B's goal holds at A's init state"})
                continue
            r = expert_mod.run_episode(env_b, b, expert_mod.make_expert(b), k, state, max_steps)
            final = sim.get_state(env_b)
            sim.reset_to(env_a, k, state)
            sim.set_state(env_a, final)
            # B scored as the protocol scores it (any step), like the eval stage's grounding: the expert
            # goes on to retreat after the goal holds, and a plate pushed into its region may drift out
            a_holds = sim.check_success(env_a)
            outcome = grounding.outcome(bool(r["success"]), a_holds)
            out.append(
                {
                    **rec,
                    "outcome": outcome,
                    "a_also_holds": a_holds,
                    "b_success_any_step": r["success"],
                    "b_holds_at_end": r["final_success"],
                    "failure_cause": r["failure_cause"],
                }
            )
    finally:
        env_a.close()
        env_b.close()
    return out


def summarise(records: list[dict]) -> dict:
    done = [r for r in records if r["outcome"] != "skipped"]
    by_scene: dict[str, list[dict]] = defaultdict(list)
    for r in done:
        by_scene[r["a"].split("/")[0] + ":" + _scene(r["a"])].append(r)

    def rates(rs: list[dict]) -> dict:
        c = Counter(r["outcome"] for r in rs)
        lo, hi = wilson(c["followed"], len(rs))
        return {
            "episodes": len(rs),
            **{o: c[o] for o in OUTCOMES},
            "followed_rate": c["followed"] / len(rs) if rs else None,
            "followed_wilson_95": [lo, hi],
            "failure_causes": dict(Counter(r["failure_cause"] for r in rs if r["outcome"] != "followed")),
        }

    return {
        "overall": rates(done),
        "per_scene": {s: rates(rs) for s, rs in sorted(by_scene.items())},
        "skipped": dict(Counter(r["why"] for r in records if r["outcome"] == "skipped")),
        "pairs": len({(r["a"], r["b"]) for r in records}),
    }


WHAT = (
    "expert given B's goal from A's official init states, same scene; followed: B's goal at any step (the "
    "protocol's success), else ignored: A's goal at the final state, else neither"
)


def _scene(key: str) -> str:
    """libero_90's scene prefix (the report's task family); one scene for suites without prefixes."""
    name = key.split("/")[-1]
    family = task_family(name)
    return family if family != name else "scene"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="libero_goal")
    ap.add_argument("--scenes", nargs="*", default=None, help="scene prefixes to keep (libero_90)")
    ap.add_argument("--inits", type=int, default=2, help="official init states of A per pair")
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "metrics" / "grounding_expert.json")
    ap.add_argument("--rescore", action="store_true", help="recompute --out's outcomes from its records")
    a = ap.parse_args()
    if a.rescore:  # a table written when B was read at the final state only: same episodes, protocol's rule
        out = json.loads(a.out.read_text())
        for r in out["records"]:
            if r["outcome"] != "skipped":
                r["outcome"] = grounding.outcome(bool(r["b_success_any_step"]), bool(r["a_also_holds"]))
        out.update(summarise(out["records"]), what=WHAT)
        write_json(a.out, out)
        return
    tasks = sim.suite_tasks(a.suite)
    if a.scenes:
        tasks = [t for t in tasks if any(t.name.startswith(s + "_") for s in a.scenes)]
    todo = pairs(tasks)
    if not todo:
        raise SystemExit(f"no task pairs share a scene in {a.suite} {a.scenes or ''}")
    t0 = time.perf_counter()
    records: list[dict] = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(a.workers, mp_context=ctx) as ex:
        futs = [ex.submit(run_pair, x, y, list(range(a.inits)), a.max_steps) for x, y in todo]
        for f in tqdm(as_completed(futs), total=len(futs), desc="pairs"):
            records += f.result()
    out = {
        "what": WHAT,
        "suite": a.suite,
        "scenes": a.scenes,
        "inits_per_pair": a.inits,
        **summarise(records),
        "wall_s": time.perf_counter() - t0,
        "workers": a.workers,
        "records": sorted(records, key=lambda r: (r["a"], r["b"], r["init"])),
    }
    write_json(a.out, out)
    o = out["overall"]
    print(f"{o['followed']}/{o['episodes']} followed, {o['ignored']} ignored, {o['neither']} neither")


if __name__ == "__main__":
    main()
