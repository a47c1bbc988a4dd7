"""Core of the scripted privileged-state expert: grasp data, the Expert, goal order, run_episode.

Scene access lives in `scene`, the motion skills in `skills` (both re-exported here).

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

# re-exported: the skill modules read these as `core.X` (core is the expert's one namespace)
from libero_dp.expert.scene import (  # noqa: F401
    Scene,
    _dist_to_box2d,
    _horizontal,
    down_rotation,
    rot_to_axis_angle,
)
from libero_dp.expert.skills import (  # noqa: F401
    FREE,
    POS_SCALE,
    ROT_SCALE,
    Gripper,
    Limits,
    MovePose,
    MoveTo,
    PushJoint,
    Skill,
    Target,
    _nearest_finger_rot,
    _pos_action,
    _rot_action,
)

if TYPE_CHECKING:
    from libero_dp.sim import TaskSpec

T = TypeVar("T")

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
