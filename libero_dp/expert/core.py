"""Core of the scripted privileged-state expert: scene access, motion skills, the Expert, run_episode.

The plan is chosen from the task's bddl `(:goal ...)`, never from the language instruction (task 38's goal
asks for more than its sentence says): one planner per goal predicate (`PLANNERS`, filled by
`libero_dp.expert.planners`), goals run in `order_goals` order, each planned when the previous one is done.
Skills read the true sim state every step and emit smooth OSC_POSE deltas:

* position action = P-control towards a target, capped at `max_pos_action` (1.0 commands 5 cm), or, for
  travel phases that opt in (`MoveTo.free_cap`), a braking speed profile up to `FreeMove.caps`; every
  action is rate-limited (slew) so that it never jumps between steps;
* rotation action = world-frame axis-angle error / 0.5 rad, clipped;
* gripper -1 open / +1 close.

Per-object grasp parameters are data: `GRASP_SPECS` here (keyed by bddl object category), extended by the
skill modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from libero_dp import sim
from libero_dp.bddl import family_of, parse_categories, parse_goal, task_family  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from libero_dp.sim import TaskSpec

T = TypeVar("T")

#: OSC_POSE scales: action 1.0 = 5 cm of position / 0.5 rad of rotation.
POS_SCALE = 0.05
ROT_SCALE = 0.5
NOOP = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
FAILURE_CAUSES = (
    None,
    "grasp_missed",
    "object_dropped",
    "placement_out_of_region",
    "articulation_stuck",
    "timed_out",
)


# ----------------------------------------------------------------------------------------------------------
# Per-object grasp data
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraspSpec:
    """How to grasp one object category.

    mode: "center" closes the fingers across the object's body (boxes, cans, bottles);
    "rim" closes them on a bowl's wall, the hand `rim_offset` from the centre along the finger axis.
    depth: how far below the object's top the grip point goes (clamped to stay above the table).
    yaw: "short_side" closes across the shorter horizontal side; "free" picks the yaw with the most
    clearance to neighbours (then the least rotation).
    """

    mode: str = "center"
    depth: float = 0.03
    rim_offset: float = 0.0
    yaw: str = "free"
    release_height: float = 0.01  # object bottom above the support when the fingers open


GRASP_SPECS: dict[str, GraspSpec] = {
    "akita_black_bowl": GraspSpec(mode="rim", depth=0.02, rim_offset=0.05),
    "white_bowl": GraspSpec(mode="rim", depth=0.02, rim_offset=0.05),
    "plate": GraspSpec(mode="rim", depth=0.006, rim_offset=0.058),
    "alphabet_soup": GraspSpec(depth=0.035),
    "tomato_sauce": GraspSpec(depth=0.035),
    "ketchup": GraspSpec(depth=0.04, yaw="short_side"),
    "cream_cheese": GraspSpec(depth=0.02, yaw="short_side"),
    "butter": GraspSpec(depth=0.02, yaw="short_side"),
    "chocolate_pudding": GraspSpec(depth=0.02, yaw="short_side"),
    "milk": GraspSpec(depth=0.04, yaw="short_side"),
    "orange_juice": GraspSpec(depth=0.04, yaw="short_side"),
}
#: Used for categories not listed above (untested: a centre grasp from the object's bounding box).
DEFAULT_GRASP = GraspSpec()

#: LIBERO-PRO's `_object` suites swap objects for recoloured or rescaled copies under new bddl categories:
#: variant -> (the category whose grasp data applies, size factor of the variant's mesh against it). Read from
#: the asset files: same mesh and scale except `bigger_*` (x1.5); `black_bowl` has its own mesh of the
#: akita bowl's size. Without this they fell to DEFAULT_GRASP (libero_spatial_object: 10% expert success).
CATEGORY_ALIASES: dict[str, tuple[str, float]] = {
    "black_bowl": ("akita_black_bowl", 1.0),
    "bigger_akita_black_bowl": ("akita_black_bowl", 1.5),
    "red_akita_black_bowl": ("akita_black_bowl", 1.0),
    "yellow_plate": ("plate", 1.0),
    "red_cream_cheese": ("cream_cheese", 1.0),
    "green_butter": ("butter", 1.0),
    "green_chocolate_pudding": ("chocolate_pudding", 1.0),
    "yellow_tomato_sauce": ("tomato_sauce", 1.0),
    "bigger_alphabet_soup": ("alphabet_soup", 1.5),
    "blue_ketchup": ("ketchup", 1.0),
    "yellow_milk": ("milk", 1.0),
    "yellow_moka_pot": ("moka_pot", 1.0),
    "white_bottle": ("wine_bottle", 1.0),
    "yellow_stove": ("flat_stove", 1.0),
}
_SIZE_FIELDS = ("depth", "rim_offset")  # lengths of a spec that grow with the object


def spec_for(specs: Mapping[str, T], category: str, default: T) -> T:
    """The spec of `category`, or of the category it is a variant of (lengths scaled), else `default`."""
    if category in specs:
        return specs[category]
    base, size = CATEGORY_ALIASES.get(category, (category, 1.0))
    spec = specs.get(base, default)
    if spec is default or size == 1.0 or not dataclasses.is_dataclass(spec):
        return spec
    names = {f.name for f in dataclasses.fields(spec)}
    return dataclasses.replace(spec, **{k: getattr(spec, k) * size for k in _SIZE_FIELDS if k in names})


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------------------


def rot_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Log map of a rotation matrix (stable near 0 and pi)."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    vec = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-6:
        return 0.5 * vec
    if np.pi - angle < 1e-4:
        # near pi: axis from the diagonal of (R + I) / 2
        m = (r + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(m), 0.0, None))
        k = int(np.argmax(axis))
        axis = m[:, k] / max(axis[k], 1e-9)
        return angle * axis / np.linalg.norm(axis)
    return angle * vec / (2.0 * np.sin(angle))


def down_rotation(finger_axis: np.ndarray) -> np.ndarray:
    """Grip-site orientation pointing down with the fingers closing along `finger_axis` (horizontal).

    The Panda grip site's x axis is the finger axis and its z axis the approach direction.
    """
    f = np.array([finger_axis[0], finger_axis[1], 0.0])
    f /= np.linalg.norm(f)
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([f, np.cross(z, f), z])


def _horizontal(v: np.ndarray) -> np.ndarray:
    out = np.array([v[0], v[1], 0.0])
    n = np.linalg.norm(out)
    return out / n if n > 1e-9 else np.array([1.0, 0.0, 0.0])


# ----------------------------------------------------------------------------------------------------------
# Privileged scene access
# ----------------------------------------------------------------------------------------------------------


class Scene:
    """Reads poses from the live sim. `env.sim` is re-read on every access: resets rebuild the MjSim."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.inner = env.env  # the LIBERO problem env (robosuite)
        self.robot = self.inner.robots[0]

    @property
    def model(self) -> Any:
        return self.env.sim.model

    @property
    def data(self) -> Any:
        return self.env.sim.data

    # -- robot
    @property
    def eef_pos(self) -> np.ndarray:
        return np.array(self.data.site_xpos[self.robot.eef_site_id])

    @property
    def eef_mat(self) -> np.ndarray:
        return np.array(self.data.site_xmat[self.robot.eef_site_id]).reshape(3, 3)

    @property
    def gripper_gap(self) -> float:
        q = self.data.qpos[self.robot._ref_gripper_joint_pos_indexes]
        return float(q[0] - q[1])

    # -- bodies
    def body_id(self, name: str) -> int:
        """Body id of a bddl object/fixture instance name or a raw MuJoCo body name."""
        if name in self.inner.obj_body_id:
            return int(self.inner.obj_body_id[name])
        return int(self.model.body_name2id(name))

    def body_pos(self, name: str) -> np.ndarray:
        return np.array(self.data.xpos[self.body_id(name)])

    def subtree_geoms(self, body: int) -> list[int]:
        """Collision geoms of `body` and its descendants."""
        m = self.model
        out = []
        for g in range(m.ngeom):
            b = int(m.geom_bodyid[g])
            while b not in (0, body):
                b = int(m.body_parentid[b])
            if b == body and (int(m.geom_contype[g]) or int(m.geom_conaffinity[g])):
                out.append(g)
        return out

    def geoms_aabb(self, geoms: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box of some geoms (from MuJoCo's local geom AABBs)."""
        m, d = self.model, self.data
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for g in geoms:
            rot = np.array(d.geom_xmat[g]).reshape(3, 3)
            c = np.array(d.geom_xpos[g]) + rot @ m.geom_aabb[g, :3]
            h = np.abs(rot) @ m.geom_aabb[g, 3:]
            lo, hi = np.minimum(lo, c - h), np.maximum(hi, c + h)
        return lo, hi

    def aabb(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.geoms_aabb(self.subtree_geoms(self.body_id(name)))

    def body_mat(self, name: str) -> np.ndarray:
        return np.array(self.data.xmat[self.body_id(name)]).reshape(3, 3)

    def site(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centre, rotation, half-size) of a site."""
        sid = self.model.site_name2id(name)
        return (
            np.array(self.data.site_xpos[sid]),
            np.array(self.data.site_xmat[sid]).reshape(3, 3),
            np.array(self.model.site_size[sid]),
        )

    def joint_q(self, name: str) -> float:
        return float(self.data.qpos[self.model.get_joint_qpos_addr(name)])

    def obstacle_names(self, exclude: set[str]) -> list[str]:
        names = list(self.inner.objects_dict) + list(self.inner.fixtures_dict)
        return [n for n in names if n not in exclude and n in self.inner.obj_body_id]


# ----------------------------------------------------------------------------------------------------------
# Skills
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Limits:
    """Action shaping shared by all skills."""

    max_pos_action: float = 0.3  # |position action| per component (1.0 = 5 cm)
    max_rot_action: float = 1.0
    pos_slew: float = 0.08  # max change of a position action component between steps
    rot_slew: float = 0.25
    pos_gain: float = 1.0  # action = gain * error / 5 cm (gain 1: the OSC goal is the target itself)
    rot_gain: float = 1.0


class Skill:
    """One phase of a plan. `step` returns the action, or None once the phase is complete."""

    name = "skill"

    def __init__(self) -> None:
        self.t = 0

    def start(self, scene: Scene) -> None:  # noqa: B027 - optional hook
        pass

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        raise NotImplementedError


def _pos_action(err: np.ndarray, lim: Limits, cap: float | None = None) -> np.ndarray:
    a = lim.pos_gain * np.asarray(err) / POS_SCALE
    cap = lim.max_pos_action if cap is None else min(cap, lim.max_pos_action)
    m = float(np.max(np.abs(a)))
    return a * (cap / m) if m > cap else a


def _rot_action(target: np.ndarray, current: np.ndarray, lim: Limits) -> tuple[np.ndarray, float]:
    err = rot_to_axis_angle(target @ current.T)
    a = np.clip(lim.rot_gain * err / ROT_SCALE, -lim.max_rot_action, lim.max_rot_action)
    return a, float(np.linalg.norm(err))


def _nearest_finger_rot(finger_axis: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Down orientation for +/- finger_axis, whichever is closer (the two-finger gripper is symmetric)."""
    cands = [down_rotation(finger_axis), down_rotation(-np.asarray(finger_axis))]
    return min(cands, key=lambda r: np.linalg.norm(rot_to_axis_angle(r @ current.T)))


Target = Callable[[Scene], np.ndarray]


@dataclass
class FreeMove:
    """Velocity-profile control for moves through free space (opted into per MoveTo with `free_cap`).

    The hand's per-step displacement follows the command with lag (fitted on the Panda OSC at 20 Hz:
    disp[k+1] ~ alpha * disp[k] + beta * action[k], i.e. ~1.15 cm/step at steady action 1.0). The skill
    asks for the speed sqrt(2 * decel * d) (capped; then `final_rate * d` in the last cm) towards the goal
    and inverts the model for the action: it brakes early enough that the per-step slew limit does not
    make it overshoot. With the plain 0.3 cap the hand moves ~0.35 cm per step; free moves ~3x faster.

    caps: phase name -> largest position action (1.0 = 5 cm per step commanded), for planners that opt in.
    """

    caps: dict[str, float] = field(
        default_factory=lambda: {
            "approach": 1.0,
            "lift": 1.0,
            "carry": 1.0,
            "retreat": 1.0,
            "descend": 0.6,
            "lower": 0.6,
        }
    )
    alpha: float = 0.65
    beta: float = 0.0045
    decel: float = 0.0008  # m/step^2
    final_rate: float = 0.3  # 1/step


FREE = FreeMove()


def free_action(err: np.ndarray, vel: np.ndarray, top: float) -> np.ndarray:
    """Position action that moves the hand along `err` (m) on the braking speed profile; |a| <= top."""
    d = float(np.linalg.norm(err))
    if d < 1e-9:
        return np.zeros(3)
    speed = min(np.sqrt(2.0 * FREE.decel * d), FREE.final_rate * d, top * FREE.beta / (1.0 - FREE.alpha))
    want = speed * err / d
    a = (want - FREE.alpha * vel) / FREE.beta
    m = float(np.max(np.abs(a)))
    return a * (top / m) if m > top else a


def move_ended(sk: Any, pos: np.ndarray, err: np.ndarray, rot_err: float) -> bool:
    """End test of a move skill (MoveTo, MovePose): at the goal within `tol` / `rot_tol`, or
    stalled on contact (`stop_on_stall`: < 1 mm in 3 steps), or out of `max_steps` (both set `stalled`)."""
    if np.linalg.norm(err) < sk.tol and rot_err < sk.rot_tol:
        return True
    if sk.stop_on_stall and len(sk.hist) > 6 and np.linalg.norm(pos - sk.hist[-4]) < 0.001:
        sk.stalled = True
        return True
    if sk.t >= sk.max_steps:
        sk.stalled = True
        return True
    return False


class MoveTo(Skill):
    """Move the grip site to a position with a down orientation; ends when there, or stalled on contact."""

    def __init__(
        self,
        name: str,
        target: Target,
        finger_axis: Target,
        gripper: float,
        tol: float = 0.006,
        rot_tol: float = 0.06,
        cap: float | None = None,
        stop_on_stall: bool = False,
        max_steps: int = 200,
        free_cap: float | None = None,
    ) -> None:
        super().__init__()
        self.name, self.target_fn, self.axis_fn = name, target, finger_axis
        self.gripper, self.tol, self.rot_tol, self.cap = gripper, tol, rot_tol, cap
        self.stop_on_stall, self.max_steps = stop_on_stall, max_steps
        self.free_cap = free_cap  # > the usual cap: braking speed profile up to this action (FreeMove)
        self.stalled = False

    def start(self, scene: Scene) -> None:
        self.goal = np.asarray(self.target_fn(scene), dtype=np.float64)
        self.rot = self.target_rot(scene)
        self.hist: list[np.ndarray] = []

    def target_rot(self, scene: Scene) -> np.ndarray:
        """Pointing down, fingers along +/- the finger axis, whichever is nearer the current hand."""
        return _nearest_finger_rot(self.axis_fn(scene), scene.eef_mat)

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        pos = scene.eef_pos
        self.hist.append(pos)
        err = self.goal - pos
        rot_a, rot_err = _rot_action(self.rot, scene.eef_mat, lim)
        if move_ended(self, pos, err, rot_err):
            return None
        self.t += 1
        base = lim.max_pos_action if self.cap is None else min(self.cap, lim.max_pos_action)
        if self.free_cap is not None and self.free_cap > base:
            vel = pos - self.hist[-2] if len(self.hist) > 1 else np.zeros(3)
            a = free_action(err, vel, self.free_cap)
        else:
            a = _pos_action(err, lim, self.cap)
        return np.concatenate([a, rot_a, [self.gripper]])


class MovePose(MoveTo):
    """Move the grip site to a position and an explicit hand orientation (`rot`, read at start).

    The one skill for every move that does not point the hand straight down with the nearer finger axis:
    pinching a drawer handle, a knob's exact finger axis, a book turned into a slot, a tilted object.
    It is MoveTo otherwise (same end test, caps and opt-in free-space profile); `rot_cap` (< 1) slows the
    turn (a 90-degree pitch swings a held book through a wide arc).
    """

    def __init__(
        self,
        name: str,
        target: Target,
        rot: Callable[[Scene], np.ndarray],
        gripper: float,
        rot_cap: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(name, target, lambda s: np.array([1.0, 0.0, 0.0]), gripper, **kw)
        self.rot_fn, self.rot_cap = rot, rot_cap

    def target_rot(self, scene: Scene) -> np.ndarray:
        return np.asarray(self.rot_fn(scene), dtype=np.float64)

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        a = super().step(scene, lim)
        if a is not None and self.rot_cap is not None:
            a[3:6] = np.clip(a[3:6], -self.rot_cap, self.rot_cap)
        return a


class Gripper(Skill):
    """Open or close in place until the finger gap stops changing (a free close takes 10-12 steps)."""

    def __init__(self, name: str, close: bool, min_steps: int = 6, max_steps: int = 25) -> None:
        super().__init__()
        self.name, self.close, self.min_steps, self.max_steps = name, close, min_steps, max_steps

    def start(self, scene: Scene) -> None:
        self.hold = scene.eef_pos
        self.rot = scene.eef_mat
        self.gaps: list[float] = []

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        self.gaps.append(scene.gripper_gap)
        settled = len(self.gaps) > 2 and abs(self.gaps[-1] - self.gaps[-3]) < 0.0005
        if self.t >= self.max_steps or (self.t >= self.min_steps and settled):
            return None
        self.t += 1
        rot_a, _ = _rot_action(self.rot, scene.eef_mat, lim)
        return np.concatenate(
            [_pos_action(self.hold - scene.eef_pos, lim), rot_a, [1.0 if self.close else -1.0]]
        )


class PushJoint(Skill):
    """Push an articulated part (drawer) along its slide axis until its goal predicate holds.

    The hand leads the contact point along `push_dir` while cross-axis errors are corrected toward the
    moving handle; it keeps pushing `extra_steps` after the predicate first holds, because success lives
    in a window under 2 mm wide next to the physical stop.
    """

    name = "push"

    def __init__(
        self,
        contact: Target,
        push_dir: np.ndarray,
        finger_axis: np.ndarray,
        done: Callable[[Scene], bool],
        progress: Callable[[Scene], float],
        extra_steps: int = 4,
        max_steps: int = 150,
    ) -> None:
        super().__init__()
        self.contact, self.push_dir, self.axis = contact, np.asarray(push_dir), np.asarray(finger_axis)
        self.done, self.progress, self.extra, self.max_steps = done, progress, extra_steps, max_steps
        self.after = 0
        self.stuck = False

    def start(self, scene: Scene) -> None:
        self.rot = _nearest_finger_rot(self.axis, scene.eef_mat)
        self.prog: list[float] = []

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        self.prog.append(self.progress(scene))
        if self.done(scene):
            self.after += 1
            if self.after > self.extra:
                return None
        if self.t >= self.max_steps:
            self.stuck = True
            return None
        self.t += 1
        pos = scene.eef_pos
        goal = np.asarray(self.contact(scene))
        err = goal - pos
        along = float(err @ self.push_dir)
        cross = err - along * self.push_dir
        # lead the contact by a few cm so the hand keeps pressing; the cap sets the push speed
        a = _pos_action(cross + (along + 0.03) * self.push_dir, lim)
        rot_a, _ = _rot_action(self.rot, scene.eef_mat, lim)
        return np.concatenate([a, rot_a, [1.0]])


# ----------------------------------------------------------------------------------------------------------
# The expert
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Expert:
    """Runs a plan (a list of skills) built from the task's goal at `reset`.

    Public API: reset(env), act(env, obs) -> (7,), finished, failure_cause(env).
    """

    task: TaskSpec
    goal: list[tuple[str, ...]]
    categories: dict[str, str]
    limits: Limits = field(default_factory=Limits)
    max_pos_action: float = 0.3
    # largest position action of any phase (1.0 commands 5 cm/step). At or below max_pos_action the free-space
    # speed profile and the faster push/pull speeds are off: every move is P-controlled at <= max_pos_action
    top_action: float = 1.0

    def __post_init__(self) -> None:
        self.limits.max_pos_action = self.max_pos_action
        self._plan: list[Skill] = []
        self._i = 0
        self._prev = NOOP.copy()
        self._scene: Scene | None = None
        self._flags: dict[str, Any] = {}

    # -- public API
    def reset(self, env: Any) -> None:
        """Plan the first goal for the current scene (object poses are read after the settling no-op steps).

        Each later goal is planned when the previous one's skills are done, from the scene as it is then
        (an opened drawer has moved its region; a stacked bowl has moved its target).
        """
        self._scene = Scene(env)
        self._goals = order_goals(self.goal)
        self._g = 0
        self._plan = []
        self._i = 0
        self._prev = NOOP.copy()
        self._flags = {}
        self._next_goal(self._scene)

    def _next_goal(self, scene: Scene) -> bool:
        """Append the next goal's skills to the plan; False when every goal is planned."""
        if self._g >= len(self._goals):
            return False
        pred, *args = self._goals[self._g]
        self._g += 1
        planner = PLANNERS.get(pred)
        if planner is None:
            raise NotImplementedError(f"no expert plan for goal ({pred} {' '.join(args)})")
        skills = planner(self, scene, tuple(args))
        self._plan.extend(skills)
        if self._i < len(self._plan):
            self._start(self._plan[self._i], scene)
        return True

    def stop_after_current_skill(self) -> None:
        """Drop the rest of the plan (release, retreat, later goals): when the skill running now ends, the
        expert holds still. A demo recorded this way ends as LIBERO's own do, at the goal."""
        self._plan = self._plan[: self._i + 1]
        self._g = len(self._goals)

    @property
    def finished(self) -> bool:
        return bool(self._plan) and self._i >= len(self._plan) and self._g >= len(self._goals)

    @property
    def phase(self) -> str:
        return self._plan[self._i].name if self._i < len(self._plan) else "done"

    def act(self, env: Any, obs: dict | None = None) -> np.ndarray:
        """Next action; `env.sim` is read fresh (obs is not needed: the expert uses privileged state)."""
        if self._scene is None or self._scene.env is not env:
            raise RuntimeError("Expert.act called before Expert.reset(env) for this env")
        scene = self._scene
        raw = None
        while self._i < len(self._plan):
            skill = self._plan[self._i]
            raw = skill.step(scene, self.limits)
            if raw is not None:
                break
            self._on_skill_end(scene, skill)
            self._i += 1
            if self._i < len(self._plan):
                self._start(self._plan[self._i], scene)
            else:
                self._next_goal(scene)
        if raw is None:  # plan finished: hold still, gripper as last commanded
            raw = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, self._prev[6]])
            return self._smooth(raw)
        return self._smooth(raw, getattr(self._plan[self._i], "free_cap", None))

    def failure_cause(self, env: Any) -> str | None:
        """Best-effort reason for a failed episode (None when the goal holds)."""
        if sim.check_success(env):
            return None
        f = self._flags
        if f.get("push_stuck"):
            return "articulation_stuck"
        if f.get("grasp_missed"):
            return "grasp_missed"
        if f.get("dropped") or (
            f.get("grasped") and not f.get("released") and self._scene and self._object_dropped(self._scene)
        ):
            return "object_dropped"
        if f.get("released"):
            return "placement_out_of_region"
        return "timed_out"

    # -- internals
    def _start(self, skill: Skill, scene: Scene) -> None:
        """Start a skill at the expert's pace: no phase moves faster than `top_action`."""
        for attr in ("free_cap", "cap"):
            v = getattr(skill, attr, None)
            if isinstance(v, float) and v > self.top_action:
                setattr(skill, attr, self.top_action)
        skill.start(scene)

    def _smooth(self, raw: np.ndarray, free_cap: float | None = None) -> np.ndarray:
        """Clip to the phase's cap, then slew-limit (a free-space move, free_cap, may exceed the usual cap).

        Slew last, so no component ever changes by more than the slew per step: where a fast travel phase
        hands over to a capped contact phase, the action comes down to the lower cap over a few steps
        (clipping after the slew made it drop at once, a jerk the policy would have to learn).
        """
        lim = self.limits
        a = np.array(raw, dtype=np.float64)
        top = max(lim.max_pos_action, free_cap or 0.0)
        a[:3] = np.clip(a[:3], -top, top)
        a[3:6] = np.clip(a[3:6], -lim.max_rot_action, lim.max_rot_action)
        a[:3] = np.clip(a[:3], self._prev[:3] - lim.pos_slew, self._prev[:3] + lim.pos_slew)
        a[3:6] = np.clip(a[3:6], self._prev[3:6] - lim.rot_slew, self._prev[3:6] + lim.rot_slew)
        a[6] = 1.0 if a[6] > 0 else -1.0
        self._prev = a
        return a

    def _on_skill_end(self, scene: Scene, skill: Skill) -> None:
        f = self._flags
        if getattr(skill, "stuck", False):  # an articulation skill gave up
            f["push_stuck"] = True
        if skill.name == "grasp_close":
            f["grasped"] = scene.gripper_gap > 0.002
            f["grasp_missed"] = not f["grasped"]
        if skill.name == "lift" and f.get("grasped"):
            held = self._held_offset(scene)
            f["held_offset"] = held
            if scene.body_pos(self._obj)[2] < self._obj_z0 + 0.02:
                f["grasp_missed"] = True
        if skill.name in ("carry", "lower") and self._object_dropped(scene):
            f["dropped"] = True
        if skill.name == "release":
            f["released"] = True

    def _held_offset(self, scene: Scene) -> np.ndarray:
        return scene.body_pos(self._obj) - scene.eef_pos

    def _object_dropped(self, scene: Scene) -> bool:
        held = self._flags.get("held_offset")
        if held is None:
            return False
        return bool(np.linalg.norm(self._held_offset(scene) - held) > 0.04)


# ----------------------------------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------------------------------


SAFE_Z_MARGIN = 0.05  # hand clearance above what it passes over


def _dist_to_box2d(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    d = np.maximum(np.maximum(lo[:2] - p[:2], 0.0), p[:2] - hi[:2])
    return float(np.linalg.norm(d))


Planner = Callable[["Expert", Scene, tuple[str, ...]], list[Skill]]
#: Goal predicate -> planner. A planner returns the skills that make its predicate hold from the scene
#: as it is when the planner runs.
PLANNERS: dict[str, Planner] = {}  # filled by libero_dp.expert.planners
ENABLERS = ("open", "turnon", "turnoff")


def order_goals(goal: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Order a multi-predicate goal so that each step leaves the next one possible.

    Open / turn on / turn off first (an object goes into an open drawer), then placements with the
    supporting object placed before what stacks on it, then closing a region that something goes in.
    """
    in_targets = {g[2] for g in goal if g[0] == "in" and len(g) == 3}
    supports = {g[2] for g in goal if g[0] in ("on", "in") and len(g) == 3}

    def rank(g: tuple[str, ...]) -> int:
        if g[0] in ENABLERS:
            return 0
        if g[0] == "close":  # a region, or an object whose region (named "<object>_<region>") is filled
            fills = any(t == g[1] or t.startswith(g[1] + "_") for t in in_targets)
            return 3 if fills else 0
        if g[0] in ("on", "in") and len(g) == 3:
            return 1 if g[1] in supports else 2
        return 2

    return sorted(goal, key=rank)  # stable: ties keep the bddl order


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------


def make_expert(task: TaskSpec, max_pos_action: float = 0.3, top_action: float = 1.0) -> Expert:
    """An expert for `task`, planned from its bddl goal; goals no skill handles raise NotImplementedError.

    `top_action` sets the pace: 1.0 lets free-space moves use the braking speed profile (~1.15 cm/step);
    0.3 keeps every move at the plain cap (~0.35 cm/step), the slower pace of LIBERO's human demos."""
    with open(task.bddl_file) as fh:
        text = fh.read()
    goal = parse_goal(text)
    for pred, *args in goal:
        if pred not in PLANNERS:
            raise NotImplementedError(f"no expert plan for goal ({pred} {' '.join(args)}) of {task.name}")
    return Expert(
        task=task,
        goal=goal,
        categories=parse_categories(text),
        max_pos_action=max_pos_action,
        top_action=top_action,
    )


def run_episode(
    env: Any,
    task: TaskSpec,
    expert: Expert,
    reset_seed: int,
    init_state: np.ndarray | None,
    max_steps: int,
    num_steps_wait: int = 10,
    steps_after_success: int = 10,
    max_steps_after_success: int = 150,
    on_step: Callable[[int, np.ndarray, np.ndarray, dict, bool], None] | None = None,
    stop_at_success: bool = False,
) -> dict[str, Any]:
    """Reset, wait, then step the expert; success = `done` or check_success at any step.

    After the first success the expert finishes its plan (release, retreat: `final_success` then means the
    goal still holds after letting go), or with `stop_at_success` only the skill that reached the goal
    (e.g. the drawer push with its extra pressing steps), then holds still `steps_after_success` steps.

    `on_step` also sees the wait steps, with negative indices (-num_steps_wait .. -1): a recording that
    starts at the reset replays exactly: the gripper controller's internal state is not in the sim state.
    """
    obs = sim.reset_to(env, reset_seed, init_state)
    for k in range(num_steps_wait):
        state = sim.get_state(env)
        obs, _, done, _ = env.step(NOOP.copy())
        if on_step is not None:
            on_step(k - num_steps_wait, state, NOOP.copy(), obs, bool(done))
    expert.reset(env)
    steps_to_success: int | None = None
    finished_idle = 0
    t = 0
    while True:
        state = sim.get_state(env)
        action = expert.act(env, obs)
        obs, _, done, _ = env.step(action)
        t += 1
        success = bool(done) or sim.check_success(env)
        if on_step is not None:
            on_step(t - 1, state, action, obs, success)
        if success and steps_to_success is None:
            steps_to_success = t
            if stop_at_success:
                expert.stop_after_current_skill()
        if steps_to_success is not None:
            # LIBERO's (In ...) holds while the object is still in the hand: go on through release and
            # retreat (the plan's end), then `steps_after_success` at rest, so final_success is meaningful
            if expert.finished:
                finished_idle += 1
                if finished_idle > steps_after_success:
                    break
            elif t - steps_to_success >= max_steps_after_success:
                break
        elif t >= max_steps:
            break
        elif expert.finished:
            finished_idle += 1  # plan over without success: let things settle briefly, then give up
            if finished_idle > steps_after_success:
                break
    final = sim.check_success(env)
    return {
        "success": steps_to_success is not None,
        "steps_to_success": steps_to_success,
        "length": t,
        "final_success": final,
        "failure_cause": None if steps_to_success is not None else expert.failure_cause(env),
    }
