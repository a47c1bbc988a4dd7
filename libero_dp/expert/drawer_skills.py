"""The hand's moves for drawers: a pose with the wrist on the robot side, pull a handle, push at speed.

`wrist_rot` / `move_to_pose`: of the two equivalent grasps (+/- finger axis), the one with link6 toward the
robot base (or up). `PullJoint` and `PushJointPose` are PushJoints (so the Expert records `stuck` as
articulation_stuck) that hold a given orientation; the plans that use them are in `drawers`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from libero_dp.expert import core as E

Scene = E.Scene
Limits = E.Limits
RotTarget = Callable[[Scene], np.ndarray]


def pose_rotation(approach: np.ndarray, finger_axis: np.ndarray) -> np.ndarray:
    """Grip-site rotation with z = approach direction and x = finger (closing) axis."""
    z = np.asarray(approach, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.asarray(finger_axis, dtype=np.float64)
    x = x - (x @ z) * z
    x = x / np.linalg.norm(x)
    return np.column_stack([x, np.cross(z, x), z])


WRIST_SIDE = -0.088  # Panda link6 sits this far along the grip site's y axis (and 20 cm behind it)


def wrist_rot(scene: Scene, approach: np.ndarray, finger_axis: np.ndarray) -> np.ndarray:
    """Of the two equivalent grasps (+/- finger axis), the one whose wrist (link6) is on the robot-base side.

    The other one puts the forearm over the cabinet (link5 hit the cabinet while closing a bottom drawer)
    or into fixtures beside the hand (link6 hit the wine rack while pulling).
    """
    base = scene.body_pos("robot0_base")
    cands = [pose_rotation(approach, finger_axis), pose_rotation(approach, -np.asarray(finger_axis))]
    prefer = E._horizontal(base - scene.eef_pos) + np.array([0.0, 0.0, 1.0])  # toward the base, or up
    return max(cands, key=lambda r: float(WRIST_SIDE * r[:, 1] @ prefer))


def move_to_pose(
    name: str,
    target: E.Target,
    approach: np.ndarray,
    finger_axis: np.ndarray,
    gripper: float,
    free_cap: float | None = None,
    **kw: object,
) -> E.MovePose:
    """The core MovePose with the hand along `approach`, fingers along `finger_axis`, wrist on the robot side.

    `free_cap` (default: E.FREE.caps by phase name) gives travel phases (approach, retreat) the free-space
    speed profile, as in pick-and-place.
    """
    approach, finger_axis = np.asarray(approach), np.asarray(finger_axis)
    return E.MovePose(
        name,
        target,
        lambda s: wrist_rot(s, approach, finger_axis),
        gripper,
        free_cap=free_cap if free_cap is not None else E.FREE.caps.get(name),
        **kw,  # type: ignore[arg-type]
    )


class PullJoint(E.PushJoint):  # a PushJoint subclass so Expert records `stuck` as articulation_stuck
    """Pull a grasped handle along the slide axis until the goal predicate holds (then `extra_steps`).

    The hand leads the grasp point along `pull_dir`; cross-axis errors are corrected toward where the
    grasp started relative to the handle. `stuck` is set when the joint stops moving before the goal.
    """

    name = "pull"

    def __init__(
        self,
        handle: E.Target,
        pull_dir: np.ndarray,
        rot: RotTarget,
        done: Callable[[Scene], bool],
        progress: Callable[[Scene], float],
        extra_steps: int = 3,
        max_steps: int = 120,
        lead: float = 0.03,
        cap: float = 0.5,
        press: float = 0.0,
    ) -> None:
        E.Skill.__init__(self)
        self.handle, self.pull_dir, self.rot_fn = handle, np.asarray(pull_dir), rot
        self.done, self.progress, self.extra, self.max_steps, self.lead = (
            done,
            progress,
            extra_steps,
            max_steps,
            lead,
        )
        self.cap = cap  # pull speed (position action)
        self.press = press  # hold the hand this far below its start height relative to the handle (a hook)
        self.free_cap = cap  # lets Expert._smooth pass it (the default clip is 0.3)
        self.after = 0
        self.stuck = False

    def start(self, scene: Scene) -> None:
        self.rot = self.rot_fn(scene)
        self.offset = scene.eef_pos - np.asarray(self.handle(scene))  # hand relative to the handle
        self.prog: list[float] = []

    def no_progress(self) -> bool:
        """The joint moved less than 2 mm over the last 15 steps (after the first 25)."""
        return len(self.prog) > 25 and abs(self.prog[-1] - self.prog[-16]) < 0.002

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        if self.ended(scene):
            return None
        goal = np.asarray(self.handle(scene)) + self.offset - np.array([0.0, 0.0, self.press])
        err = goal - scene.eef_pos
        along = float(err @ self.pull_dir)
        cross = err - along * self.pull_dir
        a = (cross + (along + self.lead) * self.pull_dir) / E.POS_SCALE
        m = float(np.max(np.abs(a)))
        if m > self.cap:
            a *= self.cap / m
        rot_a, _ = E._rot_action(self.rot, scene.eef_mat, lim)
        return np.concatenate([a, rot_a, [1.0]])


class PushJointPose(E.PushJoint):
    """PushJoint holding a given orientation (the core one re-picks the nearest down pose), at speed `cap`."""

    def __init__(self, rot: RotTarget, *args: object, cap: float = 0.5, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.rot_fn, self.cap = rot, cap
        self.free_cap = cap  # lets Expert._smooth pass it (the default clip is 0.3)

    def start(self, scene: Scene) -> None:
        super().start(scene)
        self.rot = self.rot_fn(scene)

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        a = super().step(scene, lim)
        if a is None:
            return None
        # re-scale the parent's (lim-capped) push direction to this skill's speed
        goal = np.asarray(self.contact(scene))
        err = goal - scene.eef_pos
        along = float(err @ self.push_dir)
        v = (err - along * self.push_dir + (along + 0.03) * self.push_dir) / E.POS_SCALE
        m = float(np.max(np.abs(v)))
        a[:3] = v * (self.cap / m) if m > self.cap else v
        return a
