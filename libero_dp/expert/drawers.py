"""Drawer skills for the scripted LIBERO expert: open (pull) and close (push) slide-jointed drawers.

plan_open_drawer / plan_close_drawer (the package's dispatcher sends slide-jointed regions here).
Both refuse (NotImplementedError) regions without a slide joint (microwave doors are hinges).

Open, why a near-horizontal pinch: the cabinet handles are a 9 cm bar on two posts, 1.6 cm in front of
the drawer panel, 7 cm apart vertically from the next drawer's handle, and the top drawer's slot is
roofed by the cabinet top's lip. No Panda finger fits that 1.6 cm slot from above (the finger is 2.1 cm
wide, and with the fingers along the pull axis the 20 cm hand hits the cabinet), so the hand turns to
point at the cabinet with its fingers vertical, closes on the bar's top and bottom faces and pulls it
straight out. The hand's long axis is then vertical (+/- 10 cm), which fits in front of the top and
middle drawers but not the bottom one (the table is 4.6 cm under its handle). The approach is pitched 30
degrees down so the wrist rides above fixtures in front of the cabinet (scene 4's wine rack stopped a
level pull 2 cm short).

Open a bottom drawer, why a hook: no pinch fits there (the finger axis must cross the bar, so the 20 cm
hand either reaches the table or, nearer horizontal, the drawer above). The closed fingertips (3 x 1.75
cm) are laid along the bar instead, the hand tilted 60 degrees toward the cabinet, so the hand's long
axis runs along the bar in front of the cabinet and its housing stays below and in front of the next
handle; the tips go over the bar and drop into the 1.6 cm slot behind it (about 0.7 cm deep), and the
hand pulls while holding its height a little below where it landed: the bar's back edge then pushes on
the fingers' underside and cannot make them ride up over it. A handle too near the table even for that
raises NotImplementedError.

Close: the core push, with the closed fingers tilted 45 degrees toward the cabinet (pointing straight
down, the wrist hits the cabinet top's front edge before a bottom drawer is shut) and the wrist on the
robot side of the hand, pushed at a faster speed.

Wrist side: the two grasps (+/- finger axis) are equivalent for the fingers but not for the arm; the one
with link6 toward the robot base (or up) is used (`wrist_rot`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert.drawer_skills import PullJoint, PushJointPose, move_to_pose, wrist_rot

Scene = E.Scene

HAND_HALF_LENGTH = 0.105  # Panda hand collision mesh, half extent along the finger axis
TABLE_CLEARANCE = 0.01
PULL_PITCH_DEG = 30.0  # approach this far below horizontal when pinching a handle
#: flatter pitches, tried in turn when the pitched hand would hit the cabinet above (the next drawer's handle)
PULL_PITCH_FALLBACK_DEG = (15.0, 0.0)
PUSH_TILT_DEG = 45.0  # closed fingers tilted this far from vertical toward the cabinet when pushing


def _slide_joint(scene: Scene, region: str, pred: str) -> tuple[str, object]:
    """The region's slide joint (drawers) and its site object; anything else is not a drawer."""
    site_obj = scene.inner.object_sites_dict.get(region)
    joints = list(getattr(site_obj, "joints", None) or [])
    if not joints:
        raise NotImplementedError(f"no expert plan for goal ({pred} {region}): the region has no joint")
    m = scene.model
    if int(m.jnt_type[m.joint_name2id(joints[0])]) != 2:  # mjJNT_SLIDE
        raise NotImplementedError(f"no expert plan for goal ({pred} {region}): only slide joints (drawers)")
    return joints[0], site_obj


def handle_geoms(scene: Scene, drawer_body: int, out_dir: np.ndarray) -> list[int]:
    """The handle bar: the drawer geoms that stick out furthest along `out_dir` (within 1.2 cm)."""
    geoms = scene.subtree_geoms(drawer_body)

    def front(g: int) -> float:
        lo, hi = scene.geoms_aabb([g])
        return float(max(lo @ out_dir, hi @ out_dir))

    fronts = {g: front(g) for g in geoms}
    outer = max(fronts.values())
    return [g for g, v in fronts.items() if v > outer - 0.012]


FIT_MARGIN = 0.02  # a drawer opened for an object: this much longer than the object along the pull
#: largest horizontal distance from the robot base that a back-off from a pulled handle ends at
REACH_RADIUS = 0.66


def within_reach(scene: Scene, p: np.ndarray) -> np.ndarray:
    """`p` moved horizontally toward the robot base to at most REACH_RADIUS from it.

    A hand that ends a pull 72 cm out (libero_goal's cabinet, 5 cm further than libero_90's) straightens
    the elbow to its limit while it turns back to pointing down, and the arm then stays stuck there.
    """
    base = scene.body_pos("robot0_base")
    d = (p - base)[:2]
    r = float(np.linalg.norm(d))
    if r <= REACH_RADIUS:
        return p
    out = np.array(p, dtype=np.float64)
    out[:2] = base[:2] + d * (REACH_RADIUS / r)
    return out


