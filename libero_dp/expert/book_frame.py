"""What both book plans share: a book's box frame and its grasp, LIBERO's In() check, a hold skill.

Books (`black_book` 2.9 x 11.0 x 13.4 cm, `yellow_book` 2.4 x 9.8 x 12.2 cm) start standing upright, one box
geom each; the body origin is ~2 mm below the bottom face. `(In book site)` only tests the body origin, so a
book counts as in a region once its bottom edge is inside the site box.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from libero_dp.expert import core as E

# ----------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------


class BookFrame:
    """World frame of a book's box geom: centre, thin/wide/tall unit axes and half-sizes along them."""

    def __init__(self, scene: E.Scene, obj: str) -> None:
        m, d = scene.model, scene.data
        geoms = [g for g in scene.subtree_geoms(scene.body_id(obj)) if int(m.geom_type[g]) == 6]  # boxes
        g = max(geoms, key=lambda k: float(np.prod(m.geom_size[k])))
        rot = np.array(d.geom_xmat[g]).reshape(3, 3)
        half = np.array(m.geom_size[g])
        tall = int(np.argmax(np.abs(rot[2, :])))
        others = [k for k in range(3) if k != tall]
        thin, wide = sorted(others, key=lambda k: half[k])
        self.centre = np.array(d.geom_xpos[g])
        self.thin, self.wide, self.tall = rot[:, thin], rot[:, wide], rot[:, tall] * np.sign(rot[2, tall])
        self.half = np.array([half[thin], half[wide], half[tall]])
        self.top_z = float(self.centre[2] + np.abs(rot[2, :]) @ half)
        self.bottom_z = float(self.centre[2] - np.abs(rot[2, :]) @ half)
        self.origin = scene.body_pos(obj)


# ----------------------------------------------------------------------------------------------------------
# Skills
# ----------------------------------------------------------------------------------------------------------


class HoldUntil(E.Skill):
    """Hold the hand still (gripper closed) until a predicate holds or `max_steps` pass."""

    def __init__(self, cond: Callable[[E.Scene], bool], max_steps: int = 15, name: str = "hold") -> None:
        super().__init__()
        self.cond, self.max_steps, self.name = cond, max_steps, name

    def start(self, scene: E.Scene) -> None:
        self.pos, self.rot = scene.eef_pos, scene.eef_mat

    def step(self, scene: E.Scene, lim: E.Limits) -> np.ndarray | None:
        if self.cond(scene) or self.t >= self.max_steps:
            return None
        self.t += 1
        rot_a, _ = E._rot_action(self.rot, scene.eef_mat, lim)
        return np.concatenate([E._pos_action(self.pos - scene.eef_pos, lim), rot_a, [1.0]])


def _book_grasp(scene: E.Scene, obj: str, spec: E.GraspSpec) -> tuple[np.ndarray, np.ndarray, BookFrame]:
    """Grip point on the upright book's top edge (box centre in xy); fingers close across its thickness."""
    bf = BookFrame(scene, obj)
    depth = min(spec.depth, 0.5 * (bf.top_z - bf.bottom_z))
    grip = np.array([bf.centre[0], bf.centre[1], bf.top_z - depth])
    return grip, E._horizontal(bf.thin), bf


def _region_check(scene: E.Scene, obj: str, site: str) -> bool:
    """LIBERO's In(): the object's body origin inside the site box (lower z bound extended by 1 cm)."""
    c, rot, half = scene.site(site)
    local = rot.T @ (scene.body_pos(obj) - c)
    return bool(np.all(np.abs(local[:2]) <= half[:2]) and -half[2] - 0.01 <= local[2] <= half[2])
