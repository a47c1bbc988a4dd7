"""Motion skills of the scripted expert: each a phase of a plan that reads the true sim state every step and
emits one smooth OSC_POSE delta (move with a braking speed profile, move to a pose, grip, push a joint)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from libero_dp.expert.scene import Scene, down_rotation, rot_to_axis_angle

#: OSC_POSE scales: action 1.0 = 5 cm of position / 0.5 rad of rotation.
POS_SCALE = 0.05
ROT_SCALE = 0.5


# ----------------------------------------------------------------------------------------------------------
# Skills
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Limits:
    """Action shaping shared by all skills."""

    max_pos_action: float = 0.3  # |position action| per component (1.0 = 5 cm)
    max_rot_action: float = 1.0
    pos_slew: float = 0.08  # max change of a position action component between steps
    rot_slew: float = 0.25
    pos_gain: float = 1.0  # action = gain * error / 5 cm (gain 1: the OSC goal is the target itself)
    rot_gain: float = 1.0


class Skill:
    """One phase of a plan. `step` returns the action, or None once the phase is complete."""

    name = "skill"

    def __init__(self) -> None:
        self.t = 0

    def start(self, scene: Scene) -> None:  # noqa: B027 - optional hook
        pass

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        raise NotImplementedError


def _pos_action(err: np.ndarray, lim: Limits, cap: float | None = None) -> np.ndarray:
    a = lim.pos_gain * np.asarray(err) / POS_SCALE
    cap = lim.max_pos_action if cap is None else min(cap, lim.max_pos_action)
    m = float(np.max(np.abs(a)))
    return a * (cap / m) if m > cap else a


def _rot_action(target: np.ndarray, current: np.ndarray, lim: Limits) -> tuple[np.ndarray, float]:
    err = rot_to_axis_angle(target @ current.T)
    a = np.clip(lim.rot_gain * err / ROT_SCALE, -lim.max_rot_action, lim.max_rot_action)
    return a, float(np.linalg.norm(err))


def _nearest_finger_rot(finger_axis: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Down orientation for +/- finger_axis, whichever is closer (the two-finger gripper is symmetric)."""
    cands = [down_rotation(finger_axis), down_rotation(-np.asarray(finger_axis))]
    return min(cands, key=lambda r: np.linalg.norm(rot_to_axis_angle(r @ current.T)))


Target = Callable[[Scene], np.ndarray]


@dataclass
class FreeMove:
    """Velocity-profile control for moves through free space (opted into per MoveTo with `free_cap`).

    The hand's per-step displacement follows the command with lag (fitted on the Panda OSC at 20 Hz:
    disp[k+1] ~ alpha * disp[k] + beta * action[k], i.e. ~1.15 cm/step at steady action 1.0). The skill
    asks for the speed sqrt(2 * decel * d) (capped; then `final_rate * d` in the last cm) towards the goal
    and inverts the model for the action: it brakes early enough that the per-step slew limit does not
    make it overshoot. With the plain 0.3 cap the hand moves ~0.35 cm per step; free moves ~3x faster.

    caps: phase name -> largest position action (1.0 = 5 cm per step commanded), for planners that opt in.
    """

    caps: dict[str, float] = field(
        default_factory=lambda: {
            "approach": 1.0,
            "lift": 1.0,
            "carry": 1.0,
            "retreat": 1.0,
            "descend": 0.6,
            "lower": 0.6,
        }
    )
    alpha: float = 0.65
    beta: float = 0.0045
    decel: float = 0.0008  # m/step^2
    final_rate: float = 0.3  # 1/step


FREE = FreeMove()


def free_action(err: np.ndarray, vel: np.ndarray, top: float) -> np.ndarray:
    """Position action that moves the hand along `err` (m) on the braking speed profile; |a| <= top."""
    d = float(np.linalg.norm(err))
    if d < 1e-9:
        return np.zeros(3)
    speed = min(np.sqrt(2.0 * FREE.decel * d), FREE.final_rate * d, top * FREE.beta / (1.0 - FREE.alpha))
    want = speed * err / d
    a = (want - FREE.alpha * vel) / FREE.beta
    m = float(np.max(np.abs(a)))
    return a * (top / m) if m > top else a


def move_ended(sk: Any, pos: np.ndarray, err: np.ndarray, rot_err: float) -> bool:
    """End test of a move skill (MoveTo, MovePose): at the goal within `tol` / `rot_tol`, or
    stalled on contact (`stop_on_stall`: < 1 mm in 3 steps), or out of `max_steps` (both set `stalled`)."""
    if np.linalg.norm(err) < sk.tol and rot_err < sk.rot_tol:
        return True
    if sk.stop_on_stall and len(sk.hist) > 6 and np.linalg.norm(pos - sk.hist[-4]) < 0.001:
        sk.stalled = True
        return True
    if sk.t >= sk.max_steps:
        sk.stalled = True
        return True
    return False