def pinch_axes(pitch: float, pull: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(approach, finger axis) of the pinch pitched `pitch` rad below horizontal, fingers across the bar."""
    up = np.array([0.0, 0.0, 1.0])
    approach = -np.cos(pitch) * pull - np.sin(pitch) * up
    finger = np.sin(pitch) * -pull + np.cos(pitch) * up  # in the vertical plane, across the bar
    return approach, finger


#: the hand's upper edge in the pinch: (distance behind the grip site, half-width along the finger axis);
#: measured where the hand met the next handle up (7 cm along the fingers, 3.2 cm behind the grip site)
HAND_EDGE = ((0.03, 0.07), (0.045, 0.09), (0.06, 0.105), (0.09, 0.105), (0.12, 0.105))


def pinch_pitch(scene: Scene, grasp: np.ndarray, pull: np.ndarray, others: list[int]) -> float:
    """The steepest of PULL_PITCH_DEG and its fallbacks whose hand clears `others` (the rest of the cabinet).

    Pitched 30 degrees, the hand's upper end leans toward the cabinet: in front of a middle drawer it
    reaches the top drawer's handle 7 cm above (which sticks out as far) and stalls 1 cm short of the bar.
    """
    boxes = [scene.geoms_aabb([g]) for g in others]
    pitches = (PULL_PITCH_DEG, *PULL_PITCH_FALLBACK_DEG)
    for deg in pitches:
        approach, finger = pinch_axes(np.deg2rad(deg), pull)
        pts = [grasp - d * approach + w * finger for d, w in HAND_EDGE]
        if not any(np.all(p > lo - 0.005) and np.all(p < hi + 0.005) for p in pts for lo, hi in boxes):
            return float(np.deg2rad(deg))
    return float(np.deg2rad(pitches[-1]))


def _drawer_motion(scene: Scene, region: str, pred: str) -> tuple[str, object, int, float, np.ndarray]:
    """(joint, site object, joint id, joint position now, horizontal direction the hand moves the drawer
    in) for `pred` "open" or "close": toward the middle of the parent's default open or close range."""
    joint, site_obj = _slide_joint(scene, region, pred)
    jid = scene.model.joint_name2id(joint)
    parent = scene.inner.get_object(site_obj.parent_name)
    q_goal = float(np.mean(parent.object_properties["articulation"][f"default_{pred}_ranges"]))
    q0 = scene.joint_q(joint)
    axis = np.array(scene.data.xaxis[jid])
    return joint, site_obj, jid, q0, E._horizontal(np.sign(q_goal - q0) * axis)


def plan_open_drawer(scene: Scene, region: str, fit: str | None = None) -> list[E.Skill]:
    """Turn the hand to face the cabinet (fingers vertical), pinch the handle bar, pull, release, back off;
    a handle too near the table for that (a bottom drawer) is hooked instead (`plan_hook_drawer`).

    `fit`: an object that goes in next: pull only until the drawer has room for it (FIT_MARGIN more than
    its length along the pull). Fully open, libero_goal's top drawer hangs over the bowl beside it, and no
    grasp of the bowl's rim clears the drawer's front.
    """
    joint, site_obj, jid, q0, pull = _drawer_motion(scene, region, "open")
    m = scene.model
    bar = handle_geoms(scene, int(m.jnt_bodyid[jid]), pull)

    def bar_centre(s: Scene) -> np.ndarray:
        lo, hi = s.geoms_aabb(bar)
        return (lo + hi) / 2.0

    c0 = bar_centre(scene)
    table_top = _table_top(scene)
    if c0[2] - HAND_HALF_LENGTH < table_top + TABLE_CLEARANCE:
        return plan_hook_drawer(scene, region, joint, pull, bar, table_top)
    # point at the cabinet, pitched down (the wrist rides higher, clear of fixtures in front of the cabinet),
    # less so where the hand's upper end would hit the drawer above (its handle sticks out as far)
    own = set(scene.subtree_geoms(int(m.jnt_bodyid[jid])))
    others = [g for g in scene.subtree_geoms(scene.body_id(site_obj.parent_name)) if g not in own]
    pitch = pinch_pitch(scene, c0 + 0.002 * pull, pull, others)
    approach, finger = pinch_axes(pitch, pull)

    def rot(s: Scene) -> np.ndarray:
        return wrist_rot(s, approach, finger)

    def pre_grasp(s: Scene) -> np.ndarray:
        return bar_centre(s) - 0.05 * approach

    def grasp(s: Scene) -> np.ndarray:
        return bar_centre(s) + 0.002 * pull

    wanted = np.inf
    if fit is not None:
        lo, hi = scene.aabb(fit)
        wanted = float(np.abs(hi - lo) @ np.abs(pull)) + FIT_MARGIN

    def is_open(s: Scene) -> bool:
        return abs(s.joint_q(joint) - q0) >= wanted or bool(s.inner.object_states_dict[region].is_open())

    def backed_off(s: Scene) -> np.ndarray:
        # far enough that the next plan's turn back to pointing down does not sweep the hand into the
        # handle (a 6 cm back-off let it push the opened drawer 4 cm closed again); within reach of the base
        return within_reach(s, s.eef_pos + 0.12 * pull + np.array([0.0, 0.0, 0.06]))

    return [
        move_to_pose("approach", pre_grasp, approach, finger, gripper=-1.0, tol=0.01, rot_tol=0.1),
        move_to_pose(
            "reach", grasp, approach, finger, gripper=-1.0, free_cap=0.6, tol=0.004, stop_on_stall=True
        ),
        E.Gripper("grasp_handle", close=True),
        PullJoint(bar_centre, pull, rot, is_open, lambda s: s.joint_q(joint)),
        E.Gripper("release_handle", close=False, min_steps=5),
        move_to_pose("retreat", backed_off, approach, finger, gripper=-1.0, tol=0.01, max_steps=30),
    ]


def plan_close_drawer(scene: Scene, region: str) -> list[E.Skill]:
    """The core push plan (approach above the handle, descend in front of it, push, back off) with the wrist
    on the robot side: with the other yaw the forearm reached over the cabinet and jammed on it."""
    joint, site_obj, jid, _, push_dir = _drawer_motion(scene, region, "close")
    m = scene.model
    across = np.array([-push_dir[1], push_dir[0], 0.0])
    # fingers tilted toward the cabinet: the wrist stays behind the hand (pointing straight down, the
    # wrist of a hand closing a bottom drawer hits the cabinet top's front edge)
    tilt = np.deg2rad(PUSH_TILT_DEG)
    down = np.cos(tilt) * np.array([0.0, 0.0, -1.0]) + np.sin(tilt) * push_dir
    handle = handle_geoms(scene, int(m.jnt_bodyid[jid]), -push_dir)

    def contact(s: Scene) -> np.ndarray:
        lo, hi = s.geoms_aabb(handle)
        c = (lo + hi) / 2.0
        face = min(lo @ push_dir, hi @ push_dir)  # handle face the hand pushes on
        return c + (face - c @ push_dir) * push_dir

    # grip site to the closed fingertips' front along the push direction (tip 1.4 cm, fingers 2.1 cm wide)
    standoff = 0.0137 * np.sin(tilt) + 0.0106 * np.cos(tilt) + 0.002
    _, body_hi = scene.aabb(site_obj.parent_name)
    safe_z = max(float(body_hi[2]) + E.SAFE_Z_MARGIN, float(scene.eef_pos[2]))

    def pre_push(s: Scene) -> np.ndarray:
        # close in front of the handle: in scene 4 a bowl and the wine rack leave little room behind the hand
        return contact(s) - (standoff + 0.012) * push_dir

    def above(s: Scene) -> np.ndarray:
        p = pre_push(s)
        return np.array([p[0], p[1], min(safe_z, p[2] + 0.04)])

    def state_closed(s: Scene) -> bool:
        return bool(s.inner.object_states_dict[region].is_close())

    def backed_off(s: Scene) -> np.ndarray:
        return s.eef_pos - 0.06 * push_dir + np.array([0.0, 0.0, 0.04])

    def rot(s: Scene) -> np.ndarray:
        return wrist_rot(s, down, across)

    return [
        move_to_pose("approach", above, down, across, gripper=1.0, tol=0.02, rot_tol=0.1),
        move_to_pose(
            "descend", pre_push, down, across, gripper=1.0, tol=0.006, stop_on_stall=True, max_steps=40
        ),
        PushJointPose(
            rot,
            lambda s: contact(s) - standoff * push_dir,
            push_dir,
            across,
            state_closed,
            lambda s: s.joint_q(joint),
        ),
        move_to_pose("retreat", backed_off, down, across, gripper=1.0, tol=0.01, max_steps=40),
    ]


def _table_top(scene: Scene) -> float:
    """Height of the table surface (the floor of the workspace); -inf when the scene has no table body."""
    for name in ("table", "main_table", "kitchen_table"):
        try:
            _, hi = scene.aabb(name)
        except Exception:  # noqa: BLE001 - body absent in this scene
            continue
        return float(hi[2])
    return float("-inf")


@dataclass(frozen=True)
class HookSpec:
    """The hook that opens a drawer whose handle is too low for the pinch (lengths in m)."""

    tilt_deg: float = 60.0  # approach this far from vertical, toward the cabinet
    depth: float = 0.008  # fingertip centre this far behind the bar's back face (the slot is 1.6 cm)
    over: float = 0.02  # ... and this far above the bar's top before dropping
    drop: float = 0.03  # drop at most this far (it stops on the bar's back edge / in the slot)
    tip: float = 0.009  # closed fingertips beyond the grip site
    pre: float = 0.05  # approach from this far back along the tilted approach
    press: float = 0.004  # pull this far below the landed height (keeps the hook engaged)
    cap: float = 0.4  # pull speed (position action)
    housing_drop: float = 0.012  # the hand housing's lowest point below the grip site at this tilt


HOOK = HookSpec()


def plan_hook_drawer(
    scene: Scene, region: str, joint: str, pull: np.ndarray, bar: list[int], table_top: float
) -> list[E.Skill]:
    """Lay the closed fingertips over the handle bar, drop them behind it, pull (the hook), back off."""
    h = HOOK
    up = np.array([0.0, 0.0, 1.0])
    across = np.array([-pull[1], pull[0], 0.0])
    tilt = np.deg2rad(h.tilt_deg)
    approach = -np.sin(tilt) * pull - np.cos(tilt) * up

    def bar_centre(s: Scene) -> np.ndarray:
        lo, hi = s.geoms_aabb(bar)
        return (lo + hi) / 2.0

    lo, hi = scene.geoms_aabb(bar)
    c = (lo + hi) / 2.0
    if float(hi[2]) - h.housing_drop < table_top + TABLE_CLEARANCE:
        raise NotImplementedError(
            f"no expert plan for goal (Open {region}): the handle is too close to the table even for the hook"
        )
    back = min(float(lo @ pull), float(hi @ pull))
    # fingertip centre over the slot behind the bar, clear of the bar's top
    tip = c + (back - h.depth - float(c @ pull)) * pull + (float(hi[2]) + h.over - c[2]) * up
    over = tip - h.tip * approach

    def rot(s: Scene) -> np.ndarray:
        return wrist_rot(s, approach, across)

    def is_open(s: Scene) -> bool:
        return bool(s.inner.object_states_dict[region].is_open())

    def backed_off(s: Scene) -> np.ndarray:
        return s.eef_pos - 0.06 * approach + np.array([0.0, 0.0, 0.03])

    return [
        E.MovePose(
            "approach",
            lambda s: over - h.pre * approach,
            rot,
            1.0,
            tol=0.008,
            rot_tol=0.08,
            free_cap=E.FREE.caps["approach"],
        ),
        E.MovePose("over", lambda s: over, rot, 1.0, tol=0.003, rot_tol=0.05, max_steps=60),
        E.MovePose(
            "drop", lambda s: over - h.drop * up, rot, 1.0, tol=0.003, stop_on_stall=True, max_steps=40
        ),
        PullJoint(bar_centre, pull, rot, is_open, lambda s: s.joint_q(joint), press=h.press, cap=h.cap),
        E.MovePose("retreat", backed_off, rot, 1.0, tol=0.01, max_steps=40),
    ]


def exposed_span(scene: Scene, region: str) -> tuple[np.ndarray, float, float] | None:
    """(pull direction, start, end) along the pull of the drawer's open part: from the front of the cabinet
    above it (its roof) to its front panel's inner face. None for regions without a slide joint."""
    try:
        joint, site_obj = _slide_joint(scene, region, "in")
    except NotImplementedError:
        return None
    m = scene.model
    jid = m.joint_name2id(joint)
    parent = scene.inner.get_object(site_obj.parent_name)
    q_open = float(np.mean(parent.object_properties["articulation"]["default_open_ranges"]))
    q_close = float(np.mean(parent.object_properties["articulation"]["default_close_ranges"]))
    pull = E._horizontal(np.sign(q_open - q_close) * np.array(scene.data.xaxis[jid]))
    own = scene.subtree_geoms(int(m.jnt_bodyid[jid]))
    floor = min(float(scene.geoms_aabb([g])[0][2]) for g in own)
    own_set = set(own)

    def span(g: int) -> tuple[float, float]:
        lo, hi = scene.geoms_aabb([g])
        corners = [np.array([x, y]) for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]
        v = [float(c @ pull[:2]) for c in corners]
        return min(v), max(v)

    roof = [
        span(g)[1]
        for g in scene.subtree_geoms(scene.body_id(site_obj.parent_name))
        if g not in own_set and float(scene.geoms_aabb([g])[0][2]) > floor + 0.01
    ]
    panels = [span(g) for g in own if span(g)[1] - span(g)[0] < 0.012]
    if not roof or not panels:
        return None
    return pull, max(roof), max(p[0] for p in panels)
