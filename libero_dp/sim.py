"""LIBERO simulator access: task lookup, env construction, resets and the one rendering path.

Every stage that touches the simulator goes through this module so that demonstrations,
replays and evaluation see the same scenes, the same reset seeding and the same pixels.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import io
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np


def setup_gl() -> str:
    """Pick a headless MuJoCo backend before mujoco is imported: EGL if present, else OSMesa."""
    if "MUJOCO_GL" not in os.environ:
        backend = "egl" if ctypes.util.find_library("EGL") else "osmesa"
        os.environ["MUJOCO_GL"] = backend
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    return os.environ["MUJOCO_GL"]


setup_gl()

#: Camera names as MuJoCo knows them, and the official HDF5 obs keys they are stored under.
CAMERAS: dict[str, str] = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}
SUITES = ("libero_90", "libero_10", "libero_spatial", "libero_object", "libero_goal")
#: LIBERO's four standard suites, and LIBERO-PRO's perturbations of each (reworded instruction, replaced
#: objects, swapped positions, a new task in the same scene): the 16 robustness suites.
STANDARD_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
PRO_VARIANTS = ("lan", "object", "swap", "task")
PRO_SUITES = tuple(f"{s}_{v}" for s in STANDARD_SUITES for v in PRO_VARIANTS)


@dataclass(frozen=True)
class TaskSpec:
    """A LIBERO task, identified by suite and index; `name` is the bddl stem used in file names."""

    suite: str
    index: int
    name: str
    language: str
    bddl_file: str

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"

    @property
    def label(self) -> str:
        """The task's name in records and metrics: its name in LIBERO's own suites (unique there; earlier
        results use it), `suite/name` in LIBERO-PRO's suites, which reuse their base suite's task names, so a
        base suite and its variants can be evaluated in one run."""
        return self.name if self.suite in SUITES else self.key

    @property
    def file_stem(self) -> str:
        """The label as a file name (demo files, caches): `suite__name` in LIBERO-PRO's suites."""
        return self.label.replace("/", "__")


@cache
def installed_suites() -> dict[str, str]:
    """Every suite the installed benchmark registers -> "" when its task files are all on disk, else what
    is missing (LIBERO-PRO registers suites whose bddl or init files some installs lack)."""
    from libero.libero import benchmark, get_libero_path

    out = {}
    bddl_root, init_root = Path(get_libero_path("bddl_files")), Path(get_libero_path("init_states"))
    for name, cls in sorted(benchmark.get_benchmark_dict().items()):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # each suite prints its task order
                s = cls()
            tasks = [s.get_task(i) for i in range(s.n_tasks)]
        except Exception as e:  # a registered suite whose task map is broken
            out[name] = f"cannot list its tasks ({type(e).__name__}: {e})"
            continue
        missing = []
        for t in tasks:
            init = init_root / t.problem_folder / t.init_states_file
            if init.suffix not in {".npz", ".npy"}:  # how LIBERO-PRO's loader resolves legacy names
                init = init.with_name(init.name + ".npz")
            missing += [str(f) for f in (bddl_root / t.problem_folder / t.bddl_file, init) if not f.is_file()]
        out[name] = f"{len(missing)} files missing, e.g. {missing[0]}" if missing else ""
        if not tasks:
            out[name] = "no tasks"
    return out


def valid_suites() -> list[str]:
    """The suites a task selection may name here: registered, with every task's files present."""
    return [name for name, missing in installed_suites().items() if not missing]


@cache
def _suite(suite: str) -> Any:
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if suite in SUITES and suite in suites:  # LIBERO's own five: no need to stat all 83 registered suites
        return suites[suite]()
    problem = installed_suites().get(suite)
    if suite not in suites or problem:
        why = f"its resources are missing: {problem}" if problem else "no such suite"
        raise ValueError(f"LIBERO suite {suite!r}: {why}; expected one of {valid_suites()}")
    return suites[suite]()


