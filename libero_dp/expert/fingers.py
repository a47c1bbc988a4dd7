"""Where the open fingers come down: a rim grasp whose outer finger would land on something.

libero_spatial's "black bowl in the top drawer": the 10.7 cm bowl fills most of the drawer (21 x 15 cm
inside, turned 27 degrees to the table). Its rim grasp (pads 4.2 cm either side of the wall) put the outer
finger on the drawer's side wall top in 7 of 50 inits; the hand stalled 3.5 cm high and closed on air.
The hand-housing checks miss it (the finger hangs below the housing, and a turned wall's world AABB covers
the whole drawer), so the fingers are tested against each geom's own oriented box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E

ROBOT_PREFIXES = ("robot0_", "gripper0_", "mount0_")


@dataclass(frozen=True)
class FingerBox:
    """One open Panda finger relative to the grip site, pointing down (measured collision AABBs)."""

    inner: float = 0.032  # finger's inner face from the grip site along the finger axis
    outer: float = 0.060  # its outer face (the mesh widens to 6.8 cm at the knuckle, 4.9 cm up)
    half_width: float = 0.011  # across the finger axis
    below: float = 0.012  # fingertip below the grip site
    above: float = 0.048  # finger top (the housing starts 2.6 cm up; its check is coarser)
    margin: float = 0.002  # contact margin


FINGER = FingerBox()

OrientedBox = tuple[np.ndarray, np.ndarray, np.ndarray]  # centre, rotation (columns: box axes), half-size


def oriented_boxes(scene: E.Scene, obj: str, centre: np.ndarray, near: float = 0.2) -> list[OrientedBox]:
    """Each collision geom's own (oriented) bounding box reaching within `near` of `centre` (horizontally),
    less `obj`'s and the robot's."""
    m, d = scene.model, scene.data
    own = {int(m.geom_bodyid[g]) for g in scene.subtree_geoms(scene.body_id(obj))}
    out = []
    for g in range(m.ngeom):
        if not (int(m.geom_contype[g]) or int(m.geom_conaffinity[g])):
            continue
        b = int(m.geom_bodyid[g])
        if b in own or b == 0 or (m.body_id2name(b) or "").startswith(ROBOT_PREFIXES):
            continue
        rot = np.array(d.geom_xmat[g]).reshape(3, 3)
        c = np.array(d.geom_xpos[g]) + rot @ m.geom_aabb[g, :3]
        half = np.array(m.geom_aabb[g, 3:])
        if np.linalg.norm((c - centre)[:2]) - np.linalg.norm(half) < near:
            out.append((c, rot, half))
    return out


def finger_points(grip: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Points filling both open fingers of a hand at `grip` closing along `f` (horizontal), spaced under
    6 mm: closer than the thinnest wall or plate (3-4 mm) with the margin on both sides."""
    f = np.array([f[0], f[1], 0.0]) / np.linalg.norm(f[:2])
    across = np.array([-f[1], f[0], 0.0])
    s = np.concatenate(
        [-np.linspace(FINGER.inner, FINGER.outer, 7), np.linspace(FINGER.inner, FINGER.outer, 7)]
    )
    t = np.linspace(-FINGER.half_width, FINGER.half_width, 5)
    z = np.linspace(-FINGER.below, FINGER.above, 11)
    ss, tt, zz = (a.ravel() for a in np.meshgrid(s, t, z, indexing="ij"))
    return grip + ss[:, None] * f + tt[:, None] * across + zz[:, None] * np.array([0.0, 0.0, 1.0])


def fingers_hit(boxes: list[OrientedBox], grip: np.ndarray, f: np.ndarray) -> bool:
    """Whether an open finger of a hand at `grip` (finger axis `f`) overlaps one of the boxes."""
    if not boxes:
        return False
    pts = finger_points(grip, f)
    c = np.array([b[0] for b in boxes])
    rot = np.array([b[1] for b in boxes])
    half = np.array([b[2] for b in boxes])
    local = np.abs(np.einsum("bpi,bij->bpj", pts[None] - c[:, None], rot))  # points in each box's frame
    return bool(np.any(np.all(local < half[:, None] + FINGER.margin, axis=2)))
