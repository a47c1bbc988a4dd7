"""Grasp data and grasp modes for objects the core GRASP_SPECS did not cover (pans, moka pots, mugs).

Adds `ObjGraspSpec` (a GraspSpec with handle geometry in the object's own frame) and a `choose_grasp`
that understands two more modes (everything else falls through to the core version):

* "handle": close the fingers across a handle that sticks out along a known local axis (frying pan).
  Grip points along the handle (`handle_range`, preferring `handle_dist`) at the handle's mid-thickness
  there (read from the tilted box geoms), fingers across it (+-20 deg), scored by clearance of the real
  hand and finger extents to neighbouring geoms (a moka pot stands right beside the pan's handle).
* "rim_local": fingers across the wall of a round body too wide for the open gripper (mugs are 9-10.5 cm
  across), at a centre found from the geometry (a mug's origin and AABB are both off its cup), skipping
  yaws near the handle.

`plan_pick_place` is replaced to support table regions (sites without a parent object), aim object
targets by body origin, and raise the carry height over whatever stands along the path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import pick_place as P


@dataclass(frozen=True)
class ObjGraspSpec(E.GraspSpec):
    """GraspSpec plus object-frame geometry for handle and rim grasps.

    handle_axis: the handle's direction from the body origin, in the object's local frame.
    handle_dist: preferred grip distance from the body origin along the handle (horizontal);
    handle_range: the distances tried (min, max) when the preferred one is crowded by neighbours.
    handle_clear: rim_local skips finger axes within this angle (degrees) of the handle direction.
    wall_inset: rim_local with rim_offset 0 grips the wall this far inside the body's radius.
    """

    handle_axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    handle_dist: float = 0.0
    handle_range: tuple[float, float] = (0.0, 0.0)
    handle_clear: float = 0.0
    wall_inset: float = 0.005
    body_centre: bool = False
    lay_on_slope: bool = False  # onto a sloped board (wine rack): laid down along the slope, bottom first


def _handle_dir(scene: E.Scene, obj: str, spec: ObjGraspSpec) -> np.ndarray:
    return E._horizontal(scene.body_mat(obj) @ np.asarray(spec.handle_axis, dtype=np.float64))


def _geom_z_span(scene: E.Scene, g: int, xy: np.ndarray, radius: float) -> tuple[float, float] | None:
    """z-range of geom `g` on the vertical line through `xy` (boxes exactly, grown by `radius`; else AABB)."""
    m, d = scene.model, scene.data
    if int(m.geom_type[g]) == 6:  # mjGEOM_BOX: slab intersection in the box frame, box grown by `radius`
        rot = np.array(d.geom_xmat[g]).reshape(3, 3)
        c = np.array(d.geom_xpos[g])
        half = np.array(m.geom_size[g]) + radius * np.array([1.0, 1.0, 1.0])
        p0 = rot.T @ (np.array([xy[0], xy[1], 0.0]) - c)
        u = rot.T @ np.array([0.0, 0.0, 1.0])
        t_lo, t_hi = -np.inf, np.inf
        for k in range(3):
            if abs(u[k]) < 1e-9:
                if abs(p0[k]) > half[k]:
                    return None
                continue
            a, b = (-half[k] - p0[k]) / u[k], (half[k] - p0[k]) / u[k]
            t_lo, t_hi = max(t_lo, min(a, b)), min(t_hi, max(a, b))
        return (t_lo, t_hi) if t_lo <= t_hi else None
    glo, ghi = scene.geoms_aabb([g])
    if E._dist_to_box2d(np.asarray(xy), glo, ghi) <= radius:
        return float(glo[2]), float(ghi[2])
    return None


def _height_at(scene: E.Scene, obj: str, xy: np.ndarray, radius: float = 0.0) -> tuple[float, float]:
    """(lowest, highest) z of the object's geoms on the vertical line through a horizontal point."""
    lo_z, hi_z = np.inf, -np.inf
    for g in scene.subtree_geoms(scene.body_id(obj)):
        span = _geom_z_span(scene, g, xy, radius)
        if span is not None:
            lo_z, hi_z = min(lo_z, span[0]), max(hi_z, span[1])
    return lo_z, hi_z


