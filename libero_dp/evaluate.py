"""Closed-loop evaluation in LIBERO, following the benchmark's protocol, on Ray actors.

Protocol (as LIBERO's own evaluation): episode i of a task starts from official init state i mod 50 after a
seeded reset (reset seed = seed*1000 + i; the fixture placement comes from np.random), then `num_steps_wait`
no-op steps; success = `done` from env.step or `env.check_success()` at ANY step (LIBERO's info is always {});
the episode ends at success or after `max_steps` policy steps.

Why the pieces look the way they do:
* Observations are built exactly as the training frames (extract.py / windows.py): both cameras from
  `sim.render_views`, flipped upright, the last K frames oldest first (padded at the start by repeating the
  first policy frame), proprio from `sim.proprio_from_obs` -> `Transform.proprio_to_model`.
* Rendering dominates the cost (~140 ms per step for both cameras on this CPU machine), so images are rendered
  only at the steps the policy reads (the re-plan step and the K-1 before it). `eval.render: every_step`
  renders every step instead (benchmarking); both give identical pixels at the steps read (tested).
* Videos are not rendered during the episode: each step's flattened sim state is stored (cheap) and the chosen
  episodes are re-rendered afterwards from the seeded reset (same fixture placement) + `sim.set_state`.
* Each episode is an independent unit on a Ray actor; its record is cached as one JSON file the moment it
  arrives, keyed by a hash of everything that changes the result, outside the DVC output, so a killed run
  resumes. An exception inside an episode is that episode's error (cached: it is deterministic); an actor that
  dies costs one retry, then an error record that is not cached (OOM kills are transient: rerun on resume).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median
from typing import Any, Protocol

import numpy as np

from libero_dp import sim
from libero_dp.bddl import family_of
from libero_dp.config import EvalParams, ExecParams
from libero_dp.fileio import atomic_dir, atomic_path, write_json
from libero_dp.metrics import rate_summary

NOOP = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
CONTROL_HZ = 20.0
FAILURE_LABELS = ("error", "gripper_never_closed", "stuck", "timed_out_moving")
STUCK_WINDOW = 50  # steps at the end of a failed episode that are checked for motion
STUCK_PATH_M = 0.01  # hand path length over that window below which the episode counts as stuck
MAX_ENVS_PER_WORKER = 3  # LRU of envs per actor (~2 GB each); episodes are scheduled task by task
MAX_ATTEMPTS = 2  # an episode whose actor died is retried once
DEFAULT_IMAGE_SIZE = 128


class Runner(Protocol):
    """What evaluation needs from a policy (sampling.PolicyRunner, or a stand-in in tests)."""

    horizon: int
    image_history: int

    def predict_chunk(
        self, frames: dict[str, np.ndarray], proprio: np.ndarray, language: str, seed: int | None = None
    ) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------ episodes
@dataclass
class EpisodeSpec:
    """One unit of work. For `replay`, reset seed / init state / actions come from the demo file."""

    task: sim.TaskSpec
    index: int  # episode index i within (task, seed)
    seed: int
    reset_seed: int
    init_state: np.ndarray | None
    wait_steps: int
    max_steps: int
    language: str
    init_index: int | None = None  # official init state used (None for replay)
    demo: str | None = None  # replayed demo key
    actions: np.ndarray | None = field(default=None, repr=False)
    ref_states: np.ndarray | None = field(default=None, repr=False)  # the demo's states, to check the replay

    @property
    def key(self) -> str:
        return f"{self.task.name}/s{self.seed}_e{self.index:03d}"


def protocol_specs(
    task: sim.TaskSpec, seeds: list[int], episodes: int, ep: EvalParams, language: str | None = None
) -> list[EpisodeSpec]:
    """The benchmark's episodes: i starts from official init state i mod 50, reset seed seed*1000 + i."""
    inits = sim.official_init_states(task)
    return [
        EpisodeSpec(
            task,
            i,
            s,
            s * 1000 + i,
            inits[i % len(inits)],
            ep.num_steps_wait,
            ep.max_steps,
            language or task.language,
            init_index=i % len(inits),
        )
        for s in seeds
        for i in range(episodes)
    ]


