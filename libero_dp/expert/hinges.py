"""Revolute joints for the scripted expert: stove knobs (TurnOn / TurnOff) and the hinge geometry and
grasp-and-turn skill that the hinged doors (`doors.py`) share.

Knob: grasp the knob's lever across its width with the grip site on the knob axis, then turn the wrist
about the axis until LIBERO's predicate holds (a grasped lever follows the hand in both directions, unlike
a sideways push that slips off the lever's end), release and lift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E

MJ_HINGE = 3  # mjtJoint.mjJNT_HINGE


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnobSpec:
    """How to grasp and turn one knob category.

    grip_depth: grip site below the lever's top; finger_clear: grip site above the knob's base disc
    (the finger collision boxes reach ~1.3 cm below the grip site); overshoot: how far past the predicate's
    threshold to aim (rad); lead: how far ahead of the knob's angle the wrist is commanded (rad).
    """

    grip_depth: float = 0.02
    finger_clear: float = 0.016
    overshoot: float = 0.3
    lead: float = 0.7
    extra_steps: int = 3
    # keep pressing while the fingers open (a free open takes 10-12 steps): fingers still closed on the
    # lever while the hand lifts drag "off" (q < 0, at the -0.005 stop) back above 0
    release_steps: int = 12


KNOB_SPECS: dict[str, KnobSpec] = {"flat_stove": KnobSpec()}
DEFAULT_KNOB = KnobSpec()


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------------------


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def hinge_joints(scene: E.Scene, obj: str) -> list[str]:
    """The hinge joints of a bddl object (LIBERO lists an articulated object's joints in `.joints`)."""
    joints = list(getattr(scene.inner.get_object(obj), "joints", None) or [])
    return [j for j in joints if int(scene.model.jnt_type[scene.model.joint_name2id(j)]) == MJ_HINGE]


def _local_box(scene: E.Scene, body: int, geoms: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of geoms in `body`'s own frame (tight for geoms aligned with the body)."""
    m, d = scene.model, scene.data
    rb = np.array(d.xmat[body]).reshape(3, 3)
    pb = np.array(d.xpos[body])
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for g in geoms:
        rg = np.array(d.geom_xmat[g]).reshape(3, 3)
        rel = rb.T @ rg
        c = rb.T @ (np.array(d.geom_xpos[g]) + rg @ m.geom_aabb[g, :3] - pb)
        h = np.abs(rel) @ m.geom_aabb[g, 3:]
        lo, hi = np.minimum(lo, c - h), np.maximum(hi, c + h)
    return lo, hi


# ----------------------------------------------------------------------------------------------------------
# Skills
# ----------------------------------------------------------------------------------------------------------


class TurnGrasped(E.Skill):
    """Turn a grasped part about its hinge until `done` holds (then `extra_steps` more).

    The hand's target pose is its pose at the grasp rotated about the hinge axis by the joint's travel so
    far plus `lead` in the turning direction: the command follows the part, so a slipping grasp does not
    wind the wrist up. `stuck` is set when the joint stops moving or `max_steps` runs out.
    It ends with `release_steps` of the same command with the gripper opening: the hand keeps pressing
    the part toward (or against the stop of) its goal while the fingers let go. Releasing while
    turning the wrist back dragged a knob at its -0.005 stop back over TurnOff's q < 0 threshold.
    """

    name = "turn"

    def __init__(
        self,
        joint: str,
        sign: float,
        done: Callable[[E.Scene], bool],
        lead: float = 0.35,
        extra_steps: int = 3,
        release_steps: int = 4,
        max_steps: int = 80,
        stall_steps: int = 12,
    ) -> None:
        super().__init__()
        self.joint, self.sign, self.done, self.lead = joint, float(sign), done, lead
        self.extra, self.max_steps, self.stall_steps = extra_steps, max_steps, stall_steps
        self.release_steps = release_steps
        self.after = 0
        self.stuck = False

    def start(self, scene: E.Scene) -> None:
        jid = scene.model.joint_name2id(self.joint)
        self.axis = np.array(scene.data.xaxis[jid])
        self.anchor = np.array(scene.data.xanchor[jid])
        self.q0 = scene.joint_q(self.joint)
        self.p0 = scene.eef_pos
        self.r0 = scene.eef_mat
        self.qs: list[float] = []

    def step(self, scene: E.Scene, lim: E.Limits) -> np.ndarray | None:
        q = scene.joint_q(self.joint)
        self.qs.append(q)
        if self.done(scene) or self.after > self.extra:
            self.after += 1
            if self.after > self.extra + self.release_steps:
                return None
        n = self.stall_steps
        stalled = len(self.qs) > n and abs(self.qs[-1] - self.qs[-1 - n]) < 0.01
        if self.t >= self.max_steps or (stalled and not self.done(scene)):
            self.stuck = True
            return None
        self.t += 1
        rot = axis_rotation(self.axis, q - self.q0 + self.sign * self.lead)
        goal_pos = self.anchor + rot @ (self.p0 - self.anchor)
        goal_rot = rot @ self.r0
        rot_a, _ = E._rot_action(goal_rot, scene.eef_mat, lim)
        pos_a = E._pos_action(goal_pos - scene.eef_pos, lim)
        return np.concatenate([pos_a, rot_a, [-1.0 if self.after > self.extra else 1.0]])


# ----------------------------------------------------------------------------------------------------------
# Knob plans (TurnOn / TurnOff)
# ----------------------------------------------------------------------------------------------------------


def _knob_grasp(scene: E.Scene, joint: str, spec: KnobSpec) -> tuple[np.ndarray, np.ndarray]:
    """Grip point on the knob axis and the finger axis across the lever (the knob's tall geoms)."""
    m, d = scene.model, scene.data
    jid = m.joint_name2id(joint)
    axis = np.array(d.xaxis[jid])
    if abs(axis[2]) < 0.95:
        raise NotImplementedError(f"knob joint {joint} is not vertical")
    body = int(m.jnt_bodyid[jid])
    geoms = scene.subtree_geoms(body)
    tops = {g: float(scene.geoms_aabb([g])[1][2]) for g in geoms}
    base_top = min(tops.values())
    lever = [g for g, z in tops.items() if z > base_top + 0.01] or geoms
    lo, hi = _local_box(scene, body, lever)
    ext = hi - lo
    rb = np.array(d.xmat[body]).reshape(3, 3)
    # local axis of the hinge, then the longer of the two local axes across it = the lever direction
    local_axis = rb.T @ axis
    across = [k for k in range(3) if k != int(np.argmax(np.abs(local_axis)))]
    k = max(across, key=lambda i: ext[i])
    lever_dir = E._horizontal(rb[:, k])
    finger = E._horizontal(np.cross(axis, lever_dir))
    lever_top = max(tops[g] for g in lever)
    other_top = max([tops[g] for g in geoms if g not in lever], default=base_top)
    z = max(lever_top - spec.grip_depth, other_top + spec.finger_clear)
    anchor = np.array(d.xanchor[jid])
    return np.array([anchor[0], anchor[1], z]), finger


def _wrist_yaw_room(scene: E.Scene) -> tuple[float, float, float]:
    """(q, lo, hi) of the arm's last joint, which turns the hand about its approach axis.

    With the hand pointing down, a world +z yaw of the hand lowers this joint by about as much.
    """
    m = scene.model
    name = scene.robot.robot_joints[-1]
    lo, hi = m.jnt_range[m.joint_name2id(name)]
    return scene.joint_q(name), float(lo), float(hi)


def _choose_finger(scene: E.Scene, finger: np.ndarray, turn_yaw: float, margin: float = 0.4) -> np.ndarray:
    """Of the two symmetric grasps (+/- finger axis), the one whose wrist stays inside its joint range
    through alignment and the whole turn (`turn_yaw`, world z), then the one needing less rotation.

    The nearest grasp can leave no room for a long turn: turning a knob off from q = 1.86 after the
    nearest alignment asked the wrist for ~3.1 rad, past its limit, and the hand tilted instead.
    """
    q7, lo, hi = _wrist_yaw_room(scene)
    cur = scene.eef_mat[:, 0]
    best: tuple[float, float] | None = None
    out = finger
    for f in (finger, -finger):
        a = float(np.arctan2(cur[0] * f[1] - cur[1] * f[0], cur @ f))  # yaw from current finger axis to f
        ends = (q7 - a, q7 - a - turn_yaw)
        room = min(min(e - lo, hi - e) for e in ends)
        score = (min(room, margin), -abs(a))
        if best is None or score > best:
            best, out = score, f
    return out


def move_exact(
    name: str, target: E.Target, finger_axis: E.Target, gripper: float, **kw: object
) -> E.MovePose:
    """The core MovePose pointing down with exactly the given finger axis (MoveTo takes the nearer of +/-)."""
    return E.MovePose(name, target, lambda s: E.down_rotation(finger_axis(s)), gripper, **kw)  # type: ignore[arg-type]


def plan_turn_knob(ex: E.Expert, scene: E.Scene, obj: str, on: bool) -> list[E.Skill]:
    """Grasp the lever over the knob axis, turn the wrist until (TurnOn|TurnOff obj) holds, release, lift."""
    joints = hinge_joints(scene, obj)
    if not joints:
        raise NotImplementedError(f"no expert plan for turning {obj}: it has no hinge joint")
    art = scene.inner.get_object(obj).object_properties["articulation"]
    state = scene.inner.object_states_dict[obj]
    spec = E.spec_for(KNOB_SPECS, ex.categories.get(obj, ""), DEFAULT_KNOB)
    if on:
        # TurnOn holds when any joint reaches min(turnon range): turn the first one past it
        q_goal = min(art["default_turnon_ranges"]) + spec.overshoot
        todo = joints[:1]

        def done(s: E.Scene) -> bool:
            return bool(state.turn_on())
    else:
        # TurnOff holds when every joint is below max(turnoff range)
        q_off = max(art["default_turnoff_ranges"])
        todo = [j for j in joints if scene.joint_q(j) >= q_off] or joints[:1]
        q_goal = q_off - spec.overshoot

        def done(s: E.Scene) -> bool:
            return bool(state.turn_off())

    skills: list[E.Skill] = []
    for joint in todo:
        grip, finger = _knob_grasp(scene, joint, spec)
        dq = q_goal - scene.joint_q(joint)
        sign = float(np.sign(dq)) or 1.0
        jid = scene.model.joint_name2id(joint)
        finger = _choose_finger(scene, finger, dq * float(scene.data.xaxis[jid][2]))

        def axis_fn(s: E.Scene, f: np.ndarray = finger) -> np.ndarray:
            return f

        hover = grip + np.array([0.0, 0.0, 0.045])  # open fingertips ~2 cm above the lever
        skills += [
            move_exact("approach", lambda s, p=hover: p, axis_fn, gripper=-1.0, tol=0.012),
            move_exact("descend", lambda s, p=grip: p, axis_fn, gripper=-1.0, tol=0.004, stop_on_stall=True),
            E.Gripper("grasp_knob", close=True),
            TurnGrasped(
                joint,
                sign,
                done,
                lead=spec.lead,
                extra_steps=spec.extra_steps,
                release_steps=spec.release_steps,
            ),
            Lift("retreat", 0.08),
        ]
    return skills


class Lift(E.Skill):
    """Straight up with the gripper open and the wrist held where it is (zero rotation action).

    Holding the wrist (rather than re-aiming it at a down pose) keeps the hand from twisting a part it
    has just let go of.
    """

    def __init__(self, name: str, dz: float, tol: float = 0.01, max_steps: int = 30) -> None:
        super().__init__()
        self.name, self.dz, self.tol, self.max_steps = name, dz, tol, max_steps

    def start(self, scene: E.Scene) -> None:
        self.goal = scene.eef_pos + np.array([0.0, 0.0, self.dz])

    def step(self, scene: E.Scene, lim: E.Limits) -> np.ndarray | None:
        err = self.goal - scene.eef_pos
        if np.linalg.norm(err) < self.tol or self.t >= self.max_steps:
            return None
        self.t += 1
        return np.concatenate([E._pos_action(err, lim), np.zeros(3), [-1.0]])


def plan_turnon(ex: E.Expert, scene: E.Scene, args: tuple[str, ...]) -> list[E.Skill]:
    return plan_turn_knob(ex, scene, args[0], on=True)


def plan_turnoff(ex: E.Expert, scene: E.Scene, args: tuple[str, ...]) -> list[E.Skill]:
    return plan_turn_knob(ex, scene, args[0], on=False)
