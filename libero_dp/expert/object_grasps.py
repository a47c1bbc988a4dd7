"""Grasp data and grasp modes for objects the core GRASP_SPECS did not cover (pans, moka pots, mugs).

Adds `ObjGraspSpec` (a GraspSpec with handle geometry in the object's own frame), the per-category
`OBJECT_SPECS`, and a `choose_grasp` that understands two more modes (everything else falls through to
`grasp_choice.choose_grasp`):

* "handle": close the fingers across a handle that sticks out along a known local axis (frying pan).
  Grip points along the handle (`handle_range`, preferring `handle_dist`) at the handle's mid-thickness
  there (read from the tilted box geoms), fingers across it (+-20 deg), scored by clearance of the real
  hand and finger extents to neighbouring geoms (a moka pot stands right beside the pan's handle).
* "rim_local": fingers across the wall of a round body too wide for the open gripper (mugs are 9-10.5 cm
  across), at a centre found from the geometry (a mug's origin and AABB are both off its cup), skipping
  yaws near the handle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import grasp_choice


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
        return grasp_choice.choose_grasp(scene, obj, spec, exclude)
    origin = scene.body_pos(obj)
    if spec.mode not in ("handle", "rim_local"):
        grip, f = grasp_choice.choose_grasp(scene, obj, spec, exclude)
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


_MUG = ObjGraspSpec(mode="rim_local", handle_axis=(1.0, 0.0, 0.0), depth=0.025, handle_clear=60.0)

#: Per-category grasp data (bddl category -> spec).
OBJECT_SPECS: dict[str, E.GraspSpec] = {
    # 50 g pan, handle (a tilted 2.6 x 1.2 cm bar, 0.13-0.25 m out) along local +x; a rim grip let it tilt
    # wine bottle: like an unlisted object, except onto a sloped rack board (laid down, see shelves)
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
