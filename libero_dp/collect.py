"""Demonstrations made here: the scripted expert in the real LIBERO scenes, recorded in the official layout.

Each attempt runs the expert with the simulator stepping only physics (no rendering, ~10x faster);
successful attempts are then rendered from their stored states through `sim.render_views`, the same
function evaluation uses. Attempts are cached one file each, keyed by the params that change them, so an
interrupted collection resumes without redoing finished demos, and the result depends only on the seed.

Training demos start from fresh resets (reset seed = seed*1e6 + task*1e4 + attempt), never from the
official init states, which stay reserved for evaluation. The expert's own success is measured separately
on the official init states (state-only) and reported in metrics/collect.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from statistics import mean, median
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from libero_dp import sim
from libero_dp.config import CollectParams
from libero_dp.dataformat import Demo, write_task_file
from libero_dp.fileio import atomic_path, write_json
from libero_dp.metrics import rate_summary

NOOP = np.array([0, 0, 0, 0, 0, 0, -1.0])


@dataclass(frozen=True)
class Job:
    kind: str  # "demo" | "check"
    task: sim.TaskSpec
    index: int
    reset_seed: int
    official: bool  # start from official init state `index`
    out: str  # cache file stem


def reset_seed_for(seed: int, task: sim.TaskSpec, attempt: int) -> int:
    return seed * 1_000_000 + task.index * 10_000 + attempt


def _cache_key(p: CollectParams) -> str:
    """Hash of everything that changes an attempt's result, the expert's code included."""
    import libero_dp.bddl as bddl_mod
    import libero_dp.expert as expert_mod

    pkg = sorted(Path(expert_mod.__file__).parent.glob("*.py"))  # the expert package
    files = [*pkg, Path(bddl_mod.__file__), Path(sim.__file__)]
    code = b"".join(f.read_bytes() for f in files) + Path(__file__).read_bytes()
    fields = (p.init, p.seed, p.image_size, p.max_steps, p.steps_after_success, p.num_steps_wait)
    fields = (*fields, p.expert_top_action, p.demo_end)
    return hashlib.sha256(repr(fields).encode() + code).hexdigest()[:12]


# ------------------------------------------------------------------ worker side
_ENVS: dict[str, Any] = {}


def _env(task: sim.TaskSpec, image_size: int) -> Any:
    """One env per process (~2 GB each): jobs come task by task, so a new task replaces the old env."""
    if task.key not in _ENVS:
        for old in _ENVS.values():
            old.close()
        _ENVS.clear()
        _ENVS[task.key] = sim.make_env(task, image_size=image_size, render=True)
    return _ENVS[task.key]


def run_job(job: Job, p: CollectParams) -> dict:
    """One expert attempt; for a successful demo attempt, also render it and write its part file."""
    from libero_dp.expert import make_expert, run_episode

    env = _env(job.task, p.image_size)
    init = sim.official_init_states(job.task)[job.index % 50] if job.official else None
    steps: list[tuple[np.ndarray, np.ndarray, dict]] = []

    def on_step(i: int, state_before: np.ndarray, action: np.ndarray, obs_after: dict, done: bool) -> None:
        if job.kind == "demo":
            steps.append((np.array(state_before), np.array(action), sim.proprio_from_obs(obs_after)))

    t0 = time.perf_counter()
    try:
        res = run_episode(
            env,
            job.task,
            make_expert(job.task, top_action=p.expert_top_action),
            job.reset_seed,
            init,
            p.max_steps,
            p.num_steps_wait,
            p.steps_after_success,
            on_step=on_step,
            # a demo ends at the goal (as LIBERO's own demos do); the expert check runs the whole plan
            stop_at_success=job.kind == "demo" and p.demo_end == "goal",
        )
    except NotImplementedError as e:  # no plan for this scene (e.g. a handle the hand cannot reach)
        res = {"success": False, "error": str(e), "failure_cause": "no_plan"}
    except Exception as e:  # MuJoCo instability etc.: one attempt lost, the collection goes on
        res = {"success": False, "error": repr(e), "failure_cause": "error"}
    res = {k: v for k, v in res.items() if isinstance(v, (bool, int, float, str, type(None)))}
    res.update(kind=job.kind, index=job.index, reset_seed=job.reset_seed, wall_s=time.perf_counter() - t0)
    if job.kind == "demo" and res.get("success"):
        t_render = time.perf_counter()
        final_state = sim.get_state(env)
        xml = sim.model_xml(env)
        demo = _render_demo(env, job, p, steps, final_state, xml, res)
        with atomic_path(job.out + ".h5", ".h5") as tmp:
            meta = sim.env_metadata(env, job.task, p.image_size)
            write_task_file(
                tmp,
                [demo],
                env_name=meta["env_name"],
                problem_name=meta["problem_name"],
                domain_name=meta["domain_name"],
                language=meta["language"],
                bddl_file=meta["bddl_file"],
                env_kwargs=meta["env_kwargs"],
            )
        res["render_s"] = time.perf_counter() - t_render  # images from stored states + compressed write
        res["frames"] = len(steps)
    write_json(job.out + ".json", res)
    return res


def _render_demo(
    env: Any, job: Job, p: CollectParams, steps: list, final_state: np.ndarray, xml: str, res: dict
) -> Demo:
    """Images for obs[j] = the state after action j, rendered from stored states.

    Rendered right after the live run, with no reset in between: LIBERO's fixture placement (e.g. the
    cabinet's position) is re-sampled on every reset and depends on earlier resets in the process, so
    the model is only guaranteed to match the recorded states now (and via the stored model XML).
    """
    states = np.stack([s for s, _, _ in steps])
    after = np.concatenate([states[1:], final_state[None]])
    frames: dict[str, list[np.ndarray]] = {k: [] for k in sim.CAMERAS.values()}
    for s in after:
        sim.set_state(env, s)
        for k, img in sim.render_views(env, p.image_size).items():
            frames[k].append(img)
    prop = {k: np.stack([pr[k] for _, _, pr in steps]) for k in steps[0][2]}
    obs = {k: np.stack(v) for k, v in frames.items()}
    obs.update({k: prop[k] for k in ("ee_pos", "ee_ori", "ee_states", "gripper_states", "joint_states")})
    return Demo(
        actions=np.stack([a for _, a, _ in steps]),
        states=states,
        robot_states=prop["robot_states"],
        obs=obs,
        model_file=xml,
        reset_seed=job.reset_seed,
        success_step=res.get("steps_to_success"),
        extra_attrs={"num_steps_wait": p.num_steps_wait},
    )


def _gpu_count() -> int:
    """NVIDIA GPUs on this host (0 without nvidia-smi): the EGL devices workers are spread over."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def _init_worker(slot: Any = None, gpus: int = 0) -> None:
    """Worker w renders on GPU w mod #GPUs (EGL), unless MUJOCO_EGL_DEVICE_ID is already set."""
    if slot is not None and gpus > 1 and "MUJOCO_EGL_DEVICE_ID" not in os.environ:
        with slot.get_lock():
            os.environ["MUJOCO_EGL_DEVICE_ID"] = str(slot.value % gpus)
            slot.value += 1
    sim.setup_gl()


