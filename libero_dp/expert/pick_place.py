"""Pick-and-place of bowls and small packages: settle, hover, descend, grasp, lift, carry, lower, release.

* Free-space speed (`fast`): MoveTo phases named in `E.FREE.caps` (approach, lift, carry, retreat up to
  action 1.0; descend, lower up to 0.6) follow a braking speed profile instead of the plain cap; other
  phases, pushes and the gripper keep `Limits.max_pos_action`. A skill instance opts out with
  `skill.free_cap = 0.0`.
* `Settle` skill: plans pick-and-place only once the objects rest (tall objects land ~14 steps after reset).
* `plan_pick_place`: cruise height that clears everything swept by the carried object, hover above tall
  neighbours, table regions (On obj <table site>) supported; the grasp comes from `grasp_choice`, with a
  turned descent where something hangs over the object.
* Laying down (`tip_skills`): an object whose origin would stand above a drawer region (ketchup) is tilted
  about its bottom edge and released, so it falls onto its side inside the drawer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import drawers, overhang, tipping
from libero_dp.expert.grasp_choice import (
    HAND,
    approach_axes,
    choose_grasp,
    hand_boxes,
    hand_hits,
)

# ----------------------------------------------------------------------------------------------------------
# Pick-and-place planning
# ----------------------------------------------------------------------------------------------------------


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
    skip = {
        b for n in exclude if n in scene.inner.obj_body_id for b in scene.subtree_bodies(scene.body_id(n))
    }
    best = -np.inf
    for g in scene.obstacle_geoms(skip, world=True):
        lo, hi = scene.geoms_aabb([g])
        if lo[0] <= xy[0] <= hi[0] and lo[1] <= xy[1] <= hi[1] and hi[2] < below_z:
            best = max(best, float(hi[2]))
    return best


def corridor_top(scene: E.Scene, obj: str, a: np.ndarray, b: np.ndarray, radius: float) -> float:
    """Highest top of the obstacles within `radius` of the horizontal segment a-b (the object's sweep)."""
    top = -np.inf
    pts = [a[:2] + (b[:2] - a[:2]) * s for s in np.linspace(0.0, 1.0, 21)]
    for n in scene.obstacle_names({obj}):
        lo, hi = scene.aabb(n)
        if min(E._dist_to_box2d(p, lo, hi) for p in pts) < radius:
            top = max(top, float(hi[2]))
    return top


@dataclass(frozen=True)
class PlaceParams:
    """Pick-and-place clearances (m)."""

    hover: float = 0.07  # grip point to hover point above it
    cruise_margin: float = 0.03  # carried object's bottom above what it passes over
    sweep_margin: float = 0.02  # extra horizontal clearance of the carried object's footprint
    approach_tol: float = 0.01
    transit_radius: float = 0.04  # approach line this close (horizontally) to an obstacle ...
    transit_clear: float = 0.04  # ... must pass this far above its top (open fingertips 1.4 cm below)
    leave_margin: float = 0.06  # grip site above the target's top after the retreat (fingertips 1.4 cm below)


PLACE = PlaceParams()


def transit(scene: E.Scene, obj: str, hover: np.ndarray, axis: E.Target) -> list[E.Skill]:
    """A move to above the hover point at a height that clears what the straight approach would clip.

    The straight line from the hand (after the last release) down to the hover point dips as it goes:
    leaving a basket for an object beside it, the fingertips caught the basket's wall and dragged it over
    that object. Empty (no extra phase) when the straight line keeps PLACE.transit_clear over everything.
    """
    start = scene.eef_pos
    boxes = [scene.aabb(n) for n in scene.obstacle_names({obj})]
    need = -np.inf
    for k in np.linspace(0.0, 1.0, 21)[1:-1]:
        p = start + k * (hover - start)
        for lo, hi in boxes:
            if E._dist_to_box2d(p, lo, hi) < PLACE.transit_radius and p[2] < hi[2] + PLACE.transit_clear:
                need = max(need, float(hi[2]) + PLACE.transit_clear + 0.01)
    if need == -np.inf:
        return []
    z = max(need, float(hover[2]))
    return [E.MoveTo("approach", lambda s: np.array([hover[0], hover[1], z]), axis, -1.0, tol=0.015)]


#: an object in a drawer's open part: 8 mm from what overhangs it, 4 mm from the front panel
OPEN_PART_MARGIN = 0.012


def into_open_part(scene: E.Scene, obj: str, region: str, xy: np.ndarray) -> np.ndarray:
    """`xy` moved along the drawer's pull so that the object lies in its open part, clear of the cabinet's
    front above it (a partly opened drawer's region centre is still under the cabinet's top)."""
    span = drawers.exposed_span(scene, region)
    if span is None:
        return xy
    pull, front, panel = span
    lo, hi = scene.aabb(obj)
    r = 0.5 * float(np.abs(hi - lo)[:2] @ np.abs(pull[:2]))
    off = float(((lo + hi) / 2.0 - scene.body_pos(obj))[:2] @ pull[:2])  # footprint centre - origin
    s_lo, s_hi = front + r + OPEN_PART_MARGIN - 0.004, panel - r - 0.004
    s = float(xy @ pull[:2]) + off
    s_new = float(np.clip(s, s_lo, s_hi)) if s_lo <= s_hi else 0.5 * (s_lo + s_hi)
    return xy + (s_new - s) * pull[:2]


def plan_pick_place(
    scene: E.Scene,
    obj: str,
    target: str,
    spec: E.GraspSpec,
    exposed: bool = False,
    inside: bool = True,
) -> list[E.Skill]:
    """Hover, descend, close, lift to a cruise height that clears everything along the way, carry, lower,
    open, retreat (`exposed`: into the open part of a partly opened drawer, see `into_open_part`).

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
            if exposed:
                place_xy = into_open_part(scene, obj, target, place_xy)
        else:  # a table region: the object's origin must end within (half_z, half_z + 0.10) above the site
            support_top = surface_below(scene, place_xy, float(s_pos[2] + half[2] + 0.10), {obj})
    else:
        tlo, thi = scene.aabb(target)
        place_xy = ((tlo + thi) / 2.0)[:2]
        support_top = float(thi[2])
    # a tall object whose origin would stand above the region (ketchup in a drawer): lay it down. Only
    # for (In ..): LIBERO's (On obj site) wants the origin from 5 mm under the site's top to 10 cm over it,
    # which an upright object meets (a wine bottle laid down on the cabinet top stretched the arm to its
    # elbow limit while tipping, went up instead and threw the bottle off)
    tip_dir: np.ndarray | None = None
    if is_site and parent and inside:
        standing = support_top + spec.release_height + float(scene.body_pos(obj)[2] - olo[2])
        if standing > float(s_pos[2] + half[2]) - tipping.TIP.margin:
            tip_dir = tipping.tip_direction(scene, finger, place_xy)
            place_xy = place_xy - tipping.TIP.shift * float(ohi[2] - olo[2]) * tip_dir[:2]
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

    # the open fingertips leave clear over the container's rim: 10 cm up from inside a basket left them at
    # its rim, and the next approach dragged the basket over the next object
    holder = parent or (None if is_site else target)
    leave_z = float(scene.aabb(holder)[1][2]) + PLACE.leave_margin if holder else -np.inf

    def retreat_target(s: E.Scene) -> np.ndarray:
        p = s.eef_pos
        return np.array([p[0], p[1], max(p[2] + 0.10, leave_z)])

    def back_out(s: E.Scene) -> np.ndarray:
        # a tilted hand backs out along its own axis (turning back to pointing down dragged the ketchup)
        return s.eef_pos - 0.08 * s.eef_mat[:, 2] + np.array([0.0, 0.0, 0.04])

    z_turn = float(ohi[2]) + HAND.turn_clear
    boxes = hand_boxes(scene, obj)
    axes = approach_axes(boxes, grip, finger, z_turn, float(hover[2]))
    if axes is None and spec.mode != "rim" and hand_hits(boxes, grip, finger, grip[2] + HAND.bottom, 2.0):
        # no turn clears it: grip off-centre (the open fingers have ~1.5 cm of slack on a pudding box),
        # away from the obstacle, and try again
        for k in (1.0, -1.0):
            shifted = grip + k * HAND.grip_shift * finger
            axes = approach_axes(boxes, shifted, finger, z_turn, float(hover[2]))
            if axes is not None:
                grip = shifted
                hover = np.array([grip[0], grip[1], hover[2]])
                break
    reach: list[E.Skill]
    leave: list[E.Skill]
    if axes is None:
        reach = [
            *transit(scene, obj, hover, axis_fn),
            E.MoveTo("approach", lambda s: hover, axis_fn, gripper=-1.0, tol=PLACE.approach_tol),
        ]
        # a rim-gripped bowl under an open drawer: slid out from under it first (see overhang)
        shift = overhang.escape_shift(scene, obj, boxes, float(ohi[2]) + 0.25) if spec.mode == "rim" else None
        leave = [
            *([] if shift is None else overhang.escape_skills(shift, axis_fn)),
            E.MoveTo("lift", lift_target, axis_fn, gripper=1.0, tol=0.015),
        ]
    else:
        # come down turned, clear of what hangs over the object, and turn to the grasp yaw just above it;
        # leave the same way (lifted straight up, the hand's end caught under the open drawer)
        down_axis, turn_axis = axes
        low = np.array([grip[0], grip[1], max(z_turn, grip[2])])
        raised = np.array([grip[0], grip[1], max(z_turn, grip[2]) + 0.01])
        just_up = grip + np.array([0.0, 0.0, 0.01])

        def turned(s: E.Scene) -> np.ndarray:
            return down_axis

        def partly(s: E.Scene) -> np.ndarray:
            return turn_axis

        def here(s: E.Scene) -> np.ndarray:
            return s.eef_pos

        reach = [
            *transit(scene, obj, hover, turned),
            E.MoveTo("approach", lambda s: hover, turned, gripper=-1.0, tol=PLACE.approach_tol),
            E.MoveTo("descend", lambda s: low, turned, gripper=-1.0, tol=0.006, stop_on_stall=True),
            E.MoveTo("turn", lambda s: low, partly, gripper=-1.0, tol=0.008),
        ]
        leave = [
            E.MoveTo("raise", lambda s: just_up, axis_fn, gripper=1.0, tol=0.006),
            E.MoveTo("turn_out", here, partly, gripper=1.0, tol=0.01),
            E.MoveTo("raise", lambda s: raised, partly, gripper=1.0, tol=0.006),
            E.MoveTo("turn_out", here, turned, gripper=1.0, tol=0.01),
            E.MoveTo("lift", lift_target, turned, gripper=1.0, tol=0.015),
            E.MoveTo("turn_back", here, axis_fn, gripper=1.0, tol=0.01),
        ]
    return [
        *reach,
        E.MoveTo("descend", lambda s: grip, axis_fn, gripper=-1.0, tol=0.004, stop_on_stall=True),
        E.Gripper("grasp_close", close=True),
        *leave,
        E.MoveTo("carry", carry_target, axis_fn, gripper=1.0, tol=0.008),
        E.MoveTo("lower", place_target, axis_fn, gripper=1.0, tol=0.005, stop_on_stall=True),
        *([] if tip_dir is None else tipping.tip_skills(obj, finger, tip_dir)),
        E.Gripper("release", close=False, min_steps=8),
        E.MoveTo("retreat", retreat_target, axis_fn, gripper=-1.0, tol=0.01, max_steps=40)
        if tip_dir is None
        else E.MovePose("retreat", back_out, lambda s: s.eef_mat, gripper=-1.0, tol=0.01, max_steps=40),
    ]


def fast(skills: list[E.Skill]) -> list[E.Skill]:
    """Give this planner's travel phases the free-space speed profile (E.FREE.caps by phase name)."""
    for sk in skills:
        if isinstance(sk, E.MoveTo) and sk.free_cap is None:
            sk.free_cap = E.FREE.caps.get(sk.name)
    return skills