def replay_specs(
    task: sim.TaskSpec, demo_file: Path, seeds: list[int], episodes: int, ep: EvalParams
) -> list[EpisodeSpec]:
    """Episode i replays demo i (mod the number of demos) from its own reset seed and init state, without wait
    steps, for all of its actions (eval.max_steps does not cut a replay short)."""
    import h5py

    from libero_dp.dataformat import demo_keys

    if not demo_file.exists():
        raise FileNotFoundError(f"{demo_file}: no demo file for task {task.name} (eval.policy=replay)")
    out = []
    with h5py.File(demo_file, "r") as f:
        keys = demo_keys(f["data"])
        if not keys:
            raise ValueError(f"{demo_file}: no demo_<i> groups to replay")
        for s in seeds:
            for i in range(episodes):
                k = keys[i % len(keys)]
                g = f["data"][k]
                if "reset_seed" not in g.attrs:
                    raise ValueError(
                        f"{demo_file}: data/{k} has no 'reset_seed' attribute; replay needs "
                        "the seed of the recorded reset (fixture placement), as collect stores"
                    )
                init = np.asarray(g.attrs["init_state"])
                out.append(
                    EpisodeSpec(
                        task,
                        i,
                        s,
                        int(g.attrs["reset_seed"]),
                        init,
                        0,
                        int(g["actions"].shape[0]),
                        task.language,
                        demo=k,
                        actions=np.asarray(g["actions"][()], dtype=np.float64),
                        ref_states=np.asarray(g["states"][()]) if "states" in g else None,
                    )
                )
    return out


# --------------------------------------------------------------------------------------- controllers
class Controller:
    """Turns observations into raw (unclipped) 7-D actions; base class = no images, acts every step."""

    uses_images = False
    image_history = 1
    max_steps: int | None = None

    def __init__(self) -> None:
        self.chunks = 0
        self.inference_s: list[float] = []
        self.model_values = 0
        self.model_out_of_range = 0

    def begin(self, env: Any, obs: dict) -> None:
        """Called after reset and wait steps, before the first action."""

    def steps_until_replan(self) -> int:
        """Steps from now until the policy next reads images (0 = at this step)."""
        return 0

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        raise NotImplementedError


class ExpertController(Controller):
    """The scripted privileged-state expert, acting every step (reference policy).

    With `read_every` > 0 it also reads the images a policy re-planning every `read_every` steps with
    `history` frames would read (and ignores them), so that its evaluation costs what a policy's would.
    """

    def __init__(self, task: sim.TaskSpec, read_every: int = 0, history: int = 2) -> None:
        from libero_dp.expert import make_expert

        super().__init__()
        self.expert = make_expert(task)
        self.read_every = read_every
        self.uses_images = read_every > 0
        self.image_history = history
        self._t = 0

    def begin(self, env: Any, obs: dict) -> None:
        self.expert.reset(env)
        self._t = 0

    def steps_until_replan(self) -> int:
        return (-self._t) % self.read_every if self.read_every else 0

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        if self.read_every and t % self.read_every == 0:
            frames()  # what a policy would read here (raises if the on-demand schedule missed a frame)
            self.chunks += 1
        self._t = t + 1
        return np.asarray(self.expert.act(env, obs), dtype=np.float64)


class ReplayController(Controller):
    """Recorded demo actions, open loop (reference policy: must succeed)."""

    def __init__(self, actions: np.ndarray) -> None:
        super().__init__()
        self.actions = np.asarray(actions, dtype=np.float64)
        self.max_steps = len(self.actions)

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        return self.actions[t]


