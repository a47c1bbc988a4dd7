"""Books into the desk caddy and the two-layer shelf (libero_90 73-83, 86, 88).

Facts this module relies on (measured, STUDY_SCENE1-4):

* Books (`black_book` 2.9 x 11.0 x 13.4 cm, `yellow_book` 2.4 x 9.8 x 12.2 cm) start standing upright, one box
  geom each; the body origin is ~2 mm below the bottom face. `(In book site)` only tests the body origin, so a
  book counts as in a compartment once its bottom edge is inside the site box.
* The caddy's front/back compartments are 5.7-6 cm wide in x: the book goes in upright with its thin axis
  across the compartment (the hand re-yaws the held book during the carry); in the 12.6 x 12.9 cm side
  compartments an 11 cm book goes in diagonally. The back compartment's site starts 1.3 mm above the floor
  plate: a book standing on the floor is *not* in it, so there the book is lowered only until it is in.
* The two-layer shelf is closed on top: a book goes in horizontally from its open side (`book_slots`).

The caddy plan and the dispatch are here; what both plans share (the book's frame and grasp) in `book_frame`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert.book_frame import BookFrame, HoldUntil, _book_grasp, _region_check
from libero_dp.expert.book_slots import plan_book_into_slot

BOOK_CATEGORIES = ("black_book", "yellow_book")
BOOK_SPEC = E.GraspSpec(mode="book", depth=0.025, yaw="short_side", release_height=0.004)
#: Per-category grasp data (bddl category -> spec).
BOOK_SPECS: dict[str, E.GraspSpec] = dict.fromkeys(BOOK_CATEGORIES, BOOK_SPEC)

#: the object's body origin is placed this far inside the region's (extended) lower z bound at least
ORIGIN_MARGIN = 0.012
#: carried object's bottom clears the target's top by this much
CARRY_CLEAR = 0.03


# ----------------------------------------------------------------------------------------------------------
# Caddy compartments
# ----------------------------------------------------------------------------------------------------------


def compartment(scene: E.Scene, site: str, parent: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free interior of a container region: (centre xy, unit axes (2, 3), half-widths (2,)).

    Walks from the site centre along the site's horizontal axes to the nearest wall of the parent (geom
    AABBs over the upper half of the site's height, so the floor plate does not count). The caddy's sites
    are up to 6 mm off the wall-to-wall centre, which matters for an 11 cm book in a 12.6 cm compartment.
    """
    c, rot, half = scene.site(site)
    z_lo, z_hi = float(c[2]), float(c[2] + np.abs(rot[2]) @ half)
    vert = int(np.argmax(np.abs(rot[2, :])))
    axes = np.array([E._horizontal(rot[:, k]) for k in range(3) if k != vert])
    half = np.array([half[k] for k in range(3) if k != vert] + [half[vert]])
    boxes = [scene.geoms_aabb([g]) for g in scene.subtree_geoms(scene.body_id(parent))]
    boxes = [(lo, hi) for lo, hi in boxes if hi[2] > z_lo and lo[2] < z_hi]
    lo_hi = np.zeros((2, 2))
    for k in range(2):
        a, other = axes[k], axes[1 - k]
        for j, sign in enumerate((-1.0, 1.0)):
            best = float(half[k]) + 0.05  # no wall found: site edge + 5 cm
            for lo, hi in boxes:
                corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]) - c[:2]
                along, across = corners @ (sign * a[:2]), corners @ other[:2]
                if across.min() < 0.0 < across.max() and along.max() > 0.0:
                    best = min(best, max(float(along.min()), 0.0))
            lo_hi[k, j] = best
    centre = c[:2] + sum(axes[k, :2] * (lo_hi[k, 1] - lo_hi[k, 0]) / 2.0 for k in range(2))
    return centre, axes, lo_hi.sum(axis=1) / 2.0


def place_yaw(axes: np.ndarray, half: np.ndarray, bf: BookFrame, current: np.ndarray) -> np.ndarray:
    """Finger axis (= book thin axis) for lowering an upright book into a compartment.

    Thin axis across the narrow side when the book's width fits along the long side; diagonal when the
    book only just fits either way (11 cm book, 12.6 x 12.9 cm compartment); else the axis nearest `current`.
    """
    wide = 2.0 * bf.half[1]
    narrow = int(np.argmin(half))
    if 2.0 * half[narrow] < wide:  # only fits with its thin axis across the narrow side
        return axes[narrow]
    if 2.0 * half[narrow] >= wide + 0.03:  # roomy: least rotation
        return max(list(axes), key=lambda a: abs(float(a @ current)))
    diag = [E._horizontal(axes[0] + axes[1]), E._horizontal(axes[0] - axes[1])]
    return max(diag, key=lambda a: abs(float(a @ current)))


