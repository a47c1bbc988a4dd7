"""Books into a shelf layer closed on top (libero_90 86, 88, 89), entered from its open side.

The two-layer shelf is closed on top (plate at z 1.093) and open toward -y; its top region is the 13.5 cm gap
between the middle and the top plate. A book goes in horizontally: the hand turns to point into the slot with
its fingers vertical (the held book lies flat ahead of it) and pushes it in from the open side. `Slot` (the
layer's geometry) and `_pitched_rot` serve the other horizontal insertions too (shelves, cavity).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert.book_frame import BookFrame, HoldUntil, _book_grasp, _region_check


class Slot:
    """A region inside a closed-top fixture (shelf layer), entered horizontally from its open side.

    d: unit horizontal direction pointing into the slot; front: coordinate along d of the fixture's open
    face; floor_z / ceil_z: the support under and the plate over the site centre; centre: site centre.
    """

    def __init__(self, scene: E.Scene, site: str, parent: str) -> None:
        c, rot, half = scene.site(site)
        vert = int(np.argmax(np.abs(rot[2, :])))
        axes = [E._horizontal(rot[:, k]) for k in range(3) if k != vert]
        hz = float(np.abs(rot[2]) @ half)
        boxes = [scene.geoms_aabb([g]) for g in scene.subtree_geoms(scene.body_id(parent))]
        over = [(lo, hi) for lo, hi in boxes if lo[0] < c[0] < hi[0] and lo[1] < c[1] < hi[1]]
        self.floor_z = max([float(hi[2]) for lo, hi in over if hi[2] <= c[2]], default=float(c[2] - hz))
        self.ceil_z = min([float(lo[2]) for lo, hi in over if lo[2] >= c[2]], default=float(c[2] + hz))
        band = [(lo, hi) for lo, hi in boxes if hi[2] > self.floor_z + 0.01 and lo[2] < self.ceil_z - 0.01]
        best: tuple[float, np.ndarray] | None = None
        for a in axes:
            for sign in (-1.0, 1.0):
                out = sign * a  # candidate opening direction (pointing out of the slot)
                other = np.array([-out[1], out[0], 0.0])
                walls = 0.0
                for lo, hi in band:
                    corners = np.array([[x, y, 0.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]) - c
                    along, across = corners @ out, corners @ other
                    if along.max() > 0.0 and across.min() < 0.0 < across.max():
                        walls = max(walls, float(np.ptp(across)))
                if best is None or walls < best[0] or (walls == best[0] and out[1] < best[1][1]):
                    best = (walls, out)
        assert best is not None
        self.d = -best[1]
        corners = np.array([[x, y, 0.0] for lo, hi in boxes for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
        self.front = float(np.min(corners @ self.d))
        self.centre = c
        self.name = site
        self.site_near = float(c @ self.d - abs(float(np.abs(rot) @ half @ np.abs(self.d))))


def _pitched_rot(finger: np.ndarray, approach: np.ndarray) -> np.ndarray:
    """Grip-site orientation with fingers along `finger` and the approach (grip z) along `approach`."""
    x = finger / np.linalg.norm(finger)
    z = approach / np.linalg.norm(approach)
    return np.column_stack([x, np.cross(z, x), z])


#: Panda hand collision extents around the grip site: half-length along the finger axis, half-width
#: across it, and how far it reaches behind the grip site along the approach axis
HAND_HALF_LEN, HAND_HALF_WIDTH, HAND_BACK = 0.107, 0.031, 0.135
#: the wrist (link6) behind the hand: reach behind the grip site, half-width sideways, drop below the grip
WRIST_BACK, WRIST_HALF_WIDTH, WRIST_DROP = 0.30, 0.14, 0.075


#: how far the open hand drops after releasing a book in a slot, to free it from the lower finger
DROP_OFF = 0.015


def _insert_lateral(
    scene: E.Scene, slot: Slot, obj: str, parent: str, bf: BookFrame, hand_low: float, hand_y_range: tuple
) -> float:
    """Lateral coordinate (along the slot's width) for the insertion that keeps the hand and the book
    clear of objects standing in front of the opening (e.g. the other books in STUDY_SCENE4)."""
    d = slot.d
    lat = np.array([-d[1], d[0], 0.0])
    site_c = slot.centre
    _, s_rot, s_half = scene.site(slot.name)
    half_lat = float(np.abs(s_rot) @ s_half @ np.abs(lat))
    room = max(half_lat - bf.half[1] - 0.01, 0.0)
    obstacles = [scene.aabb(n) for n in scene.obstacle_names({obj, parent})]
    hand_z = hand_low + HAND_HALF_LEN
    # (lateral half-width, reach behind the grip, lowest z) of the hand, the wrist and the held book
    parts = [
        (HAND_HALF_WIDTH, HAND_BACK, hand_low),
        (WRIST_HALF_WIDTH, WRIST_BACK, hand_z - WRIST_DROP),
    ]
    best: tuple[float, float, float] | None = None
    for off in np.linspace(-room, room, 25):
        x0 = float(site_c @ lat) + off
        clear = 1.0
        for lo, hi in obstacles:
            corners = np.array([[x, y, 0.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
            ol, od = corners @ lat, corners @ d
            for half_w, back, low in parts:
                if hi[2] < low - 0.01:
                    continue
                gap_lat = max(ol.min() - (x0 + half_w), (x0 - half_w) - ol.max())
                gap_d = max(od.min() - hand_y_range[1], hand_y_range[0] - back - od.max())
                clear = min(clear, max(gap_lat, gap_d))
            if hi[2] > hand_z - bf.half[0] - 0.01:  # the book sweeps x0 +/- its half width ahead of the hand
                gap_lat = max(ol.min() - (x0 + bf.half[1]), (x0 - bf.half[1]) - ol.max())
                gap_d = max(od.min() - slot.front, hand_y_range[0] - od.max())
                clear = min(clear, max(gap_lat, gap_d))
        key = (round(min(clear, 0.03), 3), -abs(off), x0)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    return best[2]


def plan_book_into_slot(scene: E.Scene, obj: str, site: str, spec: E.GraspSpec) -> list[E.Skill]:
    """Book into a shelf layer closed on top: grasp upright, lift, turn the hand so that it points into the
    slot with the fingers vertical (the book then lies flat, sticking out ahead of the hand), carry in front
    of the opening, descend to the slot height, push in until the book's far end (its body origin) is well
    inside the region, release, back out.

    Fingers vertical keeps the hand narrow sideways (6 cm) so it passes beside books standing in front of
    the shelf; the hand's 21 cm length is then vertical, which sets a minimum hand height above the table.
    """
    inner = scene.inner
    grip, finger, bf = _book_grasp(scene, obj, spec)
    parent = inner.object_sites_dict[site].parent_name
    slot = Slot(scene, site, parent)
    d = slot.d
    up = np.array([0.0, 0.0, 1.0])
    length = float(grip[2]) - float(bf.origin[2])  # grip to the book's far end (body origin)
    table_z = float(bf.bottom_z)
    thick = float(bf.half[0])
    hand_z = max(slot.floor_z + thick + 0.01, table_z + HAND_HALF_LEN + 0.012)
    too_low = hand_z > slot.ceil_z - thick - 0.01  # the hand cannot hold the book inside the gap
    hand_z = hand_z if too_low else min(hand_z, slot.ceil_z - thick - 0.01)
    # push until the grip site is just outside the opening: the book's centre of mass (half its length
    # from the far end) must be over the plate or the released book tips out
    origin_goal = slot.front - 0.015 + length
    others = [scene.aabb(n) for n in scene.obstacle_names({obj, parent})]
    tallest = max([float(hi[2]) for lo, hi in others], default=float(bf.bottom_z))
    carry_z = max(tallest + 0.03 + length, hand_z + 0.02)
    pre_along = slot.front - length - 0.02
    final_along = origin_goal - length
    lat_x = _insert_lateral(
        scene, slot, obj, parent, bf, hand_z - HAND_HALF_LEN, (pre_along, final_along + 0.01)
    )
    lat = np.array([-d[1], d[0], 0.0])

    def rot_in(s: E.Scene) -> np.ndarray:
        cands = (_pitched_rot(up, d), _pitched_rot(-up, d))
        return min(cands, key=lambda r: np.linalg.norm(E.rot_to_axis_angle(r @ s.eef_mat.T)))

    def hand_at(along: float, z: float) -> np.ndarray:
        p = lat_x * lat + along * d
        return np.array([p[0], p[1], z])

    def lift_target(s: E.Scene) -> np.ndarray:
        p = s.eef_pos
        return np.array([p[0], p[1], carry_z])

    def turn_target(s: E.Scene) -> np.ndarray:
        # turn away from the opening: the book's far end swings ahead of the hand toward the slot
        p = s.eef_pos
        along = min(float(p @ d), pre_along - 0.03)
        q = p + (along - float(p @ d)) * d
        return np.array([q[0], q[1], carry_z])

    def insert_target(s: E.Scene) -> np.ndarray:
        reach = float((s.body_pos(obj) - s.eef_pos) @ d)  # grip to far end, measured after the turn
        return hand_at(origin_goal - reach, hand_z)

    if too_low:
        return _drop_and_push(scene, obj, site, slot, grip, finger, lat_x, hand_z, carry_z, length, rot_in)

    def drop_off(s: E.Scene) -> np.ndarray:
        # the released book's near end still rests on the lower (open) finger, and backing out would drag
        # it out of the slot: first lower the hand until that finger is below the plate, as far as the
        # hand's vertical length above the table allows
        room = float(s.eef_pos[2]) - HAND_HALF_LEN - table_z
        return s.eef_pos - np.array([0.0, 0.0, float(np.clip(room, 0.0, DROP_OFF))])

    return [
        E.MoveTo("approach", lambda s: grip + np.array([0.0, 0.0, 0.06]), lambda s: finger, -1.0, tol=0.008),
        E.MoveTo("descend", lambda s: grip, lambda s: finger, -1.0, tol=0.004, stop_on_stall=True),
        E.Gripper("grasp_close", close=True),
        E.MoveTo("lift", lift_target, lambda s: finger, 1.0, tol=0.02, rot_tol=0.2),
        E.MovePose("turn", turn_target, rot_in, 1.0, tol=0.02, rot_tol=0.08, rot_cap=0.4),
        E.MovePose("carry", lambda s: hand_at(pre_along, carry_z), rot_in, 1.0, tol=0.015, rot_tol=0.06),
        E.MovePose("lower", lambda s: hand_at(pre_along, hand_z), rot_in, 1.0, tol=0.008, rot_tol=0.05),
        E.MovePose("insert", insert_target, rot_in, 1.0, tol=0.006, rot_tol=0.06, stop_on_stall=True),
        HoldUntil(lambda s: _region_check(s, obj, site), max_steps=6),
        E.Gripper("release", close=False, min_steps=6),
        E.MovePose(
            "drop_off", drop_off, lambda s: s.eef_mat, -1.0, tol=0.003, stop_on_stall=True, max_steps=20
        ),
        E.MovePose(
            "back_out", lambda s: s.eef_pos - 0.08 * d, lambda s: s.eef_mat, -1.0, tol=0.01, max_steps=40
        ),
    ]


#: pushing a flat book under a low shelf layer: fingertip height above the table, origin depth in the region
PUSH_TIP_Z, PUSH_DEPTH = 0.008, 0.035
#: hand pitch (far end down) when laying the book on the table in front of a low layer
DROP_PITCH = np.deg2rad(55.0)


def _drop_and_push(
    scene: E.Scene,
    obj: str,
    site: str,
    slot: Slot,
    grip: np.ndarray,
    finger: np.ndarray,
    lat_x: float,
    hand_z: float,
    carry_z: float,
    length: float,
    rot_in: Callable[[E.Scene], np.ndarray],
) -> list[E.Skill]:
    """Book under a layer too low for the hand (STUDY_SCENE4 bottom, 6.9 cm): lay the book flat on the
    table just in front of the opening, its far end (body origin) first, by releasing it from the lowest
    hand height with the hand pointing into the slot; then push its near edge with the closed fingertips
    of a downward hand until the origin is inside the region (the hand stays outside the opening).
    """
    d = slot.d
    lat = np.array([-d[1], d[0], 0.0])
    table_z = float(BookFrame(scene, obj).bottom_z)
    c, s_rot, s_half = scene.site(site)
    near = float(c @ d) - float(np.abs(s_rot) @ s_half @ np.abs(d))
    origin_drop = slot.front - 0.01  # far end just short of the opening when released

    def hand_at(along: float, z: float) -> np.ndarray:
        p = lat_x * lat + along * d
        return np.array([p[0], p[1], z])

    # pitch the hand so the book's far end points down to the table: released there, the book pivots on
    # that end and lies down flat, origin first (a flat book dropped 11 cm landed upright on that end)
    k = np.cross(d, -np.array([0.0, 0.0, 1.0]))
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    pitch = np.eye(3) + np.sin(DROP_PITCH) * kx + (1.0 - np.cos(DROP_PITCH)) * kx @ kx

    def rot_down(s: E.Scene) -> np.ndarray:
        return pitch @ rot_in(s)

    def drop_target(s: E.Scene) -> np.ndarray:
        reach = float((s.body_pos(obj) - s.eef_pos) @ d)
        z = table_z + HAND_HALF_LEN * np.cos(DROP_PITCH) + 0.015
        return hand_at(origin_drop - reach * np.cos(DROP_PITCH), z)

    def behind(s: E.Scene, z: float) -> np.ndarray:
        """Hand over the flat book's near edge (read when the phase starts), 2.5 cm behind it."""
        bf = BookFrame(s, obj)
        corners = [
            bf.centre + a * bf.half[0] * bf.thin + b * bf.half[1] * bf.wide + k * bf.half[2] * bf.tall
            for a in (-1, 1)
            for b in (-1, 1)
            for k in (-1, 1)
        ]
        tail = min(float(p @ d) for p in corners)
        centre_lat = float(bf.centre @ lat)
        p = centre_lat * lat + (tail - 0.025) * d
        return np.array([p[0], p[1], z])

    def push_target(s: E.Scene) -> np.ndarray:
        # move the hand as far as the origin has to go (plus a little: contact takes up some of it)
        need = near + PUSH_DEPTH - float(s.body_pos(obj) @ d)
        return s.eef_pos + (max(need, 0.0) + 0.025) * d

    tip_z = table_z + PUSH_TIP_Z + 0.015  # grip site ~1.5 cm above the fingertips

    return [
        E.MoveTo("approach", lambda s: grip + np.array([0.0, 0.0, 0.06]), lambda s: finger, -1.0, tol=0.008),
        E.MoveTo("descend", lambda s: grip, lambda s: finger, -1.0, tol=0.004, stop_on_stall=True),
        E.Gripper("grasp_close", close=True),
        E.MoveTo(
            "lift",
            lambda s: np.array([*s.eef_pos[:2], carry_z]),
            lambda s: finger,
            1.0,
            tol=0.02,
            rot_tol=0.2,
        ),
        E.MovePose(
            "turn",
            lambda s: np.array([*s.eef_pos[:2], carry_z]),
            rot_in,
            1.0,
            tol=0.02,
            rot_tol=0.08,
            rot_cap=0.4,
        ),
        E.MovePose("carry", lambda s: hand_at(origin_drop - length - 0.03, carry_z), rot_in, 1.0, tol=0.015),
        E.MovePose(
            "lower", drop_target, rot_down, 1.0, tol=0.008, rot_tol=0.05, stop_on_stall=True, rot_cap=0.4
        ),
        E.Gripper("release", close=False, min_steps=6),
        E.MovePose(
            "back_off",
            lambda s: s.eef_pos - 0.05 * d + np.array([0.0, 0.0, 0.05]),
            lambda s: s.eef_mat,
            -1.0,
            tol=0.01,
            max_steps=40,
        ),
        E.MoveTo("reorient", lambda s: behind(s, tip_z + 0.08), lambda s: lat, 1.0, tol=0.01),
        E.MoveTo(
            "descend_push", lambda s: behind(s, tip_z), lambda s: lat, 1.0, tol=0.005, stop_on_stall=True
        ),
        E.MoveTo("push", push_target, lambda s: lat, 1.0, tol=0.005, stop_on_stall=True, max_steps=120),
        E.MoveTo(
            "retreat",
            lambda s: s.eef_pos + np.array([0.0, 0.0, 0.08]) - 0.03 * d,
            lambda s: lat,
            1.0,
            tol=0.01,
            max_steps=40,
        ),
    ]
