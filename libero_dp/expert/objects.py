"""Pick-and-place of the objects with their own grasp data (pans, moka pots, mugs, wine bottles) and into
table regions: where in the target region the object goes, and the plan that takes it there.

`plan_pick_place` differs from `pick_place.plan_pick_place` to support table regions (sites without a
parent object), aim object targets by body origin, raise the carry height over whatever stands along the
path and give several objects bound for one region a spot each (`slot_spot`); shelf layers and sloped
rack boards go to `shelves`. Grasps come from `object_grasps`.
"""

from __future__ import annotations

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import pick_place as P
from libero_dp.expert.object_grasps import ObjGraspSpec, _geom_boxes, choose_grasp
from libero_dp.expert.shelves import _closed_top, _sloped_board, plan_handle_into_slot, plan_lay_on_slope


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
