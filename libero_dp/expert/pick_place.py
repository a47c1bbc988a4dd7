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
  the hand housing's clearance to tall neighbours, and the housing's footprint over the descent against
  per-geom boxes (an open drawer's handle over a bowl); rim grasps may skew the fingers up to 30 degrees.
* Turned descent (`approach_axes`): when the grasp yaw's descent is blocked (pudding under an open drawer),
  come down at another yaw, turn just above the object, and leave the same way.
* Laying down (`tip_skills`): an object whose origin would stand above a drawer region (ketchup) is tilted
  about its bottom edge and released, so it falls onto its side inside the drawer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import drawers, fingers, overhang, tipping

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


# ----------------------------------------------------------------------------------------------------------
# Hand footprint: descend with the hand turned, clear of fixtures above the object
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandBox:
    """The Panda hand housing relative to the grip site when pointing down (measured collision AABB)."""

    half_len: float = 0.105  # along the finger axis (a capsule: the housing's ends are rounded)
    half_width: float = 0.026  # across it, beyond 5 cm from the axis (measured on its collision hull)
    bottom: float = 0.025  # housing bottom above the grip site
    top: float = 0.12  # housing top above the grip site (its collision hull is a box, 12.3 cm)
    turn_clear: float = 0.02  # grip site above the object's top while turning (fingertips reach 1.4 cm below)
    grip_shift: float = 0.01  # off-centre grip (along the finger axis) when no turn clears the descent
    late_turn: float = 30.0  # deg of the turn that may be left to the final descent (fingers clear a box)


HAND = HandBox()


def hand_boxes(scene: E.Scene, obj: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-geom AABBs of everything the hand could hit (fixtures too: a drawer's handle bar is one geom of
    the cabinet, whose whole-body box would hide where the gaps are)."""
    m = scene.model
    skip = _subtree_bodies(scene, scene.body_id(obj))
    out = []
    for g in range(m.ngeom):
        if not (int(m.geom_contype[g]) or int(m.geom_conaffinity[g])):
            continue
        b = int(m.geom_bodyid[g])
        if b in skip or b == 0 or (m.body_id2name(b) or "").startswith(ROBOT_PREFIXES):
            continue
        out.append(scene.geoms_aabb([g]))
    return out


def hand_hits(
    boxes: list[tuple[np.ndarray, np.ndarray]],
    xy: np.ndarray,
    f: np.ndarray,
    z_lo: float,
    z_hi: float,
    margin: float = 0.0,
) -> bool:
    """Whether the housing footprint (centred at `xy`, long along `f`, `margin` wider) meets a box between
    z_lo and z_hi.

    The wrist above it is not checked: a 5 cm column around the axis rejected grasps that worked (task 8)."""
    reach = HAND.half_len - HAND.half_width
    pts = [xy[:2] + s * reach * f[:2] for s in np.linspace(-1.0, 1.0, 9)]
    for lo, hi in boxes:
        if hi[2] <= z_lo or lo[2] >= z_hi:
            continue
        if min(E._dist_to_box2d(p, lo, hi) for p in pts) < HAND.half_width + margin:
            return True
    return False


def _yaw_axis(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw), np.sin(yaw), 0.0])


def approach_axes(
    boxes: list[tuple[np.ndarray, np.ndarray]], grip: np.ndarray, f: np.ndarray, z_turn: float, z_top: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Finger axes (descend, turn) for a grasp yaw `f` whose descent would stall on something above the
    object (scene 10's open drawer sits 14 cm over the pudding, which must be gripped across its short side):
    come down to `z_turn` (just above the object) along the first, turn there to the second (`f`, or up to
    HandBox.late_turn short of it when the hand at `f` still meets the obstacle at z_turn) and finish the
    turn on the last few cm down. None when `f` is clear or no yaw is."""
    if not hand_hits(boxes, grip, f, grip[2] + HAND.bottom, z_top + HAND.top):
        return None
    yaw_f = float(np.arctan2(f[1], f[0]))

    def sweep_clear(a: float, b: float, z_lo: float, z_hi: float) -> bool:
        return not any(
            hand_hits(boxes, grip, _yaw_axis(yaw_f + k), z_lo, z_hi) for k in np.linspace(a, b, 10)
        )

    late = np.deg2rad(HAND.late_turn)
    best: tuple[float, float, float] | None = None  # (|d|, d, e): descend at f + d, turn to f + e
    for d in np.deg2rad(np.arange(-90, 91, 15)):
        if d == 0.0 or not sweep_clear(d, d, z_turn + HAND.bottom, z_top + HAND.top):
            continue
        for e in np.linspace(0.0, np.sign(d) * late, 3):
            if sweep_clear(d, e, z_turn + HAND.bottom, z_turn + HAND.top) and sweep_clear(
                e, 0.0, grip[2] + HAND.bottom, grip[2] + HAND.top
            ):
                if best is None or abs(d) < best[0]:
                    best = (abs(d), d, e)
                break
    if best is None:
        return None
    return _yaw_axis(yaw_f + best[1]), _yaw_axis(yaw_f + best[2])


REACH_SOFT = 0.55  # m: horizontal grip distance from the robot base beyond which grasps are penalised
HAND_HALF = 0.10  # m: half-length of the Panda hand along the finger axis
ARM_HEIGHT = 0.12  # obstacles this far above the grip point can touch the forearm
ARM_CLEAR = 0.10  # wanted horizontal distance from the grip point to such obstacles
DESCENT_SPAN = 0.25  # grip point to the top of the hand's sweep while descending from hover
DESCENT_MARGIN = 0.01  # m: the housing footprint is this much wider when checking the descent
BLOCKED_PENALTY = 0.05  # clearance (m) taken from grasps whose descent meets something
#: a box ("short_side" yaw) may be gripped off its centre along its long side when the centred grasp is
#: crowded (libero_10 LIVING_ROOM_SCENE2: a milk carton 8 cm from the cream cheese stopped the hand's descent;
#: the fingers closed on air); each shift keeps the finger pads GRIP_PAD_HALF inside the box's end
BOX_SHIFTS = (0.0, -0.015, 0.015, -0.025, 0.025)
GRIP_PAD_HALF = 0.012
SHIFT_WEIGHT = 20.0  # penalty per metre off centre, in the units of the wrist turn
# deg between a rim grasp's finger axis and the radius. 45: libero_goal's bowl under the opened top drawer's
# corner, where the housing (21 cm along the fingers) of every grasp up to 30 degrees met the drawer
RIM_SKEWS = (0.0, -15.0, 15.0, -30.0, 30.0, -45.0, 45.0)
SKEW_WEIGHT = 1.0  # penalty per rad of skew, in the units of the wrist turn
REACH_WEIGHT = 40.0  # penalty per metre beyond REACH_SOFT, in the units of the wrist turn (rad)


def rim_grip_z(
    boxes: list[tuple[np.ndarray, np.ndarray]], grip: np.ndarray, depth: float, floor: float, default: float
) -> float:
    """Grip height on a rim: `depth` below the wall's top where the fingers close (`grip` xy), not below
    the whole object's top. A bowl resting tilted on a ramekin has its low side's rim 2 cm under its
    high side's: gripped at the high side's height, the fingers closed over the low rim."""
    tops = [float(hi[2]) for lo, hi in boxes if E._dist_to_box2d(grip, lo, hi) < 0.01]
    return max(max(tops) - depth, floor) if tops else default


def _box_without_low_drawers(scene: E.Scene, name: str, z: float) -> tuple[np.ndarray, np.ndarray]:
    """AABB of an object less the geoms of its slide-jointed parts (drawers) whose top is below `z`."""
    m = scene.model
    low = {
        int(m.jnt_bodyid[j])
        for j in range(m.njnt)
        if int(m.jnt_type[j]) == 2  # mjJNT_SLIDE
        and scene.geoms_aabb(scene.subtree_geoms(int(m.jnt_bodyid[j])))[1][2] <= z
    }
    geoms = scene.subtree_geoms(scene.body_id(name))
    keep = [g for g in geoms if int(m.geom_bodyid[g]) not in low]
    return scene.geoms_aabb(keep if keep else geoms)


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
    # less an open drawer's low box: not what the forearm hits (with it, the cabinet's box reached 2 cm
    # nearer a bowl in front of its bottom drawer pulled wide open; the rim grasp then chosen let it tilt)
    tall = [
        b
        for n in scene.obstacle_names({obj})
        if (b := _box_without_low_drawers(scene, n, grip_z + ARM_HEIGHT))[1][2] > grip_z + ARM_HEIGHT
    ]
    cur_axis = scene.eef_mat[:, 0]
    mat = scene.body_mat(obj)
    pts = np.array([c for g in scene.subtree_geoms(scene.body_id(obj)) for c in scene.geoms_aabb([g])])
    widths = [float(np.ptp(pts[:, :2] @ E._horizontal(mat[:, k])[:2])) for k in range(2)]
    short_axis = E._horizontal(mat[:, int(np.argmin(widths))])
    base_xy = scene.body_pos("robot0_base")[:2]
    near = 0.3  # m: boxes further than this from the object cannot meet the hand
    boxes = [
        b
        for b in hand_boxes(scene, obj)
        if b[1][2] > grip_z + HAND.bottom and E._dist_to_box2d(centre, b[0], b[1]) < near
    ]
    rim = spec.mode == "rim"
    geom_boxes = [scene.geoms_aabb([g]) for g in scene.subtree_geoms(scene.body_id(obj))] if rim else []
    # a rim may also be gripped with the fingers skewed from the radius (still across the wall): lets the
    # hand miss an open drawer's handle right over the bowl (task 8)
    skews = np.deg2rad(RIM_SKEWS) if rim else np.zeros(1)
    # the open fingers reach below the housing: a rim grasp's outer finger must come down beside the wall,
    # not on a drawer wall next to it (see fingers); such grasps lose to any whose fingers are clear
    finger_boxes = fingers.oriented_boxes(scene, obj, centre) if rim else []
    inset: float | None = 0.0

    box = spec.yaw == "short_side" and not rim
    shifts = BOX_SHIFTS if box else (0.0,)

    cands: list[tuple[bool, float, bool, float, np.ndarray, np.ndarray]] = []
    yaws = np.deg2rad(np.arange(0, 360 if rim else 180, 15))
    for yaw, skew, shift in ((y, k, d) for y in yaws for k in skews for d in shifts):
        f = _yaw_axis(yaw + skew)
        if box and abs(f @ short_axis) < np.cos(np.deg2rad(20)):
            continue
        side = np.array([-f[1], f[0], 0.0])  # along the box's long side
        if shift and abs(shift) > float(np.ptp(pts[:, :2] @ side[:2])) / 2.0 - GRIP_PAD_HALF:
            continue
        grip = np.array([centre[0], centre[1], grip_z]) + shift * side
        if rim:
            grip = grip + spec.rim_offset * _yaw_axis(yaw)
            grip[2] = rim_grip_z(geom_boxes, grip, spec.depth, float(lo[2]) + 0.012, grip_z)
            inset = fingers.rim_inset(finger_boxes, grip, f, _yaw_axis(yaw))
            if inset is not None:
                grip = grip - inset * _yaw_axis(yaw)
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
        # the descent: per-geom boxes (an open drawer's handle over a bowl is part of the excluded target),
        # with a margin: a hand passing 2.3 cm from an open drawer's front panel caught on it, came down
        # tilted and the bowl slipped out of the rim grasp (libero_goal, bowl into the top drawer)
        if hand_hits(boxes, grip, f, grip_z + HAND.bottom, grip_z + DESCENT_SPAN):
            clear -= BLOCKED_PENALTY
        elif height > 0.03 and hand_hits(
            boxes, grip, f, grip_z + HAND.bottom, grip_z + DESCENT_SPAN, DESCENT_MARGIN
        ):  # (a flat plate is gripped low, under what hangs near it)
            clear -= BLOCKED_PENALTY / 2.0
        turn = float(np.arccos(min(1.0, abs(f @ cur_axis))))
        reach = max(0.0, float(np.linalg.norm(grip[:2] - base_xy)) - REACH_SOFT)
        free = not rim or inset is not None
        cost = (
            turn
            + REACH_WEIGHT * reach
            + SKEW_WEIGHT * abs(skew)
            + fingers.INSET_WEIGHT * (inset or 0.0)
            + SHIFT_WEIGHT * abs(shift)
        )
        cands.append((free, min(clear, 0.03), skew == 0.0, -cost, grip, f))
    # at equal clearance a radial rim grasp wins over a skewed one: skewed to dodge a drawer wall, it let
    # the bowl tilt 40-50 degrees in the hand and miss the plate (skews are for what the radial hand hits)
    _, _, _, _, grip, f = max(cands, key=lambda c: (c[0], round(c[1], 3), c[2], c[3]))
    return grip, f


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
