"""A handled mug into a low cavity open on one side (a microwave), held sideways by its handle.

The microwave's cavity is 14.4 cm high and a mug 10.3 cm tall: a hand above the mug (a rim grasp from
above) needs ~13 cm over the rim, so a mug lowered from above ends on the microwave's roof. Here the hand
points horizontally into the opening, its fingers closed across the handle's outer bar from behind (the
handle pointing out of the opening): the cup goes in first, the hand body stays outside the opening
plane, the mug is set down on the cavity floor and the open fingers slide back off the handle.
"""

from __future__ import annotations

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import object_grasps as OG
from libero_dp.expert.book_slots import _pitched_rot

#: hand pitched PITCH below horizontal: its body's top face rises behind the grip site and passes the
#: roof's front edge ~2 cm behind it (measured on the 45-degree pose), plus a margin
PITCH, HAND_MARGIN = np.deg2rad(45.0), 0.012
#: handle pointing out of the opening within this angle (deg), else the usual plan
HANDLE_TOL = 35.0
STANDOFF = 0.10  # grip site behind the handle bar before moving in to grasp it
FLOOR_CLEAR = 0.015  # mug bottom above the cavity floor while carried in
ORIGIN_MARGIN = 0.012  # the mug's origin this far inside the region's near face at least
RISE_CLEAR = 0.08  # hand above the part's top after leaving the cavity
LINE_UP = 0.14  # the grip site this far short of its end before sliding in (the cup clear of the opening)


def _cavity(scene: E.Scene, site: str, parent: str) -> tuple[np.ndarray, float, float, float] | None:
    """(into-cavity direction, opening plane along it, floor z, ceiling z) of a site inside a box-shaped
    part with one open side, or None when the site has no roof over it or no open side."""
    c, rot, half = scene.site(site)
    ext = np.abs(rot) @ half
    mat = scene.body_mat(parent)
    boxes = [scene.geoms_aabb([g]) for g in scene.subtree_geoms(scene.body_id(parent))]
    over = [b for b in boxes if np.all(b[0][:2] <= c[:2]) and np.all(b[1][:2] >= c[:2])]
    roofs = [float(lo[2]) for lo, hi in over if lo[2] > c[2]]
    floors = [float(hi[2]) for lo, hi in over if hi[2] < c[2]]
    if not roofs or not floors:
        return None
    for k in (0, 1):
        for sgn in (1.0, -1.0):
            out = E._horizontal(sgn * mat[:, k])  # candidate outward direction of the open side
            reach = float(np.abs(out[:2]) @ ext[:2])
            # a wall on this side holds a point just past the site's face (within 4 cm of it)
            probes = [c + (reach + dl) * out for dl in np.linspace(0.0, 0.04, 9)]
            walled = any(np.all(lo <= p) and np.all(p <= hi) for p in probes for lo, hi in boxes)
            if not walled:
                d_in = -out
                # the opening plane: the front edge of what covers the site (roof, floor)
                front = [float(np.min([lo[:2] @ d_in[:2], hi[:2] @ d_in[:2]])) for lo, hi in over]
                return d_in, min(front), max(floors), min(roofs)
    return None