def executed_indices(horizon: int, steps: int, stride: int) -> list[int]:
    """Chunk indices run before re-planning: chunk[0:steps:stride] (steps 64, stride 8 -> 0, 8, .., 56)."""
    if not 1 <= steps <= horizon:
        raise ValueError(f"exec.steps={steps}: expected 1..H where H={horizon} is the policy's chunk length")
    if stride < 1:
        raise ValueError(f"exec.stride={stride}: expected >= 1")
    return list(range(0, steps, stride))


class ChunkController(Controller):
    """A chunking policy: execute chunk[0:steps:stride], then re-plan; or ACT-style temporal ensembling.

    Temporal ensemble: re-plan every step; the action for step t averages, in model units, every stored
    prediction made at r <= t that covers t (t - r < len(executed)), entry executed[t - r] of that chunk, with
    ACT's weights w_i = exp(-k * i), i = 0 for the OLDEST prediction (ACT weights older predictions more, to
    smooth; k sets how fast newer ones are taken in), then converts the average to raw units.
    """

    uses_images = True

    def __init__(self, runner: Runner, transform: Any, xp: ExecParams, language: str, seed_base: int) -> None:
        super().__init__()
        self.runner, self.transform, self.xp = runner, transform, xp
        self.language, self.seed_base = language, seed_base
        self.image_history = int(runner.image_history)
        self.idx = executed_indices(int(runner.horizon), xp.steps, xp.stride)
        self.queue: deque[np.ndarray] = deque()
        self.history: deque[tuple[int, np.ndarray]] = deque(maxlen=len(self.idx))

    def steps_until_replan(self) -> int:
        return 0 if self.xp.temporal_ensemble else len(self.queue)

    def _predict(self, obs: dict, frames: dict[str, np.ndarray]) -> np.ndarray:
        prop = sim.proprio_from_obs(obs)
        proprio = self.transform.proprio_to_model(prop["ee_pos"], prop["ee_ori"], prop["gripper_states"])
        seed = (self.seed_base * 1000 + self.chunks) % 2**31  # reproducible noise per (episode, chunk)
        t0 = time.perf_counter()
        chunk = self.runner.predict_chunk(frames, proprio, self.language, seed=seed)
        chunk = np.asarray(chunk, dtype=np.float64)
        self.inference_s.append(time.perf_counter() - t0)
        self.chunks += 1
        if chunk.ndim != 2 or chunk.shape[0] < self.idx[-1] + 1:
            need = self.idx[-1] + 1
            raise ValueError(f"policy returned a chunk of shape {chunk.shape}; expected (H>={need}, Da)")
        self.model_values += chunk.size
        self.model_out_of_range += int(np.sum(np.abs(chunk) > 1.0))
        return chunk

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        if self.xp.temporal_ensemble:
            self.history.append((t, self._predict(obs, frames())))
            rows, weights = [], []
            for r, chunk in self.history:  # oldest first
                age = t - r
                if age < len(self.idx):
                    rows.append(chunk[self.idx[age]])
                    weights.append(math.exp(-self.xp.ensemble_k * len(weights)))
            w = np.asarray(weights)[:, None]
            model = np.sum(np.stack(rows) * w, axis=0) / w.sum()
            return self.transform.actions_from_model(model)
        if not self.queue:
            chunk = self._predict(obs, frames())
            self.queue.extend(self.transform.actions_from_model(chunk[self.idx]))
        return self.queue.popleft()


# ------------------------------------------------------------------------------------------- rollout
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
        **_spec_fields(spec, policy),
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
    from libero_dp.expert import parse_goal

    try:
        return any(p[0] in ("on", "in") for p in parse_goal(Path(task.bddl_file).read_text()))
    except (OSError, ValueError):
        return False