def _cup_centre(scene: E.Scene, obj: str, hdir: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and radius of a round body with a handle along `hdir` (the body origin need not be its centre).

    Across the handle the extent is the body's diameter; along it, the body starts at the far side.
    """
    pts = np.array([c for g in scene.subtree_geoms(scene.body_id(obj)) for c in scene.geoms_aabb([g])])
    perp = np.array([-hdir[1], hdir[0], 0.0])
    along, across = pts @ hdir, pts @ perp
    radius = float(np.ptp(across)) / 2.0
    c_along = float(np.min(along)) + radius
    c_across = (float(np.min(across)) + float(np.max(across))) / 2.0
    return c_along * hdir + c_across * perp, radius


#: Panda hand collision extents in the grip-site frame (measured): fingers reach +-7 cm along the finger
#: axis when open, 1.4 cm either side of it, from 1.5 cm below to 5 cm above the grip site; the hand body
#: +-10.5 cm along it, +-3.7 cm across, 2.2-12.8 cm above the grip site.
FINGER_REACH, FINGER_HALF, FINGER_Z = 0.07, 0.014, (-0.015, 0.05)
HAND_REACH, HAND_HALF, HAND_Z = 0.105, 0.037, (0.022, 0.128)


def _geom_boxes(scene: E.Scene, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """World AABBs of every collision geom of some objects (an open microwave door is not its AABB)."""
    return [scene.geoms_aabb([g]) for n in names for g in scene.subtree_geoms(scene.body_id(n))]


def _clearance(grip: np.ndarray, f: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Horizontal clearance of the open fingers and the hand body, descending onto `grip`, to obstacle geoms.

    The hand comes straight down from above, so anything above the part's lowest point counts.
    """
    out = 1.0
    for reach, half, z_lo in ((FINGER_REACH, FINGER_HALF, FINGER_Z[0]), (HAND_REACH, HAND_HALF, HAND_Z[0])):
        pts = [grip + t * f for t in np.linspace(-reach, reach, int(2 * reach / 0.01) + 1)]
        for lo, hi in boxes:
            if hi[2] > grip[2] + z_lo:
                out = min(out, min(E._dist_to_box2d(p, lo, hi) for p in pts) - half)
    return out


def _rot_z(v: np.ndarray, deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], 0.0])


