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


@dataclass(frozen=True)
class FingerBox:
    """One open Panda finger relative to the grip site, pointing down (its collision hull's vertices)."""

    inner: float = 0.038  # inner face (the pad) from the grip site along the finger axis
    outer_tip: float = 0.053  # outer face at the fingertip ...
    outer_top: float = 0.064  # ... and 4 cm higher (the hull widens upwards)
    half_width: float = 0.010  # across the finger axis
    below: float = 0.010  # fingertip below the grip site
    above: float = 0.045  # finger top (the housing starts 2.6 cm up; its check is coarser)


FINGER = FingerBox()
#: a rim grasp whose outer finger would land on something moves its grip site this much (at most) toward
#: the bowl's centre: the fingers still straddle the wall (the outer one closes on it and pushes the bowl a
#: few mm toward the inner one), which kept the near, radial grasp that carries the bowl best (skewed
#: grasps chosen instead let it tilt 40-50 degrees and miss the plate)
MAX_INSET = 0.012  # m
INSET_WEIGHT = 50.0  # cost per m of inset, in the units of the wrist turn (rad)

OrientedBox = tuple[np.ndarray, np.ndarray, np.ndarray]  # centre, rotation (columns: box axes), half-size


def oriented_boxes(scene: E.Scene, obj: str, centre: np.ndarray, near: float = 0.2) -> list[OrientedBox]:
    """Each collision geom's own (oriented) bounding box reaching within `near` of `centre` (horizontally),
    less `obj`'s and the robot's."""
    m, d = scene.model, scene.data
    out = []
    for g in scene.obstacle_geoms(scene.subtree_bodies(scene.body_id(obj))):
        rot = np.array(d.geom_xmat[g]).reshape(3, 3)
        c = np.array(d.geom_xpos[g]) + rot @ m.geom_aabb[g, :3]
        half = np.array(m.geom_aabb[g, 3:])
        if np.linalg.norm((c - centre)[:2]) - np.linalg.norm(half) < near:
            out.append((c, rot, half))
    return out


def finger_points(grip: np.ndarray, f: np.ndarray, shrink: float = 0.0) -> np.ndarray:
    """Points filling both open fingers of a hand at `grip` closing along `f` (horizontal), their outer
    faces `shrink` nearer the grip site, about 6 mm apart (the drawer walls are 4-8 mm thick)."""
    f = np.array([f[0], f[1], 0.0]) / np.linalg.norm(f[:2])
    across = np.array([-f[1], f[0], 0.0])
    z = np.linspace(-FINGER.below, FINGER.above, 10)
    rise = np.clip((z + FINGER.below) / 0.04, 0.0, 1.0)
    outer = FINGER.outer_tip + rise * (FINGER.outer_top - FINGER.outer_tip) - shrink
    u = np.linspace(0.0, 1.0, 5)
    s = FINGER.inner + u[:, None] * np.maximum(outer - FINGER.inner, 0.0)[None, :]  # (along, height)
    t = np.linspace(-FINGER.half_width, FINGER.half_width, 5)
    ss = np.concatenate([s, -s])[:, None, :] * np.ones((1, len(t), 1))
    tt = np.ones_like(ss) * t[None, :, None]
    zz = np.ones_like(ss) * z[None, None, :]
    return (
        grip + ss.reshape(-1, 1) * f + tt.reshape(-1, 1) * across + zz.reshape(-1, 1) * np.array([0, 0, 1.0])
    )


def _hits(boxes: list[OrientedBox], pts: np.ndarray) -> bool:
    c = np.array([b[0] for b in boxes])
    rot = np.array([b[1] for b in boxes])
    half = np.array([b[2] for b in boxes])
    local = np.abs(np.einsum("bpi,bij->bpj", pts[None] - c[:, None], rot))  # points in each box's frame
    return bool(np.any(np.all(local < half[:, None], axis=2)))


def rim_inset(boxes: list[OrientedBox], grip: np.ndarray, f: np.ndarray, radial: np.ndarray) -> float | None:
    """Smallest shift (m, 2 mm steps, up to MAX_INSET) of a rim grip toward the object's centre (`radial`
    points out of it) that keeps the open fingers clear of the boxes; None when none does."""
    if not boxes:
        return 0.0
    for inset in np.arange(0.0, MAX_INSET + 1e-9, 0.002):
        if not _hits(boxes, finger_points(grip - inset * radial, f)):
            return float(inset)
    return None