def bddl_language(path: str) -> str | None:
    """The instruction a task file states. LIBERO-PRO's suites keep the original task map, whose `language`
    is the unperturbed sentence; the reworded (`_lan`) or new (`_task`) instruction is only in the file."""
    m = re.search(r"\(:language\s+([^)]*)\)", Path(path).read_text())
    return " ".join(m.group(1).split()).lower() if m else None


def suite_tasks(suite: str) -> list[TaskSpec]:
    """All tasks of a suite, in LIBERO's default order, with the benchmark's sentence (what LIBERO's
    evaluation and published policies use), except LIBERO-PRO's `_lan` / `_task` suites: their reworded or
    new instruction is only in the task file (`_swap` / `_object` perturb the scene, not the words)."""
    from libero.libero import get_libero_path

    s = _suite(suite)
    out = []
    for i in range(s.n_tasks):
        t = s.get_task(i)
        bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
        reworded = suite.endswith(("_lan", "_task"))  # LIBERO-PRO's new sentences, only in the task file
        language = (bddl_language(bddl) or t.language) if reworded else t.language
        out.append(TaskSpec(suite, i, t.name, language, bddl))
    return out


def _match(tasks: list[TaskSpec], name: str) -> list[TaskSpec]:
    """An exact task name selects that task alone; otherwise `name` is a scene prefix (KITCHEN_SCENE10)."""
    exact = [t for t in tasks if t.name == name]
    return exact or [t for t in tasks if t.name.startswith(name + "_")]


def resolve_tasks(spec: str | list[str]) -> list[TaskSpec]:
    """Expand a task selection into TaskSpecs.

    Each item may be a suite (`libero_90`), `suite:index` (`libero_90:0`), `suite/NAME`,
    a bare task name, or a scene prefix (`KITCHEN_SCENE10`, all tasks of that scene).
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError("task list is empty; expected at least one task, suite or scene")
    out: list[TaskSpec] = []
    for item in items:
        item = str(item).strip()
        if item in SUITES or item in installed_suites():
            out.extend(suite_tasks(item))  # raises, listing the valid suites, when its files are missing
            continue
        suite, _, rest = item.partition(":") if ":" in item else item.partition("/")
        if rest and (suite in SUITES or suite in installed_suites()):
            tasks = suite_tasks(suite)
            if rest.isdigit():
                idx = int(rest)
                if not 0 <= idx < len(tasks):
                    raise ValueError(f"task index {idx} out of range for {suite} ({len(tasks)} tasks)")
                out.append(tasks[idx])
            else:
                match = _match(tasks, rest)
                if not match:
                    raise ValueError(f"no task {rest!r} in suite {suite}")
                out.extend(match)
            continue
        match = _match(suite_tasks("libero_90"), item)
        if not match:
            raise ValueError(
                f"unknown task {item!r}: expected a suite (one of {valid_suites()}), 'suite:index', "
                "'suite/NAME', a libero_90 task name or a scene prefix such as KITCHEN_SCENE10"
            )
        out.extend(match)
    seen: dict[str, TaskSpec] = {}
    for t in out:
        seen.setdefault(t.key, t)
    return list(seen.values())


def official_init_states(task: TaskSpec) -> np.ndarray:
    """The benchmark's fixed init states (50 per task); episode k of the protocol starts from k."""
    return np.asarray(_suite(task.suite).get_task_init_states(task.index))


def make_env(task: TaskSpec, image_size: int = 128, render: bool = True) -> Any:
    """An OSC_POSE LIBERO env that never renders inside `step` (fast); images come from `render_views`.

    With `render=False` no offscreen context is created at all (state-only expert search).
    """
    from libero.libero.envs import OffScreenRenderEnv
    from libero.libero.envs.env_wrapper import ControlEnv

    if render:
        env = OffScreenRenderEnv(
            bddl_file_name=task.bddl_file,
            camera_heights=image_size,
            camera_widths=image_size,
            use_camera_obs=False,
        )
    else:
        env = ControlEnv(bddl_file_name=task.bddl_file, use_camera_obs=False, has_offscreen_renderer=False)
    env.seed(0)
    return env