# ----------------------------------------------------------------------------------------------------------
# Plans (into a caddy compartment, or stood on a surface)
# ----------------------------------------------------------------------------------------------------------


def plan_book_into(scene: E.Scene, obj: str, site: str, spec: E.GraspSpec) -> list[E.Skill]:
    """Book into a container region reachable from above (caddy compartments).

    Grasp the upright book across its thickness at its top, lift it clear of the container, re-yaw so the
    thin axis lies across the compartment's narrow side, carry over the compartment centre, lower until the
    book's origin is inside the region (resting on the floor when the region reaches the floor), release.
    """
    inner = scene.inner
    grip, finger, bf = _book_grasp(scene, obj, spec)
    parent = inner.object_sites_dict[site].parent_name
    s_pos, s_mat, s_half = scene.site(site)
    half_w = np.abs(s_mat) @ s_half
    _, parent_hi = scene.aabb(parent)
    centre_xy, axes, inner_half = compartment(scene, site, parent)
    place_axis = place_yaw(axes, inner_half, bf, finger)
    origin_below_bottom = bf.bottom_z - float(bf.origin[2])  # ~2 mm
    grip_above_bottom = float(grip[2]) - bf.bottom_z
    # lowest useful book-bottom height: origin just inside the region's (extended) lower bound
    min_bottom = float(s_pos[2] - half_w[2]) - 0.01 + ORIGIN_MARGIN + origin_below_bottom
    carry_bottom = float(parent_hi[2]) + CARRY_CLEAR

    def down(axis: np.ndarray) -> Callable[[E.Scene], np.ndarray]:
        return lambda s: E._nearest_finger_rot(axis, s.eef_mat)

    def lift_target(s: E.Scene) -> np.ndarray:
        p = s.eef_pos
        return np.array([p[0], p[1], carry_bottom + grip_above_bottom])

    def carry_target(s: E.Scene) -> np.ndarray:
        return np.array([centre_xy[0], centre_xy[1], carry_bottom + grip_above_bottom])

    def lower_target(s: E.Scene) -> np.ndarray:
        # the book was grasped over its box centre; a book swinging about the finger axis after the carry
        # would give a wrong offset, so place the hand itself over the region centre
        return np.array([centre_xy[0], centre_xy[1], min_bottom + grip_above_bottom])

    def retreat_target(s: E.Scene) -> np.ndarray:
        return s.eef_pos + np.array([0.0, 0.0, 0.10])

    return [
        E.MoveTo("approach", lambda s: grip + np.array([0.0, 0.0, 0.06]), lambda s: finger, -1.0, tol=0.008),
        E.MoveTo("descend", lambda s: grip, lambda s: finger, -1.0, tol=0.004, stop_on_stall=True),
        E.Gripper("grasp_close", close=True),
        E.MoveTo("lift", lift_target, lambda s: finger, 1.0, tol=0.02, rot_tol=0.2),
        E.MovePose("carry", carry_target, down(place_axis), 1.0, tol=0.015, rot_tol=0.06),
        HoldUntil(lambda s: False, max_steps=4, name="settle"),
        E.MovePose("lower", lower_target, down(place_axis), 1.0, tol=0.004, stop_on_stall=True, cap=0.5),
        HoldUntil(lambda s: _region_check(s, obj, site), max_steps=6),
        E.Gripper("release", close=False, min_steps=6),
        E.MoveTo("retreat", retreat_target, lambda s: s.eef_mat[:, 0], -1.0, tol=0.01, max_steps=40),
    ]


# ----------------------------------------------------------------------------------------------------------
# Dispatch: books use these plans, everything else the previous plan_pick_place
# ----------------------------------------------------------------------------------------------------------


def is_book(spec: E.GraspSpec) -> bool:
    return spec.mode == "book"


def plan_book(scene: E.Scene, obj: str, target: str, spec: E.GraspSpec) -> list[E.Skill] | None:
    """Books into caddy compartments or shelf slots; None when the target is neither (a plain place)."""
    inner = scene.inner
    is_site = target in inner.object_sites_dict and target not in inner.obj_body_id
    if is_site and "contain_region" in target:
        return plan_book_into(scene, obj, target, spec)
    if is_site and target.endswith("_region"):
        return plan_book_into_slot(scene, obj, target, spec)
    if is_site and inner.object_sites_dict[target].parent_name:  # a surface (the shelf's top side):
        return plan_book_into(scene, obj, target, spec)  # stood upright on it, like into an open box
    return None
