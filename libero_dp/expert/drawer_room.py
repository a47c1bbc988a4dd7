"""Room in an open drawer: pull it further from inside when the object does not fit in its open part.

Scene 4's bottom drawer starts open with ~10 cm between its front panel and the upper drawers' handles,
which overhang its open part; the black bowl is 10.7 cm wide and nearly cylindrical. Lowered into the
region it landed on a handle and fell in, often tilted, and the tilted bowl jammed the close
(articulation_stuck). Hooking the handle from the front was slow and its tilted hand hit the bowl standing
in front of the drawer, so the closed fingers go down inside the drawer, just behind the front panel, and
pull it toward the robot until the bowl fits (or the slide's limit).
"""

from __future__ import annotations

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert import drawers, pick_place

#: stop once the open part has this much more room than needed, or the slide is this close to its limit
SLACK, AT_LIMIT = 0.003, 0.002
HOUSING = 0.022  # the hand body starts this far above the grip site (the fingertips reach 3 cm down)
FINGER_HALF = 0.012  # closed fingers' half-thickness across the finger axis, plus a mm
WALL_CLEAR = 0.006  # hand body above the drawer's walls
PULL_CAP = 0.4  # pull speed (position action)


def room_short(scene: E.Scene, region: str, obj: str) -> float:
    """How much (m) a drawer's open part (front panel to what overhangs it: the cabinet's front, the upper
    drawers' handles) is too short for the object (with `pick_place.into_open_part`'s margins); <= 0 when
    it fits or the region is not a drawer."""
    span = drawers.exposed_span(scene, region)
    if span is None:
        return 0.0
    pull, front, panel = span
    lo, hi = scene.aabb(obj)
    need = float(np.abs(hi - lo)[:2] @ np.abs(pull[:2])) + pick_place.OPEN_PART_MARGIN
    return need - (panel - front)


def plan_widen(scene: E.Scene, region: str, obj: str) -> list[E.Skill]:
    """Closed fingers down inside the drawer behind its front panel (the hand body above its walls),
    pull toward the robot until `obj` fits in the open part, rise."""
    joint, site_obj = drawers._slide_joint(scene, region, "open")
    m = scene.model
    jid = m.joint_name2id(joint)
    art = scene.inner.get_object(site_obj.parent_name).object_properties["articulation"]
    opens_down = np.mean(art["default_open_ranges"]) < np.mean(art["default_close_ranges"])
    end = float(m.jnt_range[jid][0] if opens_down else m.jnt_range[jid][1])  # the open end of the slide
    span = drawers.exposed_span(scene, region)
    assert span is not None
    pull, _, panel = span
    body = int(m.jnt_bodyid[jid])
    lo, hi = scene.geoms_aabb(scene.subtree_geoms(body))
    across = np.array([-pull[1], pull[0], 0.0])
    centre = (lo + hi) / 2.0
    # fingers along the panel, just inside it, tips below the walls' top, hand body above them
    grip_z = float(hi[2]) + WALL_CLEAR - HOUSING
    s_in = panel - FINGER_HALF  # pull coordinate of the grip site
    xy = centre[:2] + (s_in - float(centre[:2] @ pull[:2])) * pull[:2]
    grip = np.array([xy[0], xy[1], grip_z])
    above = grip + np.array([0.0, 0.0, 0.08])
    start = scene.body_pos(m.body_id2name(body))
    rot0 = scene.eef_mat

    def done(s: E.Scene) -> bool:
        return room_short(s, region, obj) <= -SLACK or abs(s.joint_q(joint) - end) < AT_LIMIT

    def panel_point(s: E.Scene) -> np.ndarray:
        return grip + (s.body_pos(m.body_id2name(body)) - start)

    def axis_fn(s: E.Scene) -> np.ndarray:
        return across

    def rot(s: E.Scene) -> np.ndarray:
        return E._nearest_finger_rot(across, s.eef_mat)

    return pick_place.fast(
        [
            E.MoveTo("approach", lambda s: above, axis_fn, 1.0, tol=0.01),
            E.MoveTo("descend", lambda s: grip, axis_fn, 1.0, tol=0.005, stop_on_stall=True, max_steps=60),
            drawers.PullJoint(panel_point, pull, rot, done, lambda s: s.joint_q(joint), cap=PULL_CAP),
            # back to the hand's pose at the start (the same wrist turn, not the flipped finger axis): the
            # bowl's grasp is then chosen from there; from a turned hand the wrist ran into its limit
            E.MovePose(
                "retreat", lambda s: s.eef_pos + np.array([0.0, 0.0, 0.08]), lambda s: rot0, 1.0, tol=0.01
            ),
        ]
    )
