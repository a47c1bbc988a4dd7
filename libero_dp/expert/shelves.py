"""Objects into shelf-like fixtures, where lowering from above does not work.

* `plan_handle_into_slot`: a handled object (frying pan) slid into a shelf layer closed on top
  (`_closed_top`), held by its handle with the handle pointing out of the opening.
* `plan_lay_on_slope`: an upright bottle laid onto a sloped rack board (`_sloped_board`), bottom first.
"""

from __future__ import annotations

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import pick_place as P
from libero_dp.expert.book_slots import Slot, _pitched_rot
from libero_dp.expert.object_grasps import ObjGraspSpec, _handle_dir, choose_grasp


def _closed_top(scene: E.Scene, site: str, parent: str) -> bool:
    """Whether a plate of the parent spans the whole site from above (a shelf layer; a stove burner that
    spans its flat cook region from above, so a region must also have height)."""
    c, rot, half = scene.site(site)
    ext = np.abs(rot) @ half
    if ext[2] < 0.02:  # a flat surface region (a stove's cook region lies inside the stove body)
        return False
    for g in scene.subtree_geoms(scene.body_id(parent)):
        lo, hi = scene.geoms_aabb([g])
        covers = np.all(lo[:2] <= c[:2] - ext[:2] + 0.005) and np.all(hi[:2] >= c[:2] + ext[:2] - 0.005)
        if covers and lo[2] >= c[2] + ext[2] - 0.005:
            return True
    return False


#: pan into a shelf layer: bottom above the layer's floor, lift before the slide, rim clear of the opening
SLOT_FLOOR_CLEAR, SLOT_LIFT, SLOT_FRONT_CLEAR = 0.02, 0.03, 0.025


def plan_handle_into_slot(scene: E.Scene, obj: str, site: str, spec: ObjGraspSpec) -> list[E.Skill]:
    """A handled object (frying pan) into a shelf layer closed on top: grasp the handle from above, lift,
    turn so the handle points out of the opening, line up in front of it at the layer's height, slide the
    body in along the slot direction (only the body origin must end inside the region; the handle and the
    hand stay outside), release, rise, retreat.
    """
    parent = scene.inner.object_sites_dict[site].parent_name
    slot = Slot(scene, site, parent)
    d = slot.d
    lat = np.array([-d[1], d[0], 0.0])
    c, s_rot, s_half = scene.site(site)
    half_d = float(np.abs(s_rot) @ s_half @ np.abs(d))
    grip, finger = choose_grasp(scene, obj, spec, {parent})
    hdir = _handle_dir(scene, obj, spec)
    origin = scene.body_pos(obj)
    pts = np.array([p for g in scene.subtree_geoms(scene.body_id(obj)) for p in scene.geoms_aabb([g])])
    radius = float(np.max((pts[:, :2] - origin[:2]) @ -hdir[:2]))  # body reach ahead of the origin
    # handle along -d after the turn: yaw angle from hdir to -d
    ang = float(np.arctan2(hdir[0] * -d[1] - hdir[1] * -d[0], hdir @ -d))
    cz, sz = np.cos(ang), np.sin(ang)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    finger_in = rz @ finger
    # origin as deep as the back of the region allows, at least 3 cm inside its near face
    far = float(c @ d) + half_d
    goal_along = max(float(c @ d) - half_d + 0.03, min(float(c @ d), far - radius - 0.005))
    pre_along = slot.front - radius - SLOT_FRONT_CLEAR
    # bottom well above the layer's floor (a handle-held pan sags, and its far rim must pass over the
    # plate's front edge), but no closer to the ceiling than to the floor
    height = float(np.ptp(pts[:, 2]))
    bottom_z = slot.floor_z + min(SLOT_FLOOR_CLEAR, max(0.005, (slot.ceil_z - slot.floor_z - height) / 2.0))
    flags: dict[str, np.ndarray] = {}

    def held(s: E.Scene) -> np.ndarray:
        """(origin - hand) after the turn, and the object's bottom below the hand; read once after lift."""
        if "off" not in flags:
            lo, _ = s.aabb(obj)
            off = rz @ (s.body_pos(obj) - s.eef_pos)
            flags["off"] = np.array([off[0], off[1], float(s.eef_pos[2] - lo[2])])
        return flags["off"]

    def hand_for(s: E.Scene, along: float) -> np.ndarray:
        off = held(s)
        p = float(c @ lat) * lat + along * d
        return np.array([p[0] - off[0], p[1] - off[1], bottom_z + off[2]])

    def lift_target(s: E.Scene) -> np.ndarray:
        return s.eef_pos + np.array([0.0, 0.0, max(SLOT_LIFT, bottom_z - float(s.aabb(obj)[0][2]))])

    return P.fast(
        [
            E.MoveTo(
                "approach", lambda s: grip + np.array([0.0, 0.0, 0.07]), lambda s: finger, -1.0, tol=0.006
            ),
            E.MoveTo("descend", lambda s: grip, lambda s: finger, -1.0, tol=0.004, stop_on_stall=True),
            E.Gripper("grasp_close", close=True),
            E.MoveTo("lift", lift_target, lambda s: finger, 1.0, tol=0.01),
            E.MoveTo("carry", lambda s: hand_for(s, pre_along), lambda s: finger_in, 1.0, tol=0.008),
            E.MoveTo(
                "lower",
                lambda s: hand_for(s, goal_along),
                lambda s: finger_in,
                1.0,
                tol=0.006,
                stop_on_stall=True,
            ),
            E.Gripper("release", close=False, min_steps=8),
            E.MoveTo(
                "rise",
                lambda s: s.eef_pos + np.array([0.0, 0.0, 0.06]),
                lambda s: finger_in,
                -1.0,
                tol=0.01,
                max_steps=30,
            ),
            E.MoveTo(
                "retreat", lambda s: s.eef_pos - 0.06 * d, lambda s: finger_in, -1.0, tol=0.01, max_steps=30
            ),
        ]
    )


