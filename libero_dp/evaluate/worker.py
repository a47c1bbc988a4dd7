"""The worker: runs episodes in one process, keeping one env per task (LRU) and the policy loaded once.

Used as a Ray actor by the pool, or directly in-process (tests, debugging). Videos are rendered here too,
after the episodes, from the stored sim states: a seeded reset (same fixture placement) + `sim.set_state`.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from libero_dp import sim
from libero_dp.config import ExecParams
from libero_dp.evaluate import goals, grounding
from libero_dp.evaluate.controllers import (
    ChunkController,
    Controller,
    ExpertController,
    ReplayController,
    Runner,
    executed_indices,
)
from libero_dp.evaluate.episode import error_record, placement_hash, render_upright, rollout, task_needs_grasp
from libero_dp.evaluate.protocol import EpisodeSpec

CONTROL_HZ = 20.0
MAX_ENVS_PER_WORKER = 3  # LRU of envs per actor (~2 GB each); episodes are scheduled task by task


@dataclass
class WorkerConfig:
    """Everything an actor needs; plain data so it pickles to remote Ray nodes."""

    policy: str
    exec_params: dict
    image_size: int
    render: str
    models_dir: str
    stats_path: str
    weights: str
    threads: int
    runner_factory: Callable[[], Runner] | None = None
    expert_image_every: int = 0
    expert_image_history: int = 2


class EpisodeWorker:
    """Runs episodes in one process: keeps one env per task (LRU), loads the policy once.

    Used as a Ray actor by `evaluate`, or directly in-process (tests, debugging).
    """

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.xp = ExecParams(**cfg.exec_params)
        self.envs: OrderedDict[str, Any] = OrderedDict()
        self.runner: Runner | None = None
        self.transform: Any = None
        self._ready = False

    def setup(self) -> dict[str, Any]:
        """Load the policy (once); returns what the driver checks (horizon, image history, pid)."""
        if not self._ready:
            sim.setup_gl()
            if self.cfg.policy == "learned":
                import torch

                torch.set_num_threads(self.cfg.threads)
                from libero_dp.units import Transform

                self.transform = Transform.load(self.cfg.stats_path)
                if self.cfg.runner_factory is not None:
                    self.runner = self.cfg.runner_factory()
                else:
                    from libero_dp.sampling import PolicyRunner

                    self.runner = PolicyRunner.load(
                        Path(self.cfg.models_dir),
                        weights=self.cfg.weights,
                        device="cpu",
                        sampling_steps=self.xp.sampling_steps,
                    )
                executed_indices(int(self.runner.horizon), self.xp.steps, self.xp.stride)  # fail fast
            self._ready = True
        info: dict[str, Any] = {"pid": os.getpid()}
        if self.runner is not None:
            info.update(horizon=int(self.runner.horizon), image_history=int(self.runner.image_history))
        return info

    def env(self, task: sim.TaskSpec) -> Any:
        if task.key in self.envs:
            self.envs.move_to_end(task.key)
            return self.envs[task.key]
        while len(self.envs) >= MAX_ENVS_PER_WORKER:
            _, old = self.envs.popitem(last=False)
            try:
                old.close()
            except Exception:  # noqa: BLE001 - closing a broken env must not cost the next episode
                pass
        self.envs[task.key] = sim.make_env(task, image_size=self.cfg.image_size, render=True)
        return self.envs[task.key]

    def prepare(self, task: sim.TaskSpec) -> None:
        """Load the policy and build the task's env ahead of an episode, so that the pool's episode clock
        (eval.episode_timeout_s) does not count them; a failure here is left to `run` to record."""
        try:
            self.setup()
            self.env(task)
        except Exception:  # noqa: BLE001 - run() repeats the step and records its error
            pass

    def controller(self, spec: EpisodeSpec) -> Controller:
        if self.cfg.policy == "expert":
            return ExpertController(spec.task, self.cfg.expert_image_every, self.cfg.expert_image_history)
        if self.cfg.policy == "replay":
            return ReplayController(spec.actions)
        assert self.runner is not None
        return ChunkController(self.runner, self.transform, self.xp, spec.language, spec.reset_seed)

    def run(self, spec: EpisodeSpec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """One episode; errors in setup, env construction or the episode become the record's error."""
        t0 = time.perf_counter()
        try:
            self.setup()
            env = self.env(spec.task)
            ctrl = self.controller(spec)
            skip = grounding.skip_reason(env, spec) if spec.grounding_from is not None else None
        except Exception as e:  # noqa: BLE001
            rec = error_record(spec, self.cfg.policy, f"{type(e).__name__}: {e}")
            rec["wall_s"] = time.perf_counter() - t0
            return self._grounded(spec, rec, None), {}
        if skip is not None:
            rec = error_record(spec, self.cfg.policy, "", failure="")
            rec.update(error=None, failure=None, wall_s=time.perf_counter() - t0)
            return self._grounded(spec, rec, None, skip), {}
        rec, arrays = rollout(
            env,
            spec,
            ctrl,
            image_size=self.cfg.image_size,
            render=self.cfg.render,
            needs_grasp=task_needs_grasp(spec.task),
            policy=self.cfg.policy,
        )
        states = arrays.get("states")
        if not rec["success"] and not rec["error"] and states is not None and len(states) > 1:
            try:  # what the objects say about the failure (a finer label than the hand's)
                label, rec["moved_objects"] = goals.goal_failure(env, spec.task, states)
                rec["failure"] = label or rec["failure"]
            except Exception as e:  # noqa: BLE001 - the coarse label stays; the episode's result is kept
                rec["goal_check_error"] = f"{type(e).__name__}: {e}"
        rec["wall_s"] = time.perf_counter() - t0
        rec["pid"] = os.getpid()
        return self._grounded(spec, rec, states), arrays

    def _grounded(
        self, spec: EpisodeSpec, rec: dict[str, Any], states: np.ndarray | None, skip: str | None = None
    ) -> dict[str, Any]:
        """A grounding episode's outcome (A's goal read on B's final state); other episodes unchanged."""
        if spec.grounding_from is None:
            return rec
        g: dict[str, Any] = dict(rec["grounding"])
        if skip is not None:
            g.update(outcome="skipped", why=skip)
        elif rec["error"] or states is None or not len(states):
            g.update(outcome="error", why=rec["error"])
        else:
            try:
                a_holds = grounding.a_goal_holds(self.env(spec.grounding_from), spec, states[-1])
                g.update(outcome=grounding.outcome(bool(rec["success"]), a_holds), a_holds=a_holds)
            except Exception as e:  # noqa: BLE001 - A's env failed: this episode's error, the run goes on
                g.update(outcome="error", why=f"{type(e).__name__}: {e}")
        rec["grounding"] = g
        return rec

    def render_video(
        self, task: sim.TaskSpec, reset_seed: int, states: np.ndarray, mhash: str | None, every: int
    ) -> bytes:
        """Agentview MP4 of a recorded episode: seeded reset (same fixture placement), set_state per frame."""
        from libero_dp.video import encode_mp4

        env = self.env(task)
        sim.reset_to(env, reset_seed)  # seeded: the same fixture placement as the episode
        if mhash is not None and placement_hash(env) != mhash:
            raise RuntimeError(f"reset seed {reset_seed} did not reproduce the placement of {task.name}")
        picks = list(range(0, len(states), every))
        if picks[-1] != len(states) - 1:
            picks.append(len(states) - 1)  # always show the final state

        def frames() -> Iterator[np.ndarray]:
            for i in picks:
                sim.set_state(env, states[i])
                yield render_upright(env, self.cfg.image_size)["agentview_rgb"]

        return encode_mp4(frames(), fps=CONTROL_HZ / every)