# -------------------------------------------------------------------------------------------- worker
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
        except Exception as e:  # noqa: BLE001
            rec = _error_record(spec, self.cfg.policy, f"{type(e).__name__}: {e}")
            rec["wall_s"] = time.perf_counter() - t0
            return rec, {}
        rec, arrays = rollout(
            env,
            spec,
            ctrl,
            image_size=self.cfg.image_size,
            render=self.cfg.render,
            needs_grasp=task_needs_grasp(spec.task),
            policy=self.cfg.policy,
        )
        rec["wall_s"] = time.perf_counter() - t0
        rec["pid"] = os.getpid()
        return rec, arrays

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


def _spec_fields(spec: EpisodeSpec, policy: str) -> dict[str, Any]:
    """The fields that identify an episode, shared by normal and error records."""
    return {
        "task": spec.task.name,
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


def _error_record(spec: EpisodeSpec, policy: str, error: str) -> dict[str, Any]:
    return {
        **_spec_fields(spec, policy),
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
        "failure": "error",
        "eef_path": [],
    }


# ----------------------------------------------------------------------------------------------- Ray
@contextmanager
def ray_session(workers: int, address: str | None = None) -> Iterator[Any]:
    """Local Ray with `workers` CPUs (quiet), or connect to `address`; shut down only what we started."""
    import logging

    import ray

    if ray.is_initialized():  # someone else owns the session (a notebook, a caller): use it, leave it up
        yield ray
        return
    kw: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address:
        # `ray start` turns token auth on when a token exists (and RAY_AUTH_MODE is unset), but
        # ray.init(address=...) does not infer it (Ray 2.60): apply the same rule with Ray's own helper
        try:
            from ray._private.authentication import authentication_token_setup as auth

            auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        except (ImportError, AttributeError):  # other Ray versions: RAY_AUTH_MODE decides
            pass
        ray.init(address=address, **kw)
    else:
        # RAY_ADDRESS in the environment would make a local init connect elsewhere; we asked for local
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=128 * 1024**2, **kw)
    try:
        yield ray
    finally:
        ray.shutdown()