def _handle_bar(scene: E.Scene, obj: str, hdir: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(centre, bottom z, top z) of the handle's outer bar: the geoms reaching furthest along `hdir`."""
    geoms = scene.subtree_geoms(scene.body_id(obj))
    boxes = [scene.geoms_aabb([g]) for g in geoms]

    def reach(b: tuple[np.ndarray, np.ndarray]) -> float:
        return float(max(b[0][:2] @ hdir[:2], b[1][:2] @ hdir[:2]))

    far = max(reach(b) for b in boxes)
    bar = [b for b in boxes if reach(b) > far - 0.004]
    thick = min(reach(b) - float(min(b[0][:2] @ hdir[:2], b[1][:2] @ hdir[:2])) for b in bar)
    lo = np.min([b[0] for b in bar], axis=0)
    hi = np.max([b[1] for b in bar], axis=0)
    centre = (lo + hi) / 2.0
    centre[:2] += (far - 0.5 * thick - float(centre[:2] @ hdir[:2])) * hdir[:2]
    return centre, float(lo[2]), float(hi[2])


def applies(scene: E.Scene, obj: str, target: str, spec: E.GraspSpec) -> bool:
    """A handled mug into a region under a roof too low for a hand above it, handle toward the opening."""
    if not (isinstance(spec, OG.ObjGraspSpec) and spec.mode == "rim_local"):
        return False
    site = scene.inner.object_sites_dict.get(target)
    parent = getattr(site, "parent_name", None)
    if site is None or not parent or target in scene.inner.obj_body_id:
        return False
    cav = _cavity(scene, target, parent)
    if cav is None:
        return False
    d_in, _, floor, roof = cav
    lo, hi = scene.aabb(obj)
    if roof - floor > float(hi[2] - lo[2]) + OG.HAND_Z[1]:
        return False  # room for a hand above the object: the usual plan
    hdir = OG._handle_dir(scene, obj, spec)
    return float(hdir @ -d_in) > np.cos(np.deg2rad(HANDLE_TOL))


def plan(scene: E.Scene, obj: str, target: str, spec: E.GraspSpec) -> list[E.Skill]:
    """Grasp the handle from behind with the hand horizontal, lift to the cavity floor's height, line the
    cup up in front of the opening, slide it in (hand body outside the opening), set it down, release,
    slide back out, turn the hand back down above the part."""
    parent = scene.inner.object_sites_dict[target].parent_name
    cav = _cavity(scene, target, parent)
    assert cav is not None
    d_in, plane, floor, _ = cav
    assert isinstance(spec, OG.ObjGraspSpec)
    hdir = OG._handle_dir(scene, obj, spec)
    bar, bar_lo, bar_hi = _handle_bar(scene, obj, hdir)
    perp = np.array([hdir[1], -hdir[0], 0.0])
    # pitched down: the hand body rides above the other objects behind the mug and clears the table
    approach = np.cos(PITCH) * -E._horizontal(hdir) + np.sin(PITCH) * np.array([0.0, 0.0, -1.0])
    rots = [_pitched_rot(f, approach) for f in (perp, -perp)]
    rot = min(rots, key=lambda r: np.linalg.norm(E.rot_to_axis_angle(r @ scene.eef_mat.T)))
    grip = np.array([bar[0], bar[1], 0.5 * (bar_lo + bar_hi)])
    pre = grip - STANDOFF * approach
    origin = scene.body_pos(obj)
    olo, _ = scene.aabb(obj)
    lift = floor + FLOOR_CLEAR - float(olo[2])  # how far the mug rises
    # where the grip site ends: as deep as the hand body allows, the origin inside the region
    c, srot, shalf = scene.site(target)
    ext = np.abs(srot) @ shalf
    s_lo = float(c[:2] @ d_in[:2]) - float(np.abs(d_in[:2]) @ ext[:2])
    origin_from_grip = float((origin - grip)[:2] @ d_in[:2])
    grip_along = plane - HAND_MARGIN
    if grip_along + origin_from_grip < s_lo + ORIGIN_MARGIN:
        grip_along = s_lo + ORIGIN_MARGIN - origin_from_grip
    lat = np.array([-d_in[1], d_in[0], 0.0])
    cup_off = float((origin - grip)[:2] @ lat[:2])
    lat_goal = float(c[:2] @ lat[:2]) - cup_off
    end_xy = grip_along * d_in[:2] + lat_goal * lat[:2]
    end = np.array([end_xy[0], end_xy[1], grip[2] + lift])
    line_up = end - LINE_UP * d_in

    # up over the part before the next goal: a hand left low went through the open door on its way to it
    safe_z = float(scene.aabb(parent)[1][2]) + RISE_CLEAR

    def at(p: np.ndarray):  # noqa: ANN202 - a constant target
        return lambda s: p

    def held_rot(s: E.Scene) -> np.ndarray:
        return rot

    return [
        E.MovePose("approach", at(pre + np.array([0.0, 0.0, 0.10])), held_rot, -1.0, tol=0.01, free_cap=1.0),
        E.MovePose("descend", at(pre), held_rot, -1.0, tol=0.006),
        E.MovePose("reach_in", at(grip), held_rot, -1.0, tol=0.004, stop_on_stall=True),
        E.Gripper("grasp_close", close=True),
        E.MovePose("lift", lambda s: s.eef_pos + np.array([0.0, 0.0, lift]), held_rot, 1.0, tol=0.006),
        E.MovePose("carry", at(line_up), held_rot, 1.0, tol=0.006, free_cap=0.6),
        E.MovePose("insert", at(end), held_rot, 1.0, tol=0.005, stop_on_stall=True),
        E.MovePose(
            "lower",
            lambda s: s.eef_pos - np.array([0.0, 0.0, 0.03]),
            held_rot,
            1.0,
            tol=0.004,
            stop_on_stall=True,
        ),
        E.Gripper("release", close=False, min_steps=8),
        E.MovePose("withdraw", lambda s: s.eef_pos - 0.10 * d_in, held_rot, -1.0, tol=0.01, max_steps=60),
        E.MoveTo("turn_back", lambda s: np.array([*s.eef_pos[:2], safe_z]), lambda s: perp, -1.0, tol=0.015),
    ]