# ------------------------------------------------------------------ driver
def _run_jobs(jobs: list[Job], p: CollectParams, desc: str) -> list[dict]:
    """Run jobs not already cached, in parallel worker processes; return every job's result."""
    todo = [j for j in jobs if not Path(j.out + ".json").exists()]
    if todo:
        if p.workers == 1:
            for j in tqdm(todo, desc=desc, unit="ep"):
                run_job(j, p)
        else:
            ctx = get_context("spawn")
            init_args = (ctx.Value("i", 0), _gpu_count())
            with ProcessPoolExecutor(
                p.workers, mp_context=ctx, initializer=_init_worker, initargs=init_args
            ) as ex:
                futs = [ex.submit(run_job, j, p) for j in todo]
                for f in tqdm(futs, desc=desc, unit="ep"):
                    f.result()
    return [json.loads(Path(j.out + ".json").read_text()) for j in jobs]


def collect(p: CollectParams, cache_root: Path = Path("data/cache/collect")) -> dict:
    """Collect demos for every task in p.tasks; write <out_dir>/<TASK>_demo.hdf5; return metrics.

    TASK is the task's name, or `suite__name` for LIBERO-PRO's suites (which reuse their base suite's names).

    All tasks share one worker pool: first the expert checks on the official init states (state-only),
    then rounds of demo attempts from fresh resets until every task has demos_per_task successes or has
    used its attempt budget. Every attempt is cached, so a killed collection resumes where it stopped.
    """
    tasks = sim.resolve_tasks(p.tasks)
    key = _cache_key(p)
    out_dir = Path(p.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"tasks": {}, "skipped": {}, "params_key": key}
    t_start = time.perf_counter()
    cache = {t.file_stem: cache_root / t.file_stem / key for t in tasks}
    for c in cache.values():
        c.mkdir(parents=True, exist_ok=True)
    # 1) the expert's success on the official init states (state-only, no images)
    checks = [
        Job("check", t, i, i, True, str(cache[t.file_stem] / f"check_{i:03d}"))
        for t in tasks
        for i in range(p.expert_check_episodes)
    ]
    check_res: dict[str, list[dict]] = {t.file_stem: [] for t in tasks}
    for j, r in zip(checks, _run_jobs(checks, p, "expert check"), strict=True):
        check_res[j.task.file_stem].append(r)
    # 2) demos from fresh resets, in rounds over all tasks
    kept: dict[str, list[dict]] = {t.file_stem: [] for t in tasks}
    attempts: dict[str, list[dict]] = {t.file_stem: [] for t in tasks}
    nxt = dict.fromkeys(cache, 0)
    budget = p.demos_per_task * p.max_attempts_factor
    init_official = p.init == "official"
    while True:
        jobs = []
        for t in tasks:
            n = min(p.demos_per_task - len(kept[t.file_stem]), budget - nxt[t.file_stem])
            if n <= 0:
                continue
            if attempts[t.file_stem]:  # after the first round, over-provision by the observed failure rate
                if all(r.get("failure_cause") == "no_plan" for r in attempts[t.file_stem]):
                    continue
                rate = max(len(kept[t.file_stem]) / len(attempts[t.file_stem]), 0.2)
                n = min(int(np.ceil(n / rate)), budget - nxt[t.file_stem])
            jobs += [
                Job(
                    "demo",
                    t,
                    k,
                    k if init_official else reset_seed_for(p.seed, t, k),
                    init_official,
                    str(cache[t.file_stem] / f"demo_{k:05d}"),
                )
                for k in range(nxt[t.file_stem], nxt[t.file_stem] + n)
            ]
            nxt[t.file_stem] += n
        if not jobs:
            break
        for j, r in zip(jobs, _run_jobs(jobs, p, "demos"), strict=True):
            attempts[j.task.file_stem].append(r)
            if r.get("success"):
                kept[j.task.file_stem].append(r)
    # 3) one official-layout file per task
    for task in tasks:
        stem = task.file_stem
        k = sorted(kept[stem], key=lambda r: r["index"])[: p.demos_per_task]
        if not k:
            causes = sorted({str(r.get("error") or r.get("failure_cause")) for r in attempts[stem]})
            msg = f"{stem}: the expert succeeded in none of {len(attempts[stem])} attempts ({causes})"
            if p.on_task_failure == "error":
                raise RuntimeError(msg)
            metrics["skipped"][stem] = msg
            continue
        _assemble(out_dir / f"{stem}_demo.hdf5", [cache[stem] / f"demo_{r['index']:05d}.h5" for r in k])
        metrics["tasks"][stem] = _task_metrics(task, check_res[stem], attempts[stem], k)
    metrics["wall_s"] = time.perf_counter() - t_start
    ok = [
        m["expert_official"]["success_rate"] for m in metrics["tasks"].values() if m["expert_official"]["n"]
    ]
    metrics["mean_expert_success"] = mean(ok) if ok else None
    metrics["num_demos"] = sum(m["demos"] for m in metrics["tasks"].values())
    metrics["disk_bytes"] = sum(f.stat().st_size for f in out_dir.glob("*_demo.hdf5"))
    return metrics


