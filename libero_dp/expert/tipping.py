"""Laying a held standing object down (ketchup into a drawer): tilt it about its bottom edge, let go.

Used by pick_place when the object's origin would stand above the target region's top.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E


@dataclass(frozen=True)
class TipParams:
    """Laying a standing object down: tilt it about its bottom edge while held, then let go."""

    margin: float = 0.005  # origin this far under the region's top still counts as fitting upright
    angles: tuple[float, ...] = (30.0, 60.0)  # deg, waypoints of the tilt; released at the last
    shift: float = (
        0.3  # stand it this fraction of its height off the region's centre, away from where it falls
    )


TIP = TipParams()


def tip_direction(scene: E.Scene, finger: np.ndarray, place_xy: np.ndarray) -> np.ndarray:
    """Horizontal direction the object's top falls toward: across the fingers (it turns about the finger
    axis), toward the robot (tipped away from it, the hand leaned over the bottle and it never fell)."""
    t = np.cross(finger, np.array([0.0, 0.0, 1.0]))
    t = E._horizontal(t)
    base = scene.body_pos("robot0_base")
    return t if float(t[:2] @ (base[:2] - place_xy)) >= 0.0 else -t


def _axis_rot(axis: np.ndarray, angle: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def tip_skills(obj: str, finger: np.ndarray, t: np.ndarray) -> list[E.Skill]:
    """Tilt the held object about its bottom edge on the `t` side (hand and grip point turn together about
    that edge), so that released it falls over onto its side."""
    axis = np.cross(np.array([0.0, 0.0, 1.0]), t)  # turns "up" toward t
    pose: dict[str, np.ndarray] = {}

    def pivot_frame(s: E.Scene) -> None:
        if "pivot" not in pose:
            lo, hi = s.aabb(obj)
            c = (lo + hi) / 2.0
            reach = 0.5 * float(abs((hi - lo)[:2] @ t[:2]))
            pose["pivot"] = np.array([c[0], c[1], lo[2]]) + reach * t
            pose["grip"], pose["rot"] = s.eef_pos, s.eef_mat

    def waypoint(angle: float) -> tuple[E.Target, Callable[[E.Scene], np.ndarray]]:
        q = _axis_rot(axis, np.deg2rad(angle))

        def pos(s: E.Scene) -> np.ndarray:
            pivot_frame(s)
            return pose["pivot"] + q @ (pose["grip"] - pose["pivot"])

        def rot(s: E.Scene) -> np.ndarray:
            pivot_frame(s)
            return q @ pose["rot"]

        return pos, rot

    out: list[E.Skill] = []
    for a in TIP.angles:
        pos, rot = waypoint(a)
        out.append(E.MovePose("tip", pos, rot, gripper=1.0, tol=0.01, rot_tol=0.1, max_steps=40))
    return out
