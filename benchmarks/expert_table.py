"""Expert success table: every task over its official init states, state-only (no cameras).

Writes metrics/experts.json: per task (keyed by task name; `suite/name` for LIBERO-PRO's suites, which reuse
their base suite's names) its suite, success_rate, final_success_rate, Wilson 95%
interval, steps to success, family, failure causes; a per-family summary; and how long it took.

    python benchmarks/expert_table.py --tasks libero_90 --episodes 50 --workers 2
    python benchmarks/expert_table.py --tasks libero_90:20 --episodes 5 --workers 1 --out /tmp/t.json -v
    python benchmarks/expert_table.py --merge metrics/experts_pro/*.json --out metrics/experts_pro.json

Episodes are cached per (task, init, expert code) under data/cache/experts, so a killed run resumes.
`wall_s` is the table's real wall time over every invocation that ran its episodes (each run's time is
kept in the cache's runs/ ledger and shared out over the episodes it ran), not only the last invocation's
(a last pass that finds everything cached takes milliseconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libero_dp import expert as expert_mod  # noqa: E402
from libero_dp import sim  # noqa: E402
from libero_dp.fileio import write_json  # noqa: E402
from libero_dp.metrics import wilson  # noqa: E402

_ENVS: dict[str, object] = {}


def _plugins() -> list[Path]:
    """Extra planner modules under development ($EXPERT_PLUGINS, comma-separated .py files)."""
    return [Path(p) for p in os.environ.get("EXPERT_PLUGINS", "").split(",") if p]


def _load_plugins() -> None:
    import importlib.util

    for p in _plugins():
        name = f"expert_plugin_{p.stem}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, p)
            mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = mod
            spec.loader.exec_module(mod)  # type: ignore[union-attr]


def _code_hash() -> str:
    h = hashlib.sha256()
    pkg = sorted(Path(expert_mod.__file__).parent.glob("*.py"))
    for f in (*pkg, Path(sim.__file__), *_plugins()):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def run_one(task: sim.TaskSpec, init_id: int, max_steps: int) -> dict:
    """One expert episode from official init state `init_id` (reset seed = init_id), in this process."""
    sim.setup_gl()
    _load_plugins()
    try:
        env = _ENVS.get(task.key)
        if env is None:
            for old in _ENVS.values():  # one env per process: ~2 GB each
                old.close()  # type: ignore[attr-defined]
            _ENVS.clear()
            env = _ENVS[task.key] = sim.make_env(task, render=False)
        ex = expert_mod.make_expert(task)
        inits = sim.official_init_states(task)
        t0 = time.perf_counter()
        actions: list[list[float]] = []

        def record(i: int, s: object, a: np.ndarray, o: object, d: bool) -> None:
            actions.append([float(x) for x in a])  # wait steps included: replay starts at the reset

        r = expert_mod.run_episode(
            env, task, ex, init_id, inits[init_id % len(inits)], max_steps, on_step=record
        )
        r["wall_s"] = time.perf_counter() - t0
        if r["success"]:
            r["actions"] = actions
    except NotImplementedError as e:
        r = {"success": False, "final_success": False, "failure_cause": "no_plan", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - one episode's crash must not stop the table
        r = {
            "success": False,
            "final_success": False,
            "failure_cause": "error",
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc()[-2000:],
        }
    r.update(task=task.label, suite=task.suite, init=init_id)
    return r


def run_chunk(task: sim.TaskSpec, jobs: list[tuple[int, str]], max_steps: int, run_id: str) -> list[dict]:
    """Several init states of one task in this process (one env build), each record cached as it ends."""
    out = []
    for init_id, path in jobs:
        r = run_one(task, init_id, max_steps)
        r["run"] = run_id  # which invocation ran it: the table's wall time adds up the runs' ledgers
        write_json(Path(path), r)
        out.append(r)
    return out


def replay_one(task: sim.TaskSpec, init_id: int, actions: list[list[float]]) -> dict:
    """Replay a recorded episode (reset seed + official init state + actions) in this process."""
    sim.setup_gl()
    env = _ENVS.get(task.key)
    if env is None:
        for old in _ENVS.values():
            old.close()  # type: ignore[attr-defined]
        _ENVS.clear()
        env = _ENVS[task.key] = sim.make_env(task, render=False)
    inits = sim.official_init_states(task)
    sim.reset_to(env, init_id, inits[init_id % len(inits)])
    success = False
    for a in actions:
        _, _, done, _ = env.step(np.asarray(a))
        success = success or bool(done) or sim.check_success(env)
    return {"task": task.label, "init": init_id, "replay_success": success, "steps": len(actions)}


def table_wall_s(records: list[dict], ledger: Path, run_id: str, this_run_s: float) -> dict:
    """The table's wall time: this invocation's, plus each earlier run's share for the episodes it ran.

    A run's ledger entry holds its wall time and episode count up to its last finished episode (so a
    killed run counts too); its share is wall * (its episodes in this table / episodes it ran).
    Records from before the ledger existed have no run: they are counted in `episodes_without_run`.
    """
    per_run = Counter(r.get("run") for r in records)
    total, runs, unknown = this_run_s, 1, per_run.pop(None, 0)
    for rid, n in per_run.items():
        if rid == run_id:
            continue
        f = ledger / f"{rid}.json"
        if not f.exists():
            unknown += n
            continue
        entry = json.loads(f.read_text())
        total += float(entry["wall_s"]) * n / max(int(entry["episodes"]), n)
        runs += 1
    return {"wall_s": total, "runs": runs, "episodes_without_run": unknown}


def _group(tasks: dict[str, dict], field: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for v in tasks.values():
        out[v[field]].append(v)
    return dict(sorted(out.items()))


def group_summary(vs: list[dict], causes: bool = False) -> dict:
    """Success over a group of tasks (a family or a suite): tasks at >= 90%, pooled rate and interval."""
    n, k = sum(v["n"] for v in vs), sum(v["successes"] for v in vs)
    out = {
        "tasks": len(vs),
        "tasks_at_90pct": sum(v["success_rate"] >= 0.9 for v in vs),
        "episodes": n,
        "success_rate": k / n,
        "wilson_95": list(wilson(k, n)),
    }
    if causes:
        out["failure_causes"] = dict(sum((Counter(v["failure_causes"]) for v in vs), Counter()))
    return out


def summarise(
    records: list[dict], families: dict[str, str], wall_s: float, workers: int, suites: dict[str, str]
) -> dict:
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    tasks = {}
    for name, rs in by_task.items():
        n = len(rs)
        k = sum(bool(r["success"]) for r in rs)
        kf = sum(bool(r.get("final_success")) for r in rs)
        steps = [r["steps_to_success"] for r in rs if r.get("steps_to_success")]
        lo, hi = wilson(k, n)
        tasks[name] = {
            "suite": suites[name],
            "family": families[name],
            "n": n,
            "successes": k,
            "success_rate": k / n,
            "wilson_95": [lo, hi],
            "final_success_rate": kf / n,
            "steps_to_success_median": statistics.median(steps) if steps else None,
            "steps_to_success_mean": statistics.mean(steps) if steps else None,
            "failure_causes": dict(Counter(r["failure_cause"] for r in rs if not r["success"])),
            "errors": sorted({r["error"] for r in rs if r.get("error")})[:3],
        }
    return {
        "protocol": "official init states, reset seed = init index, state-only stepping, success = done or "
        "check_success() at any step; final = check_success() after release and retreat",
        **task_summary(tasks),
        "wall_s": wall_s,
        "workers": workers,
    }


def task_summary(tasks: dict[str, dict]) -> dict:
    """Counts, overall rate, tasks below 90%, per-suite and per-family summaries of a table's tasks."""
    n = sum(v["n"] for v in tasks.values())
    k = sum(v["successes"] for v in tasks.values())
    return {
        "tasks_total": len(tasks),
        "tasks_at_90pct": sum(v["success_rate"] >= 0.9 for v in tasks.values()),
        "overall": {"episodes": n, "success_rate": k / n if n else None, "wilson_95": list(wilson(k, n))},
        "below_90pct": {
            t: {"success_rate": v["success_rate"], "failure_causes": v["failure_causes"]}
            for t, v in tasks.items()
            if v["success_rate"] < 0.9
        },
        "per_suite": {su: group_summary(vs) for su, vs in _group(tasks, "suite").items()},
        "per_family": {f: group_summary(vs, causes=True) for f, vs in _group(tasks, "family").items()},
        "tasks": dict(sorted(tasks.items())),
    }