class _Pool:
    """`workers` actors with dynamic scheduling (an idle actor takes the next episode, preferring a task whose
    env it already holds); a dead actor is replaced and its episode retried once."""

    def __init__(self, ray: Any, cfg: WorkerConfig, workers: int) -> None:
        self.ray, self.cfg = ray, cfg
        self.remote_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EpisodeWorker)
        self.actors = [self._new() for _ in range(workers)]
        self.tasks_held: list[list[str]] = [[] for _ in range(workers)]

    def _new(self) -> Any:
        return self.remote_cls.remote(self.cfg)

    def replace(self, i: int) -> None:
        try:
            self.ray.kill(self.actors[i], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors[i] = self._new()
        self.tasks_held[i] = []

    def setup(self) -> list[dict[str, Any]]:
        return self.ray.get([a.setup.remote() for a in self.actors])

    def run_all(self, specs: list[EpisodeSpec], on_done: Callable[[EpisodeSpec, dict, dict], None]) -> None:
        from ray.exceptions import RayActorError, RayError

        queue: deque[tuple[EpisodeSpec, int]] = deque((s, 1) for s in specs)
        inflight: dict[Any, tuple[int, EpisodeSpec, int]] = {}

        def submit(i: int) -> None:
            if not queue:
                return
            pick = next((j for j, (s, _) in enumerate(queue) if s.task.key in self.tasks_held[i]), 0)
            spec, attempt = queue[pick]
            del queue[pick]
            if spec.task.key not in self.tasks_held[i]:
                self.tasks_held[i] = (self.tasks_held[i] + [spec.task.key])[-MAX_ENVS_PER_WORKER:]
            inflight[self.actors[i].run.remote(spec)] = (i, spec, attempt)

        for i in range(len(self.actors)):
            submit(i)
        while inflight:
            ready, _ = self.ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            i, spec, attempt = inflight.pop(ref)
            try:
                rec, arrays = self.ray.get(ref)
            except RayActorError as e:  # the process died (segfault, OOM kill, os._exit)
                self.replace(i)
                if attempt < MAX_ATTEMPTS:
                    queue.appendleft((spec, attempt + 1))
                    submit(i)
                    continue
                rec, arrays = (
                    _error_record(
                        spec,
                        self.cfg.policy,
                        f"worker died ({attempt} attempts): {type(e).__name__}: {str(e)[:300]}",
                    ),
                    {},
                )
                rec["actor_died"] = True
            except RayError as e:
                rec, arrays = _error_record(spec, self.cfg.policy, f"{type(e).__name__}: {str(e)[:600]}"), {}
            rec["attempts"] = attempt
            on_done(spec, rec, arrays)
            submit(i)

    def map_videos(self, jobs: list[tuple[Any, ...]]) -> list[bytes | Exception]:
        """Render videos on the actors, round robin; a failure is returned, not raised."""
        refs = [self.actors[n % len(self.actors)].render_video.remote(*job) for n, job in enumerate(jobs)]
        out: list[bytes | Exception] = []
        for r in refs:
            try:
                out.append(self.ray.get(r))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out


# -------------------------------------------------------------------------------------------- driver
def _hash_file(path: Path, h: Any) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def hash_paths(paths: list[Path]) -> str:
    """Content hash of files (directories: every file below, by relative path)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            _hash_file(f, h)
    return h.hexdigest()


def model_info(models_dir: Path) -> dict[str, Any]:
    """Tasks, languages and data image size the policy was trained on, from models/config.json.

    config['dataset'] (train.py) holds image_size (the extracted frames' size, which the policy is fed; the
    encoder resizes internally), languages and windows_dir; task names come from
    config['dataset']['task_names'] if present, else from the windows stage's meta.json (same order as
    languages).
    """
    path = Path(models_dir) / "config.json"
    if not path.exists():
        return {}
    ds = json.loads(path.read_text()).get("dataset", {})
    info: dict[str, Any] = {k: ds[k] for k in ("task_names", "languages") if k in ds}
    if "image_size" in ds:
        info["data_image_size"] = int(ds["image_size"])
    meta = Path(ds.get("windows_dir", "")) / "meta.json"
    if "task_names" not in info and ds.get("windows_dir") and meta.exists():
        m = json.loads(meta.read_text())
        info["task_names"] = m.get("task_names", [])
        info.setdefault("languages", m.get("languages", []))
    return info


def checkpoint_files(models_dir: Path, weights: str) -> list[Path]:
    """The files PolicyRunner.load reads (train_state.pt, with the optimizer, is not one of them)."""
    weights_file = "ema.safetensors" if weights == "ema" else "model.safetensors"
    names = ["config.json", weights_file, "language.safetensors"]
    files = [Path(models_dir) / n for n in names if (Path(models_dir) / n).exists()]
    return files or [Path(models_dir)]


def _demo_file(demos_dir: Path, task: sim.TaskSpec) -> Path:
    return Path(demos_dir) / f"{task.name}_demo.hdf5"


def eval_tasks(ep: EvalParams, info: dict[str, Any], demos_dir: Path) -> list[sim.TaskSpec]:
    """`from_data`: the learned policy's training tasks (models config), else the tasks with demo files."""
    if ep.tasks != "from_data":
        return sim.resolve_tasks(ep.tasks)
    if ep.policy == "learned":
        if not info.get("task_names"):
            raise ValueError("eval.tasks=from_data: models/config.json names no task_names; list eval.tasks")
        return tasks_by_name(list(info["task_names"]))
    names = sorted(p.name[: -len("_demo.hdf5")] for p in Path(demos_dir).glob("*_demo.hdf5"))
    if not names:
        raise ValueError(f"eval.tasks=from_data: no *_demo.hdf5 in {demos_dir}; list eval.tasks")
    return tasks_by_name(names)


