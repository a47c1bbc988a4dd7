"""One episode: reset, wait steps, the control loop with on-demand rendering; its record and failure label.

* Observations are built exactly as the training frames (extract.py / windows.py): both cameras from
  `sim.render_views`, flipped upright, the last K frames oldest first (padded at the start by repeating the
  first policy frame), proprio from `sim.proprio_from_obs` -> `Transform.proprio_to_model`.
* Rendering dominates the cost (~140 ms per step for both cameras on this CPU machine), so images are rendered
  only at the steps the policy reads (the re-plan step and the K-1 before it). `eval.render: every_step`
  renders every step instead (benchmarking); both give identical pixels at the steps read (tested).
* Each step's flattened sim state is stored (cheap), so videos are re-rendered afterwards, not during the run.
"""

from __future__ import annotations

import functools
import hashlib
import time
import traceback
from statistics import mean
from typing import Any

import numpy as np

from libero_dp import sim
from libero_dp.bddl import family_of
from libero_dp.evaluate import goals, grounding
from libero_dp.evaluate.controllers import Controller
from libero_dp.evaluate.protocol import EpisodeSpec

NOOP = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
# error: the episode raised; timeout: no result within eval.episode_timeout_s (its actor was killed)
# right_object_wrong_place / wrong_object_moved: read from the objects' final state (goals.py); they replace
# the hand's label (gripper_never_closed / stuck / timed_out_moving) where an object moved
FAILURE_LABELS = (
    "error",
    "gripper_never_closed",
    "stuck",
    "timed_out_moving",
    "timeout",
    "right_object_wrong_place",
    "wrong_object_moved",
)
STUCK_WINDOW = 50  # steps at the end of a failed episode that are checked for motion
STUCK_PATH_M = 0.01  # hand path length over that window below which the episode counts as stuck


def _history(buf: dict[int, dict[str, np.ndarray]], t: int, k: int) -> dict[str, np.ndarray]:
    """Frames t-k+1..t oldest first, padded at the start with the first policy frame (as windows.py does)."""
    steps = [max(t - k + 1 + j, 0) for j in range(k)]
    missing = [s for s in steps if s not in buf]
    if missing:
        raise RuntimeError(f"frames for steps {missing} were not rendered (on-demand schedule bug)")
    return {cam: np.stack([buf[s][cam] for s in steps]) for cam in buf[steps[-1]]}


def render_upright(env: Any, image_size: int) -> dict[str, np.ndarray]:
    """Both cameras, upright, through the project's only rendering function (as the training frames)."""
    return {k: sim.upright(v) for k, v in sim.render_views(env, image_size).items()}


def placement_hash(env: Any) -> str:
    """Fingerprint of the fixture placement (body poses of the model; the XML string lags one reset)."""
    m = env.sim.model
    data = np.ascontiguousarray(m.body_pos).tobytes() + np.ascontiguousarray(m.body_quat).tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