def merge(paths: list[Path]) -> dict:
    """One table from several (e.g. one a suite, run where a session may be cut short): tasks side by side,
    the suite, family and overall summaries recomputed; wall times summed."""
    tables = [json.loads(Path(p).read_text()) for p in paths]
    tasks = {name: {"suite": "unknown", **t} for tab in tables for name, t in tab["tasks"].items()}
    return {
        "protocol": tables[0]["protocol"],
        "merged_from": [str(p) for p in paths],
        **task_summary(tasks),
        "wall_s": sum(float(t.get("wall_s") or 0.0) for t in tables),
        "workers": max(int(t.get("workers") or 0) for t in tables),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["libero_90"])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--first-init", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--out", default=str(ROOT / "metrics/experts.json"))
    ap.add_argument("--cache", default=str(ROOT / "data/cache/experts"))
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--chunk", type=int, default=5, help="episodes of one task per job")
    ap.add_argument("--replay", type=int, default=0, help="replay this many successes per task")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every episode")
    ap.add_argument("--merge", nargs="+", type=Path, help="tables to merge into --out (no episodes run)")
    args = ap.parse_args()
    if args.merge:
        out = merge(args.merge)
        write_json(Path(args.out), out)
        print(f"{out['tasks_at_90pct']}/{out['tasks_total']} tasks >= 90% ({len(args.merge)} tables)")
        return

    t_start = time.perf_counter()  # the whole invocation, not only the episodes run now
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    _load_plugins()
    tasks = sim.resolve_tasks(args.tasks)
    families = {t.label: expert_mod.family_of(t) for t in tasks}
    suites = {t.label: t.suite for t in tasks}
    cache = Path(args.cache) / _code_hash()
    ledger = cache / "runs"
    ledger.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    todo = []
    for t in tasks:  # task-major order: each worker keeps reusing one env
        for i in range(args.first_init, args.first_init + args.episodes):
            f = cache / f"{t.label.replace('/', '__')}__{i}_{args.max_steps}.json"
            if f.exists() and not args.no_cache:
                records.append(json.loads(f.read_text()))
            else:
                todo.append((t, i, f))
    t0 = time.perf_counter()
    os.environ.setdefault("MUJOCO_GL", "egl")
    ctx = multiprocessing.get_context("spawn")
    chunks: list[tuple[sim.TaskSpec, list[tuple[int, str]]]] = []
    for t, i, f in todo:  # consecutive inits of one task per job: a worker builds each env once per chunk
        if chunks and chunks[-1][0] is t and len(chunks[-1][1]) < args.chunk:
            chunks[-1][1].append((i, str(f)))
        else:
            chunks.append((t, [(i, str(f))]))
    bar = tqdm(total=len(todo), desc="expert episodes", disable=args.verbose)
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as ex:
        futs = [ex.submit(run_chunk, t, jobs, args.max_steps, run_id) for t, jobs in chunks]
        done = 0
        for r in (r for fut in as_completed(futs) for r in fut.result()):
            records.append(r)
            done += 1
            bar.update(1)
            entry = {"run": run_id, "episodes": done, "wall_s": time.perf_counter() - t_start}
            write_json(ledger / f"{run_id}.json", {**entry, "workers": args.workers})
            if args.verbose:
                print(
                    f"{r['task'][:60]:60s} init {r['init']:2d} ok={r['success']} "
                    f"final={r.get('final_success')} "
                    f"steps={r.get('steps_to_success')} len={r.get('length')} cause={r.get('failure_cause')} "
                    f"{r.get('error', '')[:200]}",
                    flush=True,
                )
    wall = time.perf_counter() - t0
    # wall_s is set below, once the replays are done
    out = summarise(records, families, wall, args.workers, suites)
    if args.replay:
        # replay the first N successes per task in processes that did not record them
        jobs = []
        for t in tasks:
            ok = [r for r in records if r["task"] == t.label and r["success"] and r.get("actions")]
            jobs += [(t, r["init"], r["actions"]) for r in sorted(ok, key=lambda r: r["init"])[: args.replay]]
        t1 = time.perf_counter()
        with ProcessPoolExecutor(args.workers, mp_context=ctx) as ex:
            reps = list(tqdm(ex.map(replay_one, *zip(*jobs, strict=True)), total=len(jobs), desc="replays"))
        by_task: dict[str, list[bool]] = defaultdict(list)
        for r in reps:
            by_task[r["task"]].append(r["replay_success"])
        out["replay"] = {
            "what": "successful episodes replayed open loop (reset seed + official init state + recorded "
            "actions) in processes that did not record them",
            "per_task_requested": args.replay,
            "replayed": len(reps),
            "succeeded": sum(r["replay_success"] for r in reps),
            "tasks_all_replayed_ok": sum(all(v) and len(v) >= args.replay for v in by_task.values()),
            "failed": [f"{r['task']} init {r['init']}" for r in reps if not r["replay_success"]],
            "wall_s": time.perf_counter() - t1,
        }
        print(f"replays: {out['replay']['succeeded']}/{out['replay']['replayed']} succeeded")
    out["episodes_run_now"] = len(todo)
    this_run_s = time.perf_counter() - t_start
    out.update(table_wall_s(records, ledger, run_id, this_run_s))
    out["wall_s_this_invocation"] = this_run_s
    out["episodes_s_sum"] = float(sum(r.get("wall_s", 0.0) for r in records))
    walls = [r["wall_s"] for r in records if "wall_s" in r]
    out["mean_episode_s"] = float(np.mean(walls)) if walls else None
    write_json(Path(args.out), out)
    print(
        f"{out['tasks_at_90pct']}/{out['tasks_total']} tasks >= 90%, "
        f"overall {out['overall']['success_rate']}, "
        f"{len(todo)} episodes in {wall:.0f} s now, table wall {out['wall_s']:.0f} s "
        f"over {out['runs']} run(s) -> {args.out}"
    )
    for f, v in out["per_family"].items():
        print(f"  {f:22s} {v['tasks_at_90pct']}/{v['tasks']} tasks >= 90%, rate {v['success_rate']:.2f}")


if __name__ == "__main__":
    main()