def tasks_by_name(names: list[str]) -> list[sim.TaskSpec]:
    """Exact task names -> TaskSpecs. Not sim.resolve_tasks: it treats a name as a scene prefix too, so
    KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet would also pull in
    KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet_and_put_the_black_bowl_on_top_of_it.
    """
    out = []
    for name in names:
        match = next((t for suite in sim.SUITES for t in sim.suite_tasks(suite) if t.name == name), None)
        if match is None:
            raise ValueError(f"unknown task name {name!r} (from the training data); expected a LIBERO task")
        out.append(match)
    return out


def cache_key(
    ep: EvalParams,
    xp: ExecParams,
    models_dir: Path,
    stats_path: Path,
    demo_files: list[Path],
    image_size: int,
    runner_factory: Callable | None,
) -> str:
    """Hash of everything that changes an episode's outcome (not which episodes, workers or videos)."""
    here = Path(__file__).parent
    code = [here / "evaluate.py", here / "sim.py"]
    parts: dict[str, Any] = {
        "policy": ep.policy,
        "max_steps": ep.max_steps,
        "num_steps_wait": ep.num_steps_wait,
        "image_size": image_size,
    }
    if ep.policy == "learned":
        parts.update(weights=ep.weights, exec=xp.model_dump(), stats=hash_paths([stats_path]))
        if runner_factory is None:
            parts["checkpoint"] = hash_paths(checkpoint_files(models_dir, ep.weights))
            code += [here / n for n in ("sampling.py", "policy.py", "units.py", "rdt.py", "statevec.py")]
            code += [here / "checkpoint.py", here / "encoders.py"]
        else:
            fn = getattr(runner_factory, "func", runner_factory)
            parts["runner"] = [
                getattr(fn, "__module__", ""),
                getattr(fn, "__qualname__", repr(fn)),
                repr(getattr(runner_factory, "args", ())),
                repr(sorted(getattr(runner_factory, "keywords", {}).items())),
            ]
    elif ep.policy == "expert":
        code += [*sorted((here / "expert").glob("*.py")), here / "bddl.py"]
    else:
        parts["demos"] = hash_paths(demo_files)
    parts["code"] = hash_paths([p for p in code if p.exists()])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record_path(cache: Path, spec: EpisodeSpec) -> Path:
    return cache / f"{spec.key}.json"


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
    size = int(image_size or info.get("data_image_size") or _extracted_image_size() or DEFAULT_IMAGE_SIZE)
    if ep.policy == "learned":
        if not stats_path.exists():
            raise FileNotFoundError(f"{stats_path}: the scale stage's stats.json is needed to decode actions")
    specs: list[EpisodeSpec] = []
    demo_files: list[Path] = []
    for task in tasks:
        if ep.policy == "replay":
            demo_files.append(_demo_file(demos_dir, task))
            specs += replay_specs(task, demo_files[-1], ep.seeds, ep.episodes_per_task, ep)
        else:
            specs += protocol_specs(task, ep.seeds, ep.episodes_per_task, ep, languages.get(task.name))
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
        p = _record_path(cache, s)
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
    need_actors = bool(todo) or _videos_missing(ep, specs, records, cache)
    if need_actors:
        with ray_session(ep.workers, ep.ray_address) as ray:
            pool = _Pool(ray, cfg, min(ep.workers, max(len(todo), 1)))
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
                    with atomic_path(_record_path(cache, spec).with_suffix(".npz"), ".npz") as tmp:
                        with open(tmp, "wb") as fh:
                            np.savez_compressed(fh, **arrays)
                if not rec.get("actor_died"):  # a dead worker may be transient (OOM): rerun on resume
                    write_json(_record_path(cache, spec), rec)
                records[spec.key] = rec
                new_keys.append(spec.key)
                bar.update(1)
                bar.set_postfix(success=f"{sum(r['success'] for r in records.values())}/{len(records)}")

            t0 = time.perf_counter()
            pool.run_all(todo, on_done)
            t_episodes = time.perf_counter() - t0
            bar.close()
            videos = _make_videos(ep, specs, records, cache, pool)
    else:
        videos = _make_videos(ep, specs, records, cache, None)
    ordered = [records[s.key] for s in specs]
    with atomic_dir(out_dir) as tmp:
        with open(tmp / "records.jsonl", "w") as f:
            for r in ordered:
                f.write(json.dumps(r) + "\n")
        if videos:
            (tmp / "videos").mkdir()
            for name, data in videos.items():
                (tmp / "videos" / name).write_bytes(data)
    new = [records[k] for k in new_keys]
    metrics = summarise(
        ep, xp, tasks, ordered, new, t_episodes, time.perf_counter() - t_start, key, size, sorted(videos)
    )
    metrics["timing"]["ray"] = cluster
    if ep.policy == "expert" and collect_metrics is not None and Path(collect_metrics).exists():
        collected = json.loads(Path(collect_metrics).read_text()).get("tasks", {})
        for name, t in metrics["tasks"].items():
            ref = collected.get(name, {}).get("expert_official", {})
            if ref.get("n"):
                t["collect_success_rate"] = ref["success_rate"]
                lo, hi = t["wilson95"]
                t["collect_within_wilson95"] = (
                    lo - 1e-9 <= ref["success_rate"] <= hi + 1e-9
                )  # float-rounded bounds
    return metrics


