"""Leave from under an overhang: slide a just-gripped object out sideways before lifting it.

libero_goal's "open the top drawer and put the bowl inside": the opened drawer sticks out 2-3 cm over
the bowl next to the cabinet. Lifted straight up, the bowl's far rim hit the drawer's underside, the
bowl turned about the rim grasp and fell out (the grasp itself held it at a 15 degree tilt). Lifted a
little, then slid clear of the drawer's footprint, it goes up free.
"""

from __future__ import annotations

import numpy as np

from libero_dp.expert import core as E

CLEAR = 0.02  # m: footprint gap wanted to anything overhead
RAISE = 0.02  # m: first lift, clear of the table, before the slide
# m: a longer slide is not tried (the plain lift stays). 0.14, not 0.10: with a wine bottle on one side and
# a cream cheese box on the other, the bowl under the drawer's corner found no way out within 10 cm, went
# straight up, hit the drawer's underside and fell (libero_goal, bowl into the top drawer)
MAX_SLIDE = 0.14


def _overhead(
    scene: E.Scene, obj: str, boxes: list[tuple[np.ndarray, np.ndarray]], up_to: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The boxes above the object's top (and below `up_to`) whose footprints meet the object's."""
    lo, hi = scene.aabb(obj)
    return [
        (blo, bhi)
        for blo, bhi in boxes
        if blo[2] > hi[2] + 0.005
        and blo[2] < up_to
        and np.all(blo[:2] < hi[:2] + CLEAR)
        and np.all(bhi[:2] > lo[:2] - CLEAR)
    ]


def _meets(b: tuple[np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray, gap: float) -> bool:
    """Whether box b's footprint comes within `gap` of the footprint lo-hi."""
    return bool(np.all(b[0][:2] < hi + gap) and np.all(b[1][:2] > lo - gap))


def escape_shift(
    scene: E.Scene, obj: str, boxes: list[tuple[np.ndarray, np.ndarray]], up_to: float
) -> np.ndarray | None:
    """Smallest horizontal shift (xy) that takes the object's footprint CLEAR away from everything hanging
    over it below `up_to`, or None when nothing does (or no shift up to MAX_SLIDE clears it). Shifts that
    would push into other things standing at the object's height are skipped."""
    over = _overhead(scene, obj, boxes, up_to)
    if not over:
        return None
    lo, hi = scene.aabb(obj)
    beside = [(blo, bhi) for blo, bhi in boxes if blo[2] < hi[2] + RAISE and bhi[2] > lo[2] + RAISE]
    for dist in np.arange(0.01, MAX_SLIDE + 1e-9, 0.01):
        for ang in np.deg2rad(np.arange(0, 360, 15)):
            d = dist * np.array([np.cos(ang), np.sin(ang)])
            slo, shi = lo[:2] + d, hi[:2] + d
            if not any(_meets(b, slo, shi, CLEAR) for b in over) and not any(
                _meets(b, slo, shi, 0.005) for b in beside
            ):
                return d
    return None


def escape_skills(shift: np.ndarray, axis: E.Target, cap: float = 0.3) -> list[E.Skill]:
    """Raise RAISE, then slide by `shift`, fingers closed, at the plain cap (the object hangs in a rim
    grasp: a fast slide swings it)."""
    start: dict[str, np.ndarray] = {}

    def up(s: E.Scene) -> np.ndarray:
        start["p"] = s.eef_pos + np.array([0.0, 0.0, RAISE])
        return start["p"]

    def slid(s: E.Scene) -> np.ndarray:
        return start["p"] + np.array([shift[0], shift[1], 0.0])

    return [
        E.MoveTo("raise", up, axis, gripper=1.0, tol=0.005, cap=cap, max_steps=40),
        E.MoveTo("slide", slid, axis, gripper=1.0, tol=0.006, cap=cap, max_steps=80),
    ]
