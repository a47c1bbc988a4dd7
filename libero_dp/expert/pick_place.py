"""Bowls and small packages: pick-and-place fixes and a faster free-space move.

Extends `libero_dp.expert` (load with EXPERT_PLUGINS=/work/scratch/bowls.py):

* Free-space speed profile (monkeypatch of `MoveTo.step` and `Expert._smooth`): MoveTo phases named in
  `E.FREE.caps` (approach, lift, carry, retreat up to action 1.0; descend, lower up to 0.6) follow a braking
  speed profile with a damping term instead of the fixed 0.3 cap; other phases, pushes and the gripper keep
  `Limits.max_pos_action`. The 0.08/step slew limit is unchanged, so actions stay smooth. A skill instance
  opts out with `skill.free_cap = 0.0`.
* `Settle` skill: plans pick-and-place only once the objects rest (tall objects land ~14 steps after reset).
* `plan_pick_place` replacement: cruise height that clears everything swept by the carried object, hover
  above tall neighbours, table regions (On obj <table site>) supported.
* `choose_grasp` replacement: also scores reach from the robot base, forearm clearance to tall fixtures and
  the hand housing's clearance to tall neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E

# ----------------------------------------------------------------------------------------------------------
# Pick-and-place planning
# ----------------------------------------------------------------------------------------------------------


ROBOT_PREFIXES = ("robot0_", "gripper0_", "mount0_")


class Settle(E.Skill):
    """Hold still until every free object rests, then plan (`build`) and splice the skills in after itself.

    Tall objects (milk, orange juice, ketchup) are thrown up at reset and land only ~14 steps after it,
    after the expert's first plan: a plan made from the in-air pose grasps air.
    """

    name = "settle"

    def __init__(self, ex: E.Expert, build: Callable[[E.Scene], list[E.Skill]], max_steps: int = 40) -> None:
        super().__init__()
        self.ex, self.build, self.max_steps = ex, build, max_steps

    def start(self, scene: E.Scene) -> None:
        self.hold = scene.eef_pos
        self.rot = scene.eef_mat

    def step(self, scene: E.Scene, lim: E.Limits) -> np.ndarray | None:
        if self.t >= self.max_steps or max_object_speed(scene) < 0.03:
            i = self.ex._plan.index(self)
            self.ex._plan[i + 1 : i + 1] = self.build(scene)
            return None
        self.t += 1
        rot_a, _ = E._rot_action(self.rot, scene.eef_mat, lim)
        return np.concatenate([E._pos_action(self.hold - scene.eef_pos, lim), rot_a, [self.ex._prev[6]]])


def max_object_speed(scene: E.Scene) -> float:
    """Largest linear speed (m/s) of a free-jointed body (the movable objects)."""
    m, d = scene.model, scene.data
    speed = 0.0
    for j in range(m.njnt):
        if int(m.jnt_type[j]) == 0:  # mjJNT_FREE
            a = int(m.jnt_dofadr[j])
            speed = max(speed, float(np.linalg.norm(d.qvel[a : a + 3])))
    return speed


def surface_below(scene: E.Scene, xy: np.ndarray, below_z: float, exclude: set[str]) -> float:
    """Top of the highest static or object geom under `xy` whose top is below `below_z` (a table region's
    support: table bodies are named differently per scene and are not bddl objects)."""
    m = scene.model
    skip = {
        b for n in exclude if n in scene.inner.obj_body_id for b in _subtree_bodies(scene, scene.body_id(n))
    }
    best = -np.inf
    for g in range(m.ngeom):
        if not (int(m.geom_contype[g]) or int(m.geom_conaffinity[g])):
            continue
        b = int(m.geom_bodyid[g])
        if b in skip or (m.body_id2name(b) or "").startswith(ROBOT_PREFIXES):
            continue
        lo, hi = scene.geoms_aabb([g])
        if lo[0] <= xy[0] <= hi[0] and lo[1] <= xy[1] <= hi[1] and hi[2] < below_z:
            best = max(best, float(hi[2]))
    return best


def _subtree_bodies(scene: E.Scene, body: int) -> set[int]:
    m = scene.model
    out = {body}
    for b in range(m.nbody):
        p = b
        while p not in (0, body):
            p = int(m.body_parentid[p])
        if p == body:
            out.add(b)
    return out


def corridor_top(scene: E.Scene, obj: str, a: np.ndarray, b: np.ndarray, radius: float) -> float:
    """Highest top of the obstacles within `radius` of the horizontal segment a-b (the object's sweep)."""
    top = -np.inf
    pts = [a[:2] + (b[:2] - a[:2]) * s for s in np.linspace(0.0, 1.0, 21)]
    for n in scene.obstacle_names({obj}):
        lo, hi = scene.aabb(n)
        if min(E._dist_to_box2d(p, lo, hi) for p in pts) < radius:
            top = max(top, float(hi[2]))
    return top


REACH_SOFT = 0.55  # m: horizontal grip distance from the robot base beyond which grasps are penalised
HAND_HALF = 0.10  # m: half-length of the Panda hand along the finger axis
ARM_HEIGHT = 0.12  # obstacles this far above the grip point can touch the forearm
ARM_CLEAR = 0.10  # wanted horizontal distance from the grip point to such obstacles
REACH_WEIGHT = 40.0  # penalty per metre beyond REACH_SOFT, in the units of the wrist turn (rad)


def choose_grasp(
    scene: E.Scene, obj: str, spec: E.GraspSpec, exclude: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Grip point (world) and finger axis for `obj`: the core version plus a reach cost.

    A bowl at the far edge of the kitchen table (task 31) was gripped on its side rim; the stretched arm hit
    the elbow's joint limit (a singularity OSC cannot leave) and never reached it. Candidates are now scored
    by clearance (capped at 3 cm), then by wrist turn + REACH_WEIGHT * (distance from base - REACH_SOFT)+,
    so the near rim wins on far bowls while nearby bowls keep the least-turn choice. Obstacles standing
    ARM_HEIGHT above the grip count against the clearance unless ARM_CLEAR away: the forearm (link5) hit
    the cabinet top when a bowl next to the cabinet was gripped on the rim facing it.
    """
    lo, hi = scene.aabb(obj)
    centre = (lo + hi) / 2.0
    height = float(hi[2] - lo[2])
    grip_z = max(float(hi[2]) - min(spec.depth, 0.6 * height), float(lo[2]) + 0.012)
    obstacles = [scene.aabb(n) for n in scene.obstacle_names(exclude | {obj})]
    tall = [b for n in scene.obstacle_names({obj}) if (b := scene.aabb(n))[1][2] > grip_z + ARM_HEIGHT]
    cur_axis = scene.eef_mat[:, 0]
    mat = scene.body_mat(obj)
    pts = np.array([c for g in scene.subtree_geoms(scene.body_id(obj)) for c in scene.geoms_aabb([g])])
    widths = [float(np.ptp(pts[:, :2] @ E._horizontal(mat[:, k])[:2])) for k in range(2)]
    short_axis = E._horizontal(mat[:, int(np.argmin(widths))])
    base_xy = scene.body_pos("robot0_base")[:2]

    cands: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    for yaw in np.deg2rad(np.arange(0, 360 if spec.mode == "rim" else 180, 15)):
        f = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        if spec.yaw == "short_side" and spec.mode != "rim" and abs(f @ short_axis) < np.cos(np.deg2rad(20)):
            continue
        grip = np.array([centre[0], centre[1], grip_z])
        if spec.mode == "rim":
            grip = grip + spec.rim_offset * f
        tips = [grip + 0.045 * f, grip - 0.045 * f]
        clear = min(
            [E._dist_to_box2d(t, olo, ohi) for t in tips for olo, ohi in obstacles if ohi[2] > grip_z - 0.02],
            default=1.0,
        )
        # the forearm hangs ~20 cm above the hand: keep the grip away from tall things (a cabinet's edge)
        arm = min(
            [E._dist_to_box2d(grip, olo, ohi) for olo, ohi in tall],
            default=1.0,
        )
        clear = min(clear, arm - ARM_CLEAR + 0.03)
        # the hand housing spans ~HAND_HALF along the finger axis, ~5 cm above the fingertips
        hand_pts = [grip + k * HAND_HALF * f for k in (-1.0, -0.5, 0.0, 0.5, 1.0)]
        hand = min(
            [
                E._dist_to_box2d(p, olo, ohi)
                for p in hand_pts
                for olo, ohi in obstacles
                if ohi[2] > grip_z + 0.05
            ],
            default=1.0,
        )
        clear = min(clear, hand + 0.01)
        turn = float(np.arccos(min(1.0, abs(f @ cur_axis))))
        reach = max(0.0, float(np.linalg.norm(grip[:2] - base_xy)) - REACH_SOFT)
        cands.append((min(clear, 0.03), -(turn + REACH_WEIGHT * reach), grip, f))
    _, _, grip, f = max(cands, key=lambda c: (round(c[0], 3), c[1]))
    return grip, f


@dataclass(frozen=True)
class PlaceParams:
    """Pick-and-place clearances (m)."""

    hover: float = 0.07  # grip point to hover point above it
    cruise_margin: float = 0.03  # carried object's bottom above what it passes over
    sweep_margin: float = 0.02  # extra horizontal clearance of the carried object's footprint
    approach_tol: float = 0.01


PLACE = PlaceParams()


def plan_pick_place(scene: E.Scene, obj: str, target: str, spec: E.GraspSpec) -> list[E.Skill]:
    """Hover, descend, close, lift to a cruise height that clears everything along the way, carry, lower,
    open, retreat.

    Differences from the core version: the cruise height clears every obstacle swept by the carried object
    (not only the target: a bowl on a microwave was dragged into it); table regions (site without a parent
    object) are supported; free-space phases are fast (see FREE).
    """
    inner = scene.inner
    is_site = target in inner.object_sites_dict and target not in inner.obj_body_id
    parent = inner.object_sites_dict[target].parent_name if is_site else target
    exclude = {parent} if parent else set()
    grip, finger = choose_grasp(scene, obj, spec, exclude)
    # hover with the open fingertips above anything next to the grip point (a bottle beside a bowl)
    near = [
        hi[2]
        for lo, hi in map(scene.aabb, scene.obstacle_names({obj}))
        if E._dist_to_box2d(grip, lo, hi) < 0.11
    ]
    hover = np.array(
        [grip[0], grip[1], max([grip[2] + PLACE.hover, *(z + PLACE.cruise_margin for z in near)])]
    )
    olo, ohi = scene.aabb(obj)
    radius = 0.5 * float(np.max(ohi[:2] - olo[:2])) + PLACE.sweep_margin

    if is_site:
        s_pos, s_mat, s_size = scene.site(target)
        half = np.abs(s_mat @ s_size)
        place_xy = s_pos[:2]
        if parent:
            support_top = float(s_pos[2] - half[2])
        else:  # a table region: the object's origin must end within (half_z, half_z + 0.10) above the site
            support_top = surface_below(scene, place_xy, float(s_pos[2] + half[2] + 0.10), {obj})
    else:
        tlo, thi = scene.aabb(target)
        place_xy = ((tlo + thi) / 2.0)[:2]
        support_top = float(thi[2])
    obj_xy = (olo[:2] + ohi[:2]) / 2.0
    top = max(corridor_top(scene, obj, obj_xy, place_xy, radius), support_top, float(olo[2]))
    cruise_bottom = top + PLACE.cruise_margin

    flags: dict[str, np.ndarray] = {}

    def axis_fn(s: E.Scene) -> np.ndarray:
        return finger

    def offset(s: E.Scene) -> np.ndarray:
        if "off" not in flags:
            flags["off"] = s.body_pos(obj) - s.eef_pos
        return flags["off"]

    def bottom_below_hand(s: E.Scene) -> float:
        lo, _ = s.aabb(obj)
        return float(s.eef_pos[2] - lo[2])

    def lift_target(s: E.Scene) -> np.ndarray:
        p = s.eef_pos
        return np.array([p[0], p[1], max(grip[2] + 0.04, cruise_bottom + bottom_below_hand(s))])

    def carry_target(s: E.Scene) -> np.ndarray:
        hand_xy = place_xy - offset(s)[:2]
        return np.array([hand_xy[0], hand_xy[1], cruise_bottom + bottom_below_hand(s)])

    def place_target(s: E.Scene) -> np.ndarray:
        hand_xy = place_xy - offset(s)[:2]
        return np.array([hand_xy[0], hand_xy[1], support_top + spec.release_height + bottom_below_hand(s)])

    def retreat_target(s: E.Scene) -> np.ndarray:
        return s.eef_pos + np.array([0.0, 0.0, 0.10])

    return [
        E.MoveTo("approach", lambda s: hover, axis_fn, gripper=-1.0, tol=PLACE.approach_tol),
        E.MoveTo("descend", lambda s: grip, axis_fn, gripper=-1.0, tol=0.004, stop_on_stall=True),
        E.Gripper("grasp_close", close=True),
        E.MoveTo("lift", lift_target, axis_fn, gripper=1.0, tol=0.015),
        E.MoveTo("carry", carry_target, axis_fn, gripper=1.0, tol=0.008),
        E.MoveTo("lower", place_target, axis_fn, gripper=1.0, tol=0.005, stop_on_stall=True),
        E.Gripper("release", close=False, min_steps=8),
        E.MoveTo("retreat", retreat_target, axis_fn, gripper=-1.0, tol=0.01, max_steps=40),
    ]


def fast(skills: list[E.Skill]) -> list[E.Skill]:
    """Give this planner's travel phases the free-space speed profile (E.FREE.caps by phase name)."""
    for sk in skills:
        if isinstance(sk, E.MoveTo) and sk.free_cap is None:
            sk.free_cap = E.FREE.caps.get(sk.name)
    return skills