def _extracted_image_size() -> int | None:
    meta = Path("data/extracted/meta.json")
    try:
        return int(json.loads(meta.read_text())["image_size"])
    except (OSError, KeyError, ValueError):
        return None


def _video_choices(ep: EvalParams, specs: list[EpisodeSpec], records: dict[str, dict]) -> list[EpisodeSpec]:
    """First `videos_success` successes and `videos_failure` failures (errors excluded) per task."""
    out: list[EpisodeSpec] = []
    counts: dict[tuple[str, bool], int] = {}
    for s in specs:
        r = records.get(s.key)
        if r is None or r.get("error"):
            continue
        kind = (s.task.name, bool(r["success"]))
        limit = ep.videos_success if r["success"] else ep.videos_failure
        if counts.get(kind, 0) < limit:
            counts[kind] = counts.get(kind, 0) + 1
            out.append(s)
    return out


def _video_name(spec: EpisodeSpec, rec: dict) -> str:
    return f"{spec.task.name}_s{spec.seed}_e{spec.index:03d}_{'success' if rec['success'] else 'failure'}.mp4"


def _videos_missing(ep: EvalParams, specs: list[EpisodeSpec], records: dict, cache: Path) -> bool:
    chosen = _video_choices(ep, specs, records)
    return any(
        not _record_path(cache, s).with_suffix(".mp4").exists()
        and _record_path(cache, s).with_suffix(".npz").exists()
        for s in chosen
    )


def _make_videos(
    ep: EvalParams, specs: list[EpisodeSpec], records: dict, cache: Path, pool: _Pool | None
) -> dict[str, bytes]:
    """Cached MP4s for the chosen episodes; render the missing ones on the actors from stored states."""
    chosen = _video_choices(ep, specs, records)
    todo = [
        s
        for s in chosen
        if not _record_path(cache, s).with_suffix(".mp4").exists()
        and _record_path(cache, s).with_suffix(".npz").exists()
    ]
    if todo and pool is not None:
        jobs = []
        for s in todo:
            with np.load(_record_path(cache, s).with_suffix(".npz")) as z:
                states = z["states"]
            jobs.append(
                (
                    s.task,
                    records[s.key]["reset_seed"],
                    states,
                    records[s.key].get("placement_hash"),
                    ep.video_every,
                )
            )
        for s, res in zip(todo, pool.map_videos(jobs), strict=True):
            if isinstance(res, Exception):
                print(f"[eval] video for {s.key} failed: {type(res).__name__}: {str(res)[:300]}")
                continue
            with atomic_path(_record_path(cache, s).with_suffix(".mp4"), ".mp4") as tmp:
                tmp.write_bytes(res)
    out = {}
    for s in chosen:
        p = _record_path(cache, s).with_suffix(".mp4")
        if p.exists():
            out[_video_name(s, records[s.key])] = p.read_bytes()
    return out


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(mean(xs)) if xs else None


