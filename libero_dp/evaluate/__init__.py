"""Closed-loop evaluation in LIBERO, following the benchmark's protocol, on Ray actors.

The package, one concern per module, imports flowing one way (each imports only those above it):
  protocol     which episodes run (reset seed, init state, wait steps) on which tasks
  controllers  observations -> raw actions (scripted expert, demo replay, chunking policy)
  grounding    language grounding within a scene: B's instruction from A's init state, which goal holds
  episode      `rollout`, one episode: the control loop with on-demand rendering, its record and failure label
  worker       one process running episodes (env per task, policy loaded once), also renders videos
  pool         Ray session and the actor pool (dynamic scheduling, dead-actor retry)
  cache        the resumable per-episode cache and its key
  videos       which episodes get a video, rendered after the run from stored states
  summary      metrics/eval.json
  (this file)  `evaluate`, the entry the eval stage calls: specs -> cache -> pool -> outputs -> summary

Each episode is an independent unit on a Ray actor; its record is cached as one JSON file the moment it
arrives, keyed by a hash of everything that changes the result, outside the DVC output, so a killed run
resumes. An exception inside an episode is that episode's error (cached: it is deterministic); an actor that
dies costs one retry, then an error record that is not cached (OOM kills are transient: rerun on resume); an
episode that runs past `eval.episode_timeout_s` is a `timeout` error (not cached either), its actor replaced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from libero_dp import sim
from libero_dp.config import EvalParams, ExecParams
from libero_dp.evaluate import grounding
from libero_dp.evaluate.cache import cache_key, checkpoint_files, hash_paths, record_path
from libero_dp.evaluate.controllers import (
    ChunkController,
    Controller,
    ExpertController,
    ReplayController,
    Runner,
    executed_indices,
)
from libero_dp.evaluate.episode import (
    FAILURE_LABELS,
    NOOP,
    failure_label,
    placement_hash,
    render_upright,
    rollout,
    task_needs_grasp,
)
from libero_dp.evaluate.pool import MAX_ATTEMPTS, Pool, ray_session
from libero_dp.evaluate.protocol import (
    DEFAULT_IMAGE_SIZE,
    EpisodeSpec,
    demo_file,
    eval_tasks,
    extracted_image_size,
    model_info,
    protocol_specs,
    replay_specs,
    tasks_by_name,
)
from libero_dp.evaluate.summary import summarise
from libero_dp.evaluate.videos import make_videos, videos_missing
from libero_dp.evaluate.worker import CONTROL_HZ, MAX_ENVS_PER_WORKER, EpisodeWorker, WorkerConfig
from libero_dp.fileio import atomic_dir, atomic_path, write_json

__all__ = [
    "CONTROL_HZ",
    "DEFAULT_IMAGE_SIZE",
    "FAILURE_LABELS",
    "MAX_ATTEMPTS",
    "MAX_ENVS_PER_WORKER",
    "NOOP",
    "ChunkController",
    "Controller",
    "EpisodeSpec",
    "EpisodeWorker",
    "ExpertController",
    "Pool",
    "ReplayController",
    "Runner",
    "WorkerConfig",
    "cache_key",
    "checkpoint_files",
    "eval_tasks",
    "evaluate",
    "executed_indices",
    "failure_label",
    "hash_paths",
    "model_info",
    "placement_hash",
    "protocol_specs",
    "ray_session",
    "render_upright",
    "replay_specs",
    "rollout",
    "summarise",
    "task_needs_grasp",
    "tasks_by_name",
]


def evaluate(
    ep: EvalParams,
    xp: ExecParams,
    models_dir: Path,
    stats_path: Path,
    demos_dir: Path,
    out_dir: Path,
    cache_root: Path = Path("data/cache/eval"),
    *,
    runner_factory: Callable[[], Runner] | None = None,
    image_size: int | None = None,
    progress: bool = True,
    collect_metrics: Path | None = Path("metrics/collect.json"),
) -> dict[str, Any]:
    """Run the protocol for each task x seed x episode not yet cached; write records + videos; return metrics.

    out_dir gets records.jsonl (every episode, sorted) and videos/*.mp4, replaced atomically.
    runner_factory: build a stand-in policy in each actor instead of sampling.PolicyRunner (tests).
    image_size: override the render size (default: the training data's, from the models config).
    collect_metrics: for policy=expert, the collect stage's metrics; each task's expert success measured there
    is reported next to ours with whether it lies inside our Wilson interval (the two must agree).
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    models_dir, stats_path, demos_dir, out_dir = map(Path, (models_dir, stats_path, demos_dir, out_dir))
    info = model_info(models_dir) if ep.policy == "learned" else {}
    tasks = eval_tasks(ep, info, demos_dir)
    languages = dict(zip(info.get("task_names", []), info.get("languages", []), strict=False))
    size = int(image_size or info.get("data_image_size") or extracted_image_size() or DEFAULT_IMAGE_SIZE)
    if ep.policy == "learned":
        if runner_factory is None:  # config vs weights vs stats, before any actor or episode
            from libero_dp.checkpoint import check_checkpoint  # torch: only for a learned policy

            check_checkpoint(models_dir, ep.weights, stats_path)
        elif not stats_path.exists():
            raise FileNotFoundError(f"{stats_path}: the scale stage's stats.json is needed to decode actions")
    specs: list[EpisodeSpec] = []
    demo_files: list[Path] = []

    def sentence(task: sim.TaskSpec) -> str:
        # a training task gets the sentence the policy learned it with (a demo file's instruction may
        # differ from the benchmark's: 4 libero_90 tasks); training data names a LIBERO-PRO task by its
        # file stem (suite__name), so a variant never takes its base task's sentence
        return languages.get(task.file_stem) or task.language

    for task in tasks:
        if ep.policy == "replay":
            demo_files.append(demo_file(demos_dir, task))
            specs += replay_specs(task, demo_files[-1], ep.seeds, ep.episodes_per_task, ep)
        else:
            specs += protocol_specs(task, ep.seeds, ep.episodes_per_task, ep, sentence(task))
    if ep.grounding_inits and ep.policy != "replay":
        for a, b in grounding.scene_pairs(tasks):
            specs += grounding.grounding_specs(
                a, b, ep.seeds, ep.grounding_inits, ep.num_steps_wait, ep.max_steps, sentence(b)
            )
    key = cache_key(ep, xp, models_dir, stats_path, demo_files, size, runner_factory)
    cache = Path(cache_root) / key
    cache.mkdir(parents=True, exist_ok=True)
    write_json(
        cache / "params.json",
        {
            "eval": ep.model_dump(),
            "exec": xp.model_dump(),
            "image_size": size,
            "models_dir": str(models_dir),
            "stats_path": str(stats_path),
        },
    )
    records: dict[str, dict[str, Any]] = {}
    for s in specs:
        p = record_path(cache, s)
        if p.exists():
            records[s.key] = json.loads(p.read_text())
    todo = [s for s in specs if s.key not in records]
    cfg = WorkerConfig(
        policy=ep.policy,
        exec_params=xp.model_dump(),
        image_size=size,
        render=ep.render,
        models_dir=str(models_dir.resolve()),
        stats_path=str(stats_path.resolve()),
        weights=ep.weights,
        threads=ep.threads_per_worker,
        runner_factory=runner_factory,
        expert_image_every=ep.expert_image_every,
        expert_image_history=ep.expert_image_history,
    )
    new_keys: list[str] = []
    cluster: dict[str, Any] | None = None
    t_episodes = 0.0
    videos: dict[str, bytes] = {}
    need_actors = bool(todo) or videos_missing(ep, specs, records, cache)
    if need_actors:
        with ray_session(ep.workers, ep.ray_address) as ray:
            pool = Pool(ray, cfg, min(ep.workers, max(len(todo), 1)), ep.episode_timeout_s)
            setup = pool.setup()
            ctx = ray.get_runtime_context()
            cluster = {
                "address": ctx.gcs_address,
                "local": not ep.ray_address,
                "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                "cluster_cpus": ray.cluster_resources().get("CPU"),
                "actor_pids": [s.get("pid") for s in setup],
            }
            if ep.policy == "learned" and setup:
                h = setup[0]["horizon"]
                executed_indices(h, xp.steps, xp.stride)
            bar = tqdm(
                total=len(specs),
                initial=len(records),
                desc=f"eval {ep.policy}",
                unit="ep",
                disable=not progress,
            )

            def on_done(spec: EpisodeSpec, rec: dict, arrays: dict) -> None:
                # states first, then the record: a record on disk always has its arrays
                if arrays:
                    with atomic_path(record_path(cache, spec).with_suffix(".npz"), ".npz") as tmp:
                        with open(tmp, "wb") as fh:
                            np.savez_compressed(fh, **arrays)
                # a dead worker (OOM) or a timeout (a loaded machine) may be transient: rerun on resume
                if not rec.get("actor_died") and not rec.get("timed_out"):
                    write_json(record_path(cache, spec), rec)
                records[spec.key] = rec
                new_keys.append(spec.key)
                bar.update(1)
                bar.set_postfix(success=f"{sum(r['success'] for r in records.values())}/{len(records)}")

            t0 = time.perf_counter()
            pool.run_all(todo, on_done)
            t_episodes = time.perf_counter() - t0
            bar.close()
            videos = make_videos(ep, specs, records, cache, pool)
    else:
        videos = make_videos(ep, specs, records, cache, None)
    ordered = [records[s.key] for s in specs if s.grounding_from is None]
    grounded = [records[s.key] for s in specs if s.grounding_from is not None]
    with atomic_dir(out_dir) as tmp:
        with open(tmp / "records.jsonl", "w") as f:
            for r in ordered:
                f.write(json.dumps(r) + "\n")
        if grounded:
            with open(tmp / "grounding.jsonl", "w") as f:
                for r in grounded:
                    f.write(json.dumps(r) + "\n")
        if videos:
            (tmp / "videos").mkdir()
            for name, data in videos.items():
                (tmp / "videos" / name).write_bytes(data)
    new = [records[k] for k in new_keys]
    metrics = summarise(
        ep, xp, tasks, ordered, new, t_episodes, time.perf_counter() - t_start, key, size, sorted(videos)
    )
    if grounded:
        metrics["grounding"] = grounding.summarise(grounded)
    metrics["timing"]["ray"] = cluster
    if ep.policy == "expert" and collect_metrics is not None and Path(collect_metrics).exists():
        collected = json.loads(Path(collect_metrics).read_text()).get("tasks", {})
        for name, t in metrics["tasks"].items():
            ref = collected.get(name.replace("/", "__"), {}).get("expert_official", {})
            if ref.get("n"):
                t["collect_success_rate"] = ref["success_rate"]
                lo, hi = t["wilson95"]
                t["collect_within_wilson95"] = (
                    lo - 1e-9 <= ref["success_rate"] <= hi + 1e-9
                )  # float-rounded bounds
    return metrics