def _sloped_board(scene: E.Scene, site: str, parent: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(point on the top face, unit up-normal) of the parent's thin tilted plate nearest to the site, if any
    (a wine rack's top board slopes ~33 degrees down toward its front lip)."""
    m, d = scene.model, scene.data
    c, _, _ = scene.site(site)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for g in scene.subtree_geoms(scene.body_id(parent)):
        if int(m.geom_type[g]) != 6:
            continue
        size = np.array(m.geom_size[g])
        k = int(np.argmin(size))
        if size[k] > 0.006 or np.sort(size)[1] < 0.03:  # a plate, not a thin lip
            continue
        n = np.array(d.geom_xmat[g]).reshape(3, 3)[:, k]
        n = n if n[2] > 0 else -n
        if not 0.3 < n[2] < 0.95:
            continue
        centre = np.array(d.geom_xpos[g])
        dist = float(
            np.linalg.norm(scene.geoms_aabb([g])[0] - c) + np.linalg.norm(scene.geoms_aabb([g])[1] - c)
        )
        if best is None or dist < best[0]:
            best = (dist, centre + size[k] * n, n)
    return None if best is None else (best[1], best[2])


#: laying an upright bottle on a sloped board: tilt from vertical when released (it then falls back onto
#: the board, pivoting on its bottom), bottom centre above the board and up-slope of the site centre
LAY_TILT, LAY_BOTTOM_UP, LAY_BACK = np.deg2rad(40.0), 0.015, 0.02


def plan_lay_on_slope(
    scene: E.Scene, obj: str, site: str, spec: ObjGraspSpec, board: tuple[np.ndarray, np.ndarray]
) -> list[E.Skill]:
    """An upright bottle onto a sloped rack board (`On` tests the body origin, at the bottle's bottom, in a
    thin band just above the board by the front lip): an upright bottle falls off the slope once released.
    Grasp the neck with the fingers along the board's level direction, lift over the rack, tilt the bottle
    about the finger axis so its bottom leads down-slope, put the bottom just above the board by the lip,
    release: the bottle falls back onto the board, its bottom held by the lip.
    """
    point, n = board
    level = E._horizontal(np.cross(n, np.array([0.0, 0.0, 1.0])))  # along the board, horizontal
    down = E._horizontal(n)  # horizontal down-slope direction
    c, _, _ = scene.site(site)
    lo, hi = scene.aabb(obj)
    origin = scene.body_pos(obj)
    grip = np.array([origin[0], origin[1], float(hi[2]) - spec.depth])
    length = float(grip[2] - origin[2])  # grip to bottom along the bottle axis
    axis = np.cos(LAY_TILT) * np.array([0.0, 0.0, 1.0]) - np.sin(LAY_TILT) * down  # bottom -> neck
    # bottom centre: over the site centre moved up-slope, LAY_BOTTOM_UP above the board's plane
    b_xy = c[:2] - LAY_BACK * down[:2]
    b_z = float(point[2] + (n[:2] @ (point[:2] - b_xy)) / n[2]) + LAY_BOTTOM_UP
    bottom = np.array([b_xy[0], b_xy[1], b_z])
    hand = bottom + length * axis
    tilt_rots = (_pitched_rot(level, -axis), _pitched_rot(-level, -axis))
    _, rack_hi = scene.aabb(scene.inner.object_sites_dict[site].parent_name)
    cruise_z = max(float(rack_hi[2]) + 0.04 + length, float(grip[2]) + 0.1)

    def rot_down(s: E.Scene) -> np.ndarray:
        return E._nearest_finger_rot(level, s.eef_mat)

    def tilted(s: E.Scene) -> np.ndarray:
        # the gripper is symmetric: of the two finger directions, the one nearer the current hand
        return min(tilt_rots, key=lambda r: np.linalg.norm(E.rot_to_axis_angle(r @ s.eef_mat.T)))

    return P.fast(
        [
            E.MoveTo(
                "approach", lambda s: grip + np.array([0.0, 0.0, 0.07]), lambda s: level, -1.0, tol=0.006
            ),
            E.MoveTo("descend", lambda s: grip, lambda s: level, -1.0, tol=0.004, stop_on_stall=True),
            E.Gripper("grasp_close", close=True),
            E.MoveTo("lift", lambda s: np.array([*s.eef_pos[:2], cruise_z]), lambda s: level, 1.0, tol=0.01),
            E.MoveTo("carry", lambda s: np.array([*hand[:2], cruise_z]), lambda s: level, 1.0, tol=0.01),
            _Pose("tilt", lambda s: hand + np.array([0.0, 0.0, 0.06]), tilted, 1.0, tol=0.01, rot_tol=0.06),
            _Pose("lower", lambda s: hand, tilted, 1.0, tol=0.005, rot_tol=0.08, stop_on_stall=True),
            E.Gripper("release", close=False, min_steps=8),
            _Pose(
                "retreat",
                lambda s: s.eef_pos + np.array([0.0, 0.0, 0.10]),
                lambda s: s.eef_mat,
                -1.0,
                tol=0.01,
                max_steps=40,
            ),
        ]
    )


def _Pose(*args, **kwargs) -> E.Skill:  # noqa: N802 - a skill constructor
    """A MovePose kept at the plain cap (free_cap 0: `P.fast` leaves it alone) inside a fast plan."""
    return E.MovePose(*args, free_cap=0.0, **kwargs)