class MoveTo(Skill):
    """Move the grip site to a position with a down orientation; ends when there, or stalled on contact."""

    def __init__(
        self,
        name: str,
        target: Target,
        finger_axis: Target,
        gripper: float,
        tol: float = 0.006,
        rot_tol: float = 0.06,
        cap: float | None = None,
        stop_on_stall: bool = False,
        max_steps: int = 200,
        free_cap: float | None = None,
    ) -> None:
        super().__init__()
        self.name, self.target_fn, self.axis_fn = name, target, finger_axis
        self.gripper, self.tol, self.rot_tol, self.cap = gripper, tol, rot_tol, cap
        self.stop_on_stall, self.max_steps = stop_on_stall, max_steps
        self.free_cap = free_cap  # > the usual cap: braking speed profile up to this action (FreeMove)
        self.stalled = False

    def start(self, scene: Scene) -> None:
        self.goal = np.asarray(self.target_fn(scene), dtype=np.float64)
        self.rot = self.target_rot(scene)
        self.hist: list[np.ndarray] = []

    def target_rot(self, scene: Scene) -> np.ndarray:
        """Pointing down, fingers along +/- the finger axis, whichever is nearer the current hand."""
        return _nearest_finger_rot(self.axis_fn(scene), scene.eef_mat)

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        pos = scene.eef_pos
        self.hist.append(pos)
        err = self.goal - pos
        rot_a, rot_err = _rot_action(self.rot, scene.eef_mat, lim)
        if move_ended(self, pos, err, rot_err):
            return None
        self.t += 1
        base = lim.max_pos_action if self.cap is None else min(self.cap, lim.max_pos_action)
        if self.free_cap is not None and self.free_cap > base:
            vel = pos - self.hist[-2] if len(self.hist) > 1 else np.zeros(3)
            a = free_action(err, vel, self.free_cap)
        else:
            a = _pos_action(err, lim, self.cap)
        return np.concatenate([a, rot_a, [self.gripper]])


class MovePose(MoveTo):
    """Move the grip site to a position and an explicit hand orientation (`rot`, read at start).

    The one skill for every move that does not point the hand straight down with the nearer finger axis:
    pinching a drawer handle, a knob's exact finger axis, a book turned into a slot, a tilted object.
    It is MoveTo otherwise (same end test, caps and opt-in free-space profile); `rot_cap` (< 1) slows the
    turn (a 90-degree pitch swings a held book through a wide arc).
    """

    def __init__(
        self,
        name: str,
        target: Target,
        rot: Callable[[Scene], np.ndarray],
        gripper: float,
        rot_cap: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(name, target, lambda s: np.array([1.0, 0.0, 0.0]), gripper, **kw)
        self.rot_fn, self.rot_cap = rot, rot_cap

    def target_rot(self, scene: Scene) -> np.ndarray:
        return np.asarray(self.rot_fn(scene), dtype=np.float64)

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        a = super().step(scene, lim)
        if a is not None and self.rot_cap is not None:
            a[3:6] = np.clip(a[3:6], -self.rot_cap, self.rot_cap)
        return a


class Gripper(Skill):
    """Open or close in place until the finger gap stops changing (a free close takes 10-12 steps)."""

    def __init__(self, name: str, close: bool, min_steps: int = 6, max_steps: int = 25) -> None:
        super().__init__()
        self.name, self.close, self.min_steps, self.max_steps = name, close, min_steps, max_steps

    def start(self, scene: Scene) -> None:
        self.hold = scene.eef_pos
        self.rot = scene.eef_mat
        self.gaps: list[float] = []

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        self.gaps.append(scene.gripper_gap)
        settled = len(self.gaps) > 2 and abs(self.gaps[-1] - self.gaps[-3]) < 0.0005
        if self.t >= self.max_steps or (self.t >= self.min_steps and settled):
            return None
        self.t += 1
        rot_a, _ = _rot_action(self.rot, scene.eef_mat, lim)
        return np.concatenate(
            [_pos_action(self.hold - scene.eef_pos, lim), rot_a, [1.0 if self.close else -1.0]]
        )


class PushJoint(Skill):
    """Push an articulated part (drawer) along its slide axis until its goal predicate holds.

    The hand leads the contact point along `push_dir` while cross-axis errors are corrected toward the
    moving handle; it keeps pushing `extra_steps` after the predicate first holds, because success lives
    in a window under 2 mm wide next to the physical stop.
    """

    name = "push"

    def __init__(
        self,
        contact: Target,
        push_dir: np.ndarray,
        finger_axis: np.ndarray,
        done: Callable[[Scene], bool],
        progress: Callable[[Scene], float],
        extra_steps: int = 4,
        max_steps: int = 150,
    ) -> None:
        super().__init__()
        self.contact, self.push_dir, self.axis = contact, np.asarray(push_dir), np.asarray(finger_axis)
        self.done, self.progress, self.extra, self.max_steps = done, progress, extra_steps, max_steps
        self.after = 0
        self.stuck = False

    def start(self, scene: Scene) -> None:
        self.rot = _nearest_finger_rot(self.axis, scene.eef_mat)
        self.prog: list[float] = []

    def no_progress(self) -> bool:
        """Whether the joint stopped moving short of the goal (a push relies on `max_steps` alone)."""
        return False

    def ended(self, scene: Scene) -> bool:
        """Record this step's progress and count the step; True once the skill is over: `extra_steps` after
        the goal first holds, or stuck (`max_steps` used up, or `no_progress`). Shared by the joint skills."""
        self.prog.append(self.progress(scene))
        if self.done(scene):
            self.after += 1
            if self.after > self.extra:
                return True
        if self.t >= self.max_steps or self.no_progress():
            self.stuck = True
            return True
        self.t += 1
        return False

    def step(self, scene: Scene, lim: Limits) -> np.ndarray | None:
        if self.ended(scene):
            return None
        pos = scene.eef_pos
        goal = np.asarray(self.contact(scene))
        err = goal - pos
        along = float(err @ self.push_dir)
        cross = err - along * self.push_dir
        # lead the contact by a few cm so the hand keeps pressing; the cap sets the push speed
        a = _pos_action(cross + (along + 0.03) * self.push_dir, lim)
        rot_a, _ = _rot_action(self.rot, scene.eef_mat, lim)
        return np.concatenate([a, rot_a, [1.0]])