def choose_grasp(
    scene: E.Scene, obj: str, spec: E.GraspSpec, exclude: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Grip point and finger axis; "handle" and "rim_local" modes here, the rest in the core version.

    For ObjGraspSpec with `body_centre`, a "center" grasp is moved to the body origin (a handle or spout
    shifts the AABB centre off the body).
    """
    if not isinstance(spec, ObjGraspSpec):
        return P.choose_grasp(scene, obj, spec, exclude)
    origin = scene.body_pos(obj)
    if spec.mode not in ("handle", "rim_local"):
        grip, f = P.choose_grasp(scene, obj, spec, exclude)
        if spec.body_centre:
            grip = np.array([origin[0], origin[1], grip[2]])
        return grip, f
    hdir = _handle_dir(scene, obj, spec)
    obstacles = _geom_boxes(scene, scene.obstacle_names(exclude | {obj}))
    lo, hi = scene.aabb(obj)
    cur_axis = scene.eef_mat[:, 0]
    cands: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    if spec.mode == "handle":
        perp = np.array([-hdir[1], hdir[0], 0.0])
        d_lo, d_hi = spec.handle_range
        for d in np.arange(d_lo, d_hi + 1e-6, 0.01):
            xy = origin[:2] + d * hdir[:2]
            lo_z, hi_z = _height_at(scene, obj, xy)
            if not np.isfinite(hi_z):
                continue
            grip = np.array([xy[0], xy[1], max(hi_z - spec.depth, (lo_z + hi_z) / 2.0)])
            for ang in (0.0, -20.0, 20.0):
                f = _rot_z(perp, ang)
                turn = float(np.arccos(min(1.0, abs(f @ cur_axis))))
                cost = 5.0 * abs(d - spec.handle_dist) + np.deg2rad(abs(ang)) + 0.2 * turn
                cands.append((min(_clearance(grip, f, obstacles), 0.03), -cost, grip, f))
    else:  # rim_local: fingers across the wall, away from the handle, toward the robot when possible
        centre, radius = _cup_centre(scene, obj, hdir)
        rim = spec.rim_offset if spec.rim_offset > 0 else radius - spec.wall_inset
        for yaw in np.deg2rad(np.arange(0, 360, 15)):
            f = np.array([np.cos(yaw), np.sin(yaw), 0.0])
            if np.degrees(np.arccos(np.clip(f @ hdir, -1.0, 1.0))) < spec.handle_clear:
                continue
            xy = centre[:2] + rim * f[:2]
            _, top = _height_at(scene, obj, xy, radius=0.005)
            top = float(hi[2]) if not np.isfinite(top) else top
            grip = np.array([xy[0], xy[1], max(top - spec.depth, float(lo[2]) + 0.012)])
            turn = float(np.arccos(min(1.0, abs(f @ cur_axis))))
            cands.append((min(_clearance(grip, f, obstacles), 0.03), -(turn + 0.5 * float(f[0])), grip, f))
    _, _, grip, f = max(cands, key=lambda c: (round(c[0], 3), c[1]))
    return grip, f


def _path_top(
    scene: E.Scene, obj: str, exclude: set[str], a: np.ndarray, b: np.ndarray, reach: float
) -> float:
    """Highest top of the obstacle geoms within `reach` of the segment a-b (horizontally); -inf if none."""
    top = -np.inf
    ab = b[:2] - a[:2]
    n = max(2, int(np.linalg.norm(ab) / 0.01) + 1)
    pts = [a[:2] + t * ab for t in np.linspace(0.0, 1.0, n)]
    for lo, hi in _geom_boxes(scene, scene.obstacle_names(exclude | {obj})):
        if hi[2] > top and min(E._dist_to_box2d(p, lo, hi) for p in pts) < reach:
            top = max(top, float(hi[2]))
    return top


def _free_spot(
    scene: E.Scene, obj: str, exclude: set[str], centre: np.ndarray, half: np.ndarray
) -> np.ndarray:
    """Where in a table region to put the object's origin: the most room to its neighbours.

    `On <table region>` only asks for the body origin inside the region (+-5 cm), but a region named
    after a neighbour ("front of the white mug") can overlap that neighbour's footprint.
    """
    lo, hi = scene.aabb(obj)
    foot_off = ((lo + hi) / 2.0 - scene.body_pos(obj))[:2]  # footprint centre relative to the origin
    foot_half = (hi - lo)[:2] / 2.0
    others = [scene.aabb(n) for n in scene.obstacle_names(exclude | {obj})]
    margin = 0.015
    best = (-np.inf, 0.0, centre[:2])
    for dx in np.linspace(-half[0] + margin, half[0] - margin, 7):
        for dy in np.linspace(-half[1] + margin, half[1] - margin, 7):
            xy = centre[:2] + np.array([dx, dy])
            f_lo, f_hi = xy + foot_off - foot_half, xy + foot_off + foot_half
            gaps = [
                float(np.max(np.maximum(olo[:2] - f_hi, f_lo - ohi[:2]))) for olo, ohi in others
            ]  # > 0: footprints apart by that much along some axis
            room = min(min(gaps, default=1.0), 0.03)
            score = (round(room, 3), -float(np.hypot(dx, dy)))
            if score > best[:2]:
                best = (*score, xy)
    return np.asarray(best[2])


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
    from libero_dp.expert.books import Slot  # books imports nothing from here; keep the dependency local

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


def _pitched_rot(finger: np.ndarray, approach: np.ndarray) -> np.ndarray:
    """Grip-site orientation with fingers along `finger` and the approach (grip z) along `approach`."""
    from libero_dp.expert.books import _pitched_rot as pitched

    return pitched(finger, approach)


def _Pose(*args, **kwargs) -> E.Skill:  # noqa: N802 - a skill constructor
    """A MovePose kept at the plain cap (free_cap 0: `P.fast` leaves it alone) inside a fast plan."""
    return E.MovePose(*args, free_cap=0.0, **kwargs)


def slot_spot(
    scene: E.Scene, obj: str, exclude: set[str], centre: np.ndarray, half: np.ndarray, slot: tuple[int, int]
) -> np.ndarray:
    """Where one of n objects bound for one region goes: of n spots along either diagonal of the region
    (SLOT_MARGIN inside its edges), the one farthest from the objects already in the region, or, while it
    is empty, from this object's start (so later ones are not carried over it).

    Two moka pots both at a 15 cm burner region's centre collide. In a row along the region's y axis (the
    former rule: the axis toward the pot's start) they still did: a pot is 8 cm wide but 15 cm long (handle
    and spout), so at spots 12 cm apart the second landed on the first or knocked it off the stove (14 of
    50 inits). Side by side along x (4 cm apart) the hand housing, 21 cm along the finger axis (across the
    pot), would come down within millimetres of the first pot's top. At opposite corners the pots are
    apart along both axes (50 of 50). Later spots follow what already lies in the region, so they do not
    depend on where each object starts."""
    n = slot[1]
    if n < 2:
        return np.array(centre[:2], dtype=np.float64)
    reach = np.maximum(half[:2] - SLOT_MARGIN, 0.0)
    spots = [
        centre[:2] + t * reach * np.array([1.0, sign]) for sign in (1.0, -1.0) for t in np.linspace(-1, 1, n)
    ]
    there = [
        p[:2]
        for name in scene.obstacle_names(exclude | {obj})
        if np.all(np.abs((p := scene.body_pos(name))[:2] - centre[:2]) < half[:2])
    ]
    start = scene.body_pos(obj)[:2]

    def room(xy: np.ndarray) -> float:
        return min((float(np.linalg.norm(xy - q)) for q in there), default=float(np.linalg.norm(xy - start)))

    return np.asarray(max(spots, key=room), dtype=np.float64)


SLOT_MARGIN = 0.02  # a shared region's outermost spots this far inside its edges


FLAT_DISH = 0.03  # m: a rim-gripped object lower than this is a flat dish (a plate), see plan_pick_place


def plan_pick_place(
    scene: E.Scene,
    obj: str,
    target: str,
    spec: E.GraspSpec,
    slot: tuple[int, int] = (0, 1),
    inside: bool = True,
) -> list[E.Skill]:
    """Hover, descend, close, lift, carry over the target, lower, open, retreat.

    Changes from the core version (why):
    * a site without a parent object (a table region such as `..._plate_left_region`) has no AABB to
      read: the support is the table the object stands on (its initial bottom);
    * an object target is aimed at by its body origin, which is what `On` measures (< 3 cm);
    * the carry height also clears whatever stands along the straight path (a tall mug next to the
      plate was swept by a mug carried 5 cm above the plate).
    """
    inner = scene.inner
    is_site = target in inner.object_sites_dict and target not in inner.obj_body_id
    parent = inner.object_sites_dict[target].parent_name if is_site else None
    exclude = {target} if not is_site else ({parent} if parent else set())
    if (
        parent
        and isinstance(spec, ObjGraspSpec)
        and spec.mode == "handle"
        and _closed_top(scene, target, parent)
    ):
        return plan_handle_into_slot(scene, obj, target, spec)
    if isinstance(spec, ObjGraspSpec) and spec.lay_on_slope:
        board = _sloped_board(scene, target, parent) if parent else None
        if board is not None:
            return plan_lay_on_slope(scene, obj, target, spec, board)
        if is_site and parent or not is_site:  # anything else: the plain planner, as for unlisted objects
            return P.fast(P.plan_pick_place(scene, obj, target, spec, inside=inside))
    grip, finger = choose_grasp(scene, obj, spec, exclude)
    hover = grip + np.array([0.0, 0.0, 0.07])
    olo, ohi = scene.aabb(obj)
    below_grip = float(grip[2] - olo[2])  # object extent below the grip point

    if is_site:
        s_pos, s_mat, s_size = scene.site(target)
        half = np.abs(s_mat @ s_size)
        place_xy = s_pos[:2]
        if parent:
            support_top = float(s_pos[2] - half[2])
            top_z = float(scene.aabb(parent)[1][2])
            if slot[1] > 1:  # several objects go to this region: each to its own spot
                place_xy = slot_spot(scene, obj, exclude, s_pos, half, slot)
        else:  # a table region: the object already stands on that table
            support_top = top_z = float(olo[2])
            place_xy = _free_spot(scene, obj, exclude, s_pos, half)
    else:
        tlo, thi = scene.aabb(target)
        place_xy = scene.body_pos(target)[:2]
        support_top = float(thi[2])
        top_z = float(thi[2])
    obj_pos = scene.body_pos(obj)
    reach = 0.5 * float(np.max(ohi[:2] - olo[:2])) + 0.02
    path_top = _path_top(scene, obj, exclude | {target}, obj_pos, np.array([*place_xy, 0.0]), reach)
    carry_obj_bottom = max(top_z + 0.05, path_top + 0.03)

    flags: dict[str, np.ndarray] = {}
    # a flat dish (a plate) pinched at its rim hangs tilted and swings in the hand: its pose while carried
    # says little about where it lands. Lowered until the hand is back at its grip height over the table,
    # the plate lies flat again in the pose it was gripped in, so the offset is read before the lift.
    # (Read after it, the plate swung 2 cm and landed outside a region; lowered by its tilted low edge,
    # it was let go 6 cm up and bounced out.)
    dish = not isinstance(spec, ObjGraspSpec) and spec.mode == "rim" and float(ohi[2] - olo[2]) < FLAT_DISH

    def axis_fn(s: E.Scene) -> np.ndarray:
        return finger

    def lift_target(s: E.Scene) -> np.ndarray:
        if dish:
            offset(s)
        p = s.eef_pos
        return np.array([p[0], p[1], max(grip[2] + 0.06, carry_obj_bottom + below_grip - 0.03)])

    def offset(s: E.Scene) -> np.ndarray:
        if "off" not in flags:
            flags["off"] = s.body_pos(obj) - s.eef_pos
        return flags["off"]

    def carry_target(s: E.Scene) -> np.ndarray:
        lo, _ = s.aabb(obj)
        bottom_below_hand = s.eef_pos[2] - lo[2]
        hand_xy = place_xy - offset(s)[:2]
        return np.array([hand_xy[0], hand_xy[1], carry_obj_bottom + bottom_below_hand])

    def place_target(s: E.Scene) -> np.ndarray:
        lo, _ = s.aabb(obj)
        bottom_below_hand = below_grip if dish else s.eef_pos[2] - lo[2]
        hand_xy = place_xy - offset(s)[:2]
        return np.array([hand_xy[0], hand_xy[1], support_top + spec.release_height + bottom_below_hand])

    def retreat_target(s: E.Scene) -> np.ndarray:
        return s.eef_pos + np.array([0.0, 0.0, 0.10])

    # free-space phases fast (P.fast): three goals at the plain cap (two moka pots and a knob) ran past
    # the 600-step budget
    return P.fast(
        [
            *P.transit(scene, obj, hover, axis_fn),
            E.MoveTo("approach", lambda s: hover, axis_fn, gripper=-1.0, tol=0.006),
            E.MoveTo("descend", lambda s: grip, axis_fn, gripper=-1.0, tol=0.004, stop_on_stall=True),
            E.Gripper("grasp_close", close=True),
            E.MoveTo("lift", lift_target, axis_fn, gripper=1.0, tol=0.01),
            E.MoveTo("carry", carry_target, axis_fn, gripper=1.0, tol=0.008),
            E.MoveTo("lower", place_target, axis_fn, gripper=1.0, tol=0.005, stop_on_stall=True),
            E.Gripper("release", close=False, min_steps=8),
            E.MoveTo("retreat", retreat_target, axis_fn, gripper=-1.0, tol=0.01, max_steps=40),
        ]
    )


_MUG = ObjGraspSpec(mode="rim_local", handle_axis=(1.0, 0.0, 0.0), depth=0.025, handle_clear=60.0)

#: Per-category grasp data (bddl category -> spec).
OBJECT_SPECS: dict[str, E.GraspSpec] = {
    # 50 g pan, handle (a tilted 2.6 x 1.2 cm bar, 0.13-0.25 m out) along local +x; a rim grip let it tilt
    # wine bottle: like an unlisted object, except onto a sloped rack board (laid down, see plan_lay_on_slope)
    "wine_bottle": ObjGraspSpec(lay_on_slope=True),
    "chefmate_8_frypan": ObjGraspSpec(
        mode="handle", handle_axis=(1.0, 0.0, 0.0), handle_dist=0.19, handle_range=(0.13, 0.24), depth=0.006
    ),
    # octagonal body 6.5-8 cm across, handle along local +y, spout along -y: close across local x
    "moka_pot": ObjGraspSpec(depth=0.025, yaw="short_side", body_centre=True),
    # mugs: 9-10.5 cm across (wider than the open gripper), so grip the wall away from the handle;
    # handle along local +x (red, white-yellow) or -x (porcelain)
    "red_coffee_mug": _MUG,
    "porcelain_mug": replace(_MUG, handle_axis=(-1.0, 0.0, 0.0)),
    "white_yellow_mug": _MUG,
}