def rollout(
    env: Any,
    spec: EpisodeSpec,
    ctrl: Controller,
    *,
    image_size: int,
    render: str = "on_demand",
    needs_grasp: bool = False,
    policy: str = "",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run one episode; return its JSON record and its arrays (sim states (T+1, D), executed actions (T, 7)).

    Never raises for what happens inside the episode: an exception becomes the record's `error`.
    """
    t_start = time.perf_counter()
    states: list[np.ndarray] = []
    eef: list[np.ndarray] = []
    executed: list[np.ndarray] = []
    raw_actions: list[np.ndarray] = []
    info_keys: set[str] = set()
    steps_to_success: int | None = None
    renders, render_s, t, error, mhash = 0, 0.0, 0, None, None
    try:
        obs = sim.reset_to(env, spec.reset_seed, spec.init_state)
        mhash = placement_hash(env)
        for _ in range(spec.wait_steps):
            obs, _, _, info = env.step(NOOP.copy())
            info_keys.update(info)
        ctrl.begin(env, obs)
        k = ctrl.image_history
        limit = spec.max_steps if ctrl.max_steps is None else min(spec.max_steps, ctrl.max_steps)
        buf: dict[int, dict[str, np.ndarray]] = {}
        states.append(sim.get_state(env))
        eef.append(np.asarray(obs["robot0_eef_pos"], dtype=np.float64))
        while t < limit:
            until = ctrl.steps_until_replan()  # images are read at t + until, if the episode gets there
            if render == "every_step" or (ctrl.uses_images and until <= k - 1 and t + until < limit):
                r0 = time.perf_counter()
                buf[t] = render_upright(env, image_size)
                render_s += time.perf_counter() - r0
                renders += 1
                for old in [s for s in buf if s < t - k + 1]:  # no later re-plan reads these
                    del buf[old]
            raw = np.asarray(ctrl.act(t, env, obs, functools.partial(_history, buf, t, k)), dtype=np.float64)
            if raw.shape != (7,) or not np.all(np.isfinite(raw)):
                raise ValueError(f"policy produced an invalid action {raw!r} at step {t}; expected 7 finite")
            action = np.clip(raw, -1.0, 1.0)
            obs, _, done, info = env.step(action)
            info_keys.update(info)
            t += 1
            raw_actions.append(raw)
            executed.append(action)
            states.append(sim.get_state(env))
            eef.append(np.asarray(obs["robot0_eef_pos"], dtype=np.float64))
            if bool(done) or sim.check_success(env):
                steps_to_success = t
                break
    except Exception as e:  # MuJoCo instability, a policy bug: this episode's error, the run goes on
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        error = f"{type(e).__name__}: {e} | {''.join(tb[-3:]).strip()[-600:]}"
    raw_arr = np.asarray(raw_actions, dtype=np.float64).reshape(-1, 7)
    over = np.abs(raw_arr) - 1.0
    clipped = over > 0
    success = steps_to_success is not None
    rec: dict[str, Any] = {
        **spec_fields(spec, policy),
        "success": success,
        "steps_to_success": steps_to_success,
        "steps": t,
        "wait_steps": spec.wait_steps,
        "chunks": ctrl.chunks,
        "clip_rate": float(clipped.mean()) if clipped.size else 0.0,
        "clip_overshoot_mean": float(over[clipped].mean()) if clipped.any() else 0.0,
        "clip_overshoot_max": float(over[clipped].max()) if clipped.any() else 0.0,
        "out_of_range_rate": (ctrl.model_out_of_range / ctrl.model_values) if ctrl.model_values else None,
        "inference_ms": 1000.0 * mean(ctrl.inference_s) if ctrl.inference_s else None,
        "renders": renders,
        "render_s": render_s,
        "wall_s": time.perf_counter() - t_start,
        "error": error,
        "info_keys_seen": sorted(info_keys),
        "placement_hash": mhash,
        "gripper_closed": bool(np.any(raw_arr[:, 6] > 0)) if len(raw_arr) else False,
        "failure": None,
        "eef_path": np.round(np.asarray(eef), 5).tolist(),
    }
    if spec.ref_states is not None and states:
        n = min(len(states), len(spec.ref_states))
        rec["replay_max_state_diff"] = float(np.max(np.abs(np.asarray(states[:n]) - spec.ref_states[:n])))
    rec["failure"] = failure_label(rec, needs_grasp)
    arrays = {
        "states": np.asarray(states, dtype=np.float64),
        "actions": np.asarray(executed, dtype=np.float64).reshape(-1, 7),
    }
    return rec, arrays


def failure_label(rec: dict[str, Any], needs_grasp: bool) -> str | None:
    """Coarse reason for a failed episode, from cheap signals (report groups failures by it)."""
    if rec["success"]:
        return None
    if rec["error"]:
        return "error"
    if needs_grasp and not rec["gripper_closed"]:
        return "gripper_never_closed"
    path = np.asarray(rec["eef_path"])[-(STUCK_WINDOW + 1) :]
    moved = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()) if len(path) > 1 else 0.0
    return "stuck" if moved < STUCK_PATH_M else "timed_out_moving"


def task_needs_grasp(task: sim.TaskSpec) -> bool:
    """Goals with On/In need an object carried; pushes, opening and turning on do not."""
    return bool(goals.goal_objects(task.bddl_file))


def spec_fields(spec: EpisodeSpec, policy: str) -> dict[str, Any]:
    """The fields that identify an episode, shared by normal and error records (a grounding episode's
    outcome stays `error` unless the worker reads one from its final state)."""
    extra: dict[str, Any] = {}
    if spec.grounding_from is not None:
        extra = {
            "grounding": {**grounding.grounding_fields(spec), "outcome": "error"},
            "scene": grounding.scene_of(spec.task),
        }
    return {
        **extra,
        "task": spec.label,
        "suite": spec.task.suite,
        "task_index": spec.task.index,
        "family": family_of(spec.task),
        "episode": spec.index,
        "init_index": spec.init_index,
        "demo": spec.demo,
        "seed": spec.seed,
        "reset_seed": spec.reset_seed,
        "policy": policy,
    }


def error_record(spec: EpisodeSpec, policy: str, error: str, failure: str = "error") -> dict[str, Any]:
    """The record of an episode that produced no rollout (setup failed, its actor died, it timed out)."""
    return {
        **spec_fields(spec, policy),
        "success": False,
        "steps_to_success": None,
        "steps": 0,
        "wait_steps": spec.wait_steps,
        "chunks": 0,
        "clip_rate": None,
        "clip_overshoot_mean": None,
        "clip_overshoot_max": None,
        "out_of_range_rate": None,
        "inference_ms": None,
        "renders": 0,
        "render_s": 0.0,
        "wall_s": 0.0,
        "error": error,
        "info_keys_seen": [],
        "placement_hash": None,
        "gripper_closed": False,
        "failure": failure,
        "eef_path": [],
    }