def _assemble(path: Path, parts: list[Path]) -> None:
    """Merge single-demo part files into one official-layout file, atomically, keeping compression."""
    with atomic_path(path, ".hdf5") as tmp, h5py.File(tmp, "w") as out:
        g = out.create_group("data")
        total = 0
        for i, part in enumerate(parts):
            with h5py.File(part, "r") as f:
                if i == 0:
                    for k, v in f["data"].attrs.items():
                        g.attrs[k] = v
                f.copy(f["data/demo_0"], g, name=f"demo_{i}")
                total += int(f["data/demo_0"].attrs["num_samples"])
        g.attrs["num_demos"] = len(parts)
        g.attrs["total"] = total


def _task_metrics(task: sim.TaskSpec, checks: list[dict], attempts: list[dict], kept: list[dict]) -> dict:
    succ = [r for r in checks if r.get("success")]
    steps = [r["steps_to_success"] for r in succ if r.get("steps_to_success") is not None]
    causes: dict[str, int] = {}
    for r in checks:
        if not r.get("success"):
            c = str(r.get("failure_cause") or "unknown")
            causes[c] = causes.get(c, 0) + 1
    return {
        "suite": task.suite,
        "index": task.index,
        "language": task.language,
        "expert_official": {
            **rate_summary(len(succ), len(checks)),
            "final_success_rate": (sum(bool(r.get("final_success")) for r in checks) / len(checks))
            if checks
            else None,
            "mean_steps_to_success": mean(steps) if steps else None,
            "median_steps_to_success": median(steps) if steps else None,
            "failure_causes": causes,
        },
        "demos": len(kept),
        "attempts": len(attempts),
        "demo_attempt_success_rate": sum(bool(r.get("success")) for r in attempts) / max(len(attempts), 1),
        "mean_episode_length": mean(r["length"] for r in kept),
        "mean_wall_s_per_attempt": mean(r["wall_s"] for r in attempts),
        "mean_render_s_per_demo": mean(r["render_s"] for r in kept) if "render_s" in kept[0] else None,
    }
