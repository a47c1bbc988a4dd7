"""Privileged scene access for the scripted expert: live poses, bounding boxes, obstacles, and the rotation
helpers the skills share. Read-only: nothing here moves the robot."""

from __future__ import annotations

from typing import Any

import numpy as np

# ----------------------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------------------


def rot_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Log map of a rotation matrix (stable near 0 and pi)."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    vec = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-6:
        return 0.5 * vec
    if np.pi - angle < 1e-4:
        # near pi: axis from the diagonal of (R + I) / 2
        m = (r + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(m), 0.0, None))
        k = int(np.argmax(axis))
        axis = m[:, k] / max(axis[k], 1e-9)
        return angle * axis / np.linalg.norm(axis)
    return angle * vec / (2.0 * np.sin(angle))


def down_rotation(finger_axis: np.ndarray) -> np.ndarray:
    """Grip-site orientation pointing down with the fingers closing along `finger_axis` (horizontal).

    The Panda grip site's x axis is the finger axis and its z axis the approach direction.
    """
    f = np.array([finger_axis[0], finger_axis[1], 0.0])
    f /= np.linalg.norm(f)
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([f, np.cross(z, f), z])


def _horizontal(v: np.ndarray) -> np.ndarray:
    out = np.array([v[0], v[1], 0.0])
    n = np.linalg.norm(out)
    return out / n if n > 1e-9 else np.array([1.0, 0.0, 0.0])


# ----------------------------------------------------------------------------------------------------------
# Privileged scene access
# ----------------------------------------------------------------------------------------------------------


ROBOT_PREFIXES = ("robot0_", "gripper0_", "mount0_")  # body names of the arm, hand and mount


class Scene:
    """Reads poses from the live sim. `env.sim` is re-read on every access: resets rebuild the MjSim."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.inner = env.env  # the LIBERO problem env (robosuite)
        self.robot = self.inner.robots[0]

    @property
    def model(self) -> Any:
        return self.env.sim.model

    @property
    def data(self) -> Any:
        return self.env.sim.data

    # -- robot
    @property
    def eef_pos(self) -> np.ndarray:
        return np.array(self.data.site_xpos[self.robot.eef_site_id])

    @property
    def eef_mat(self) -> np.ndarray:
        return np.array(self.data.site_xmat[self.robot.eef_site_id]).reshape(3, 3)

    @property
    def gripper_gap(self) -> float:
        q = self.data.qpos[self.robot._ref_gripper_joint_pos_indexes]
        return float(q[0] - q[1])

    # -- bodies
    def body_id(self, name: str) -> int:
        """Body id of a bddl object/fixture instance name or a raw MuJoCo body name."""
        if name in self.inner.obj_body_id:
            return int(self.inner.obj_body_id[name])
        return int(self.model.body_name2id(name))

    def body_pos(self, name: str) -> np.ndarray:
        return np.array(self.data.xpos[self.body_id(name)])

    def subtree_geoms(self, body: int) -> list[int]:
        """Collision geoms of `body` and its descendants."""
        m = self.model
        out = []
        for g in range(m.ngeom):
            b = int(m.geom_bodyid[g])
            while b not in (0, body):
                b = int(m.body_parentid[b])
            if b == body and (int(m.geom_contype[g]) or int(m.geom_conaffinity[g])):
                out.append(g)
        return out

    def subtree_bodies(self, body: int) -> set[int]:
        """`body` and its descendants."""
        m = self.model
        out = {body}
        for b in range(m.nbody):
            p = b
            while p not in (0, body):
                p = int(m.body_parentid[p])
            if p == body:
                out.add(b)
        return out

    def obstacle_geoms(self, skip: set[int], world: bool = False) -> list[int]:
        """Collision geoms the hand or a carried object could meet: all but the bodies in `skip`, the robot's
        and (unless `world`) the world body's."""
        m = self.model
        out = []
        for g in range(m.ngeom):
            if not (int(m.geom_contype[g]) or int(m.geom_conaffinity[g])):
                continue
            b = int(m.geom_bodyid[g])
            if b in skip or (b == 0 and not world) or (m.body_id2name(b) or "").startswith(ROBOT_PREFIXES):
                continue
            out.append(g)
        return out

    def geoms_aabb(self, geoms: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box of some geoms (from MuJoCo's local geom AABBs)."""
        m, d = self.model, self.data
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for g in geoms:
            rot = np.array(d.geom_xmat[g]).reshape(3, 3)
            c = np.array(d.geom_xpos[g]) + rot @ m.geom_aabb[g, :3]
            h = np.abs(rot) @ m.geom_aabb[g, 3:]
            lo, hi = np.minimum(lo, c - h), np.maximum(hi, c + h)
        return lo, hi

    def aabb(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.geoms_aabb(self.subtree_geoms(self.body_id(name)))

    def body_mat(self, name: str) -> np.ndarray:
        return np.array(self.data.xmat[self.body_id(name)]).reshape(3, 3)

    def site(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centre, rotation, half-size) of a site."""
        sid = self.model.site_name2id(name)
        return (
            np.array(self.data.site_xpos[sid]),
            np.array(self.data.site_xmat[sid]).reshape(3, 3),
            np.array(self.model.site_size[sid]),
        )

    def joint_q(self, name: str) -> float:
        return float(self.data.qpos[self.model.get_joint_qpos_addr(name)])

    def obstacle_names(self, exclude: set[str]) -> list[str]:
        names = list(self.inner.objects_dict) + list(self.inner.fixtures_dict)
        return [n for n in names if n not in exclude and n in self.inner.obj_body_id]


def _dist_to_box2d(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    d = np.maximum(np.maximum(lo[:2] - p[:2], 0.0), p[:2] - hi[:2])
    return float(np.linalg.norm(d))