def summarise(
    ep: EvalParams,
    xp: ExecParams,
    tasks: list[sim.TaskSpec],
    records: list[dict],
    new: list[dict],
    t_episodes: float,
    wall_s: float,
    key: str,
    image_size: int,
    videos: list[str],
) -> dict[str, Any]:
    """Per-task and overall success with Wilson intervals, action clipping, failure labels, timing."""
    per_task: dict[str, Any] = {}
    for task in tasks:
        rs = [r for r in records if r["task"] == task.name]
        succ = [r for r in rs if r["success"]]
        labels = {lab: sum(r.get("failure") == lab for r in rs) for lab in FAILURE_LABELS}
        sts = [r["steps_to_success"] for r in succ]
        per_task[task.name] = {
            **rate_summary(len(succ), len(rs)),
            "family": family_of(task),
            "mean_steps_to_success": _mean(sts),
            "median_steps_to_success": float(median(sts)) if sts else None,
            "mean_clip_rate": _mean([r["clip_rate"] for r in rs]),
            "mean_out_of_range_rate": _mean([r["out_of_range_rate"] for r in rs]),
            "mean_inference_ms": _mean([r["inference_ms"] for r in rs]),
            "errors": sum(bool(r["error"]) for r in rs),
            "failures": labels,
        }
    n = len(records)
    succ_n = sum(r["success"] for r in records)
    steps_new = sum(r["steps"] + (r["wait_steps"] if r["steps"] else 0) for r in new)
    overall = {
        **rate_summary(succ_n, n),
        "mean_task_success_rate": _mean([t["success_rate"] for t in per_task.values()]),
        "errors": sum(bool(r["error"]) for r in records),
        "mean_clip_rate": _mean([r["clip_rate"] for r in records]),
        "mean_out_of_range_rate": _mean([r["out_of_range_rate"] for r in records]),
        "mean_inference_ms": _mean([r["inference_ms"] for r in records]),
        "failures": {lab: sum(r.get("failure") == lab for r in records) for lab in FAILURE_LABELS},
    }
    families: dict[str, Any] = {}
    for fam in sorted({t["family"] for t in per_task.values()}):
        ts = [(name, t) for name, t in per_task.items() if t["family"] == fam]
        fr = [r for r in records if r["task"] in dict(ts)]
        families[fam] = {
            **rate_summary(sum(r["success"] for r in fr), len(fr)),
            "tasks": len(ts),
            "mean_task_success_rate": _mean([t["success_rate"] for _, t in ts]),
            "tasks_at_least_90pct": sum(t["success_rate"] >= 0.9 for _, t in ts),
            "failures": {lab: sum(r.get("failure") == lab for r in fr) for lab in FAILURE_LABELS},
        }
    timing = {
        "wall_s": wall_s,
        "episodes_run": len(new),
        "episodes_cached": n - len(new),
        "episodes_per_hour": 3600.0 * len(new) / t_episodes if new and t_episodes > 0 else None,
        "env_steps_per_s": steps_new / t_episodes if new and t_episodes > 0 else None,
        "mean_episode_wall_s": _mean([r["wall_s"] for r in new]),
        "renders_per_step": (sum(r["renders"] for r in new) / steps_new) if steps_new else None,
        "workers": ep.workers,
    }
    return {
        "policy": ep.policy,
        "overall": overall,
        "families": families,
        "tasks": per_task,
        "exec": xp.model_dump(),
        "eval": {k: v for k, v in ep.model_dump().items() if k != "out_dir"},
        "image_size": image_size,
        "timing": timing,
        "cache_key": key,
        "videos": videos,
    }