def reset_to(env: Any, reset_seed: int, init_state: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Reset reproducibly: LIBERO samples fixture placements from the global np.random in reset().

    LIBERO appends its articulated-object property samplers to a list on every hard reset without clearing
    it, so each reset draws one more random number than the last and the placement (e.g. the cabinet's
    position) depends on how many resets the env has seen. Clearing the list first makes a reset depend
    only on its seed, whichever worker runs it and in whatever order.
    """
    inner = getattr(env, "env", env)
    if isinstance(getattr(inner, "object_property_initializers", None), list):
        inner.object_property_initializers.clear()
    np.random.seed(reset_seed)
    obs = env.reset()
    if init_state is not None:
        obs = env.set_init_state(init_state)
    return obs


def get_state(env: Any) -> np.ndarray:
    """Flattened MuJoCo state (time, qpos, qvel) as stored in the official `states` dataset."""
    return np.asarray(env.sim.get_state().flatten(), dtype=np.float64)


def model_xml(env: Any) -> str:
    return env.sim.model.get_xml()


def set_state(env: Any, state: np.ndarray) -> None:
    """Put the sim in a recorded flattened state (same model), e.g. to render a stored step."""
    env.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
    env.sim.forward()


def env_metadata(env: Any, task: TaskSpec, image_size: int) -> dict[str, Any]:
    """What the official files store about the env (attrs env_name, problem_info, env_args)."""
    return {
        "env_name": type(env.env).__name__,
        "problem_name": env.problem_name,
        "domain_name": env.domain_name,
        "language": env.language_instruction,
        "bddl_file": task.bddl_file,
        "env_kwargs": {
            "bddl_file_name": task.bddl_file,
            "robots": ["Panda"],
            "controller": "OSC_POSE",
            "control_freq": 20,
            "camera_names": list(CAMERAS),
            "camera_heights": image_size,
            "camera_widths": image_size,
        },
    }


def render_views(env: Any, image_size: int) -> dict[str, np.ndarray]:
    """Render both cameras for the current sim state, in the official files' orientation.

    This is the only rendering function of the project: collection stores its output, and
    evaluation calls it at the steps where the policy reads images, so pixels match exactly.
    Images are in OpenGL convention (upside down), as LIBERO stores them; use `upright`.
    """
    env.sim.forward()  # positions consistent with qpos, whether we got here by stepping or by set_state
    out = {}
    for cam, key in CAMERAS.items():
        img = env.sim.render(camera_name=cam, width=image_size, height=image_size)
        out[key] = np.ascontiguousarray(img, dtype=np.uint8)
    return out


def upright(images: np.ndarray) -> np.ndarray:
    """Flip rows of (..., H, W, 3) images from OpenGL convention to a viewable, upright image."""
    return np.ascontiguousarray(images[..., ::-1, :, :])


def quat_xyzw_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """robosuite's quat2axisangle, vectorised: (..., 4) xyzw -> (..., 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q * np.where(q[..., 3:4] < 0, -1.0, 1.0)
    w = np.clip(q[..., 3], -1.0, 1.0)
    den = np.sqrt(np.maximum(1.0 - w * w, 0.0))
    angle = 2.0 * np.arccos(w)
    safe = den > 1e-10
    scale = np.where(safe, angle / np.where(safe, den, 1.0), 0.0)
    return q[..., :3] * scale[..., None]


def proprio_from_obs(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The official per-step proprio keys from a robosuite observation dict."""
    pos = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
    quat = np.asarray(obs["robot0_eef_quat"], dtype=np.float64)
    ori = quat_xyzw_to_axis_angle(quat)
    grip = np.asarray(obs["robot0_gripper_qpos"], dtype=np.float64)
    return {
        "ee_pos": pos,
        "ee_ori": ori,
        "ee_states": np.concatenate([pos, ori]),
        "gripper_states": grip,
        "joint_states": np.asarray(obs["robot0_joint_pos"], dtype=np.float64),
        # robot_states as LIBERO's get_robot_state_vector: gripper qpos, eef pos, eef quat
        "robot_states": np.concatenate([grip, pos, quat]),
    }


def check_success(env: Any) -> bool:
    """LIBERO's goal predicates. env.step's info dict is always empty: never read info['success']."""
    return bool(env.check_success())
