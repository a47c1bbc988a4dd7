"""Revolute-joint articulation for the scripted expert: stove knobs (TurnOn / TurnOff) and hinged doors.

Planners for (Turnon/Turnoff <stove>) and (Open/Close <door object>); the package's dispatcher sends
open/close goals here when the object moves on a hinge.

Knob: grasp the knob's lever across its width with the grip site on the knob axis, then turn the wrist
about the axis until LIBERO's predicate holds (a grasped lever follows the hand in both directions, unlike
a sideways push that slips off the lever's end), release and lift.

Door (microwave): Close pushes the door's outer face round the hinge with the closed fingers (PushArc);
Open pulls the handle part way (TurnGrasped), then pushes the inner face the rest of the way.
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


# ----------------------------------------------------------------------------------------------------------
# Hinged doors (Open / Close)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoorSpec:
    """How to push a hinged door.

    push_frac: contact point's distance from the hinge as a fraction of the door's width (nearer the
    hinge = a shorter arc; damping is all that resists); below_top: grip site below the door's top edge,
    so the palm, which sticks out ~2.5 cm past the closed fingers, passes over the door; standoff: grip
    site to the closed fingers' outer face; lead: how far ahead of the door the hand is aimed (m, along
    the arc; a lead of 3 cm saturates the position action).
    """

    push_frac: float = 0.4
    below_top: float = 0.015
    standoff: float = 0.014
    lead: float = 0.04
    extra_steps: int = 4
    open_overshoot: float = 0.2
    pull_frac: float = 0.45
    palm_clear: float = 0.006


DOOR_SPECS: dict[str, DoorSpec] = {"microwave": DoorSpec()}
DEFAULT_DOOR = DoorSpec()


@dataclass
class DoorFrame:
    """A door's geometry at plan time: hinge anchor/axis, radial direction (hinge to free edge),
    normal n = axis x radial (the direction a point of the door moves as q grows), panel extents."""

    joint: str
    body: int
    anchor: np.ndarray
    axis: np.ndarray
    radial: np.ndarray
    normal: np.ndarray
    width: float
    n_lo: float
    n_hi: float
    top: float


def door_frame(scene: E.Scene, joint: str) -> DoorFrame:
    """Door geometry from its largest collision geom (the panel), in world coordinates."""
    m, d = scene.model, scene.data
    jid = m.joint_name2id(joint)
    axis = np.array(d.xaxis[jid])
    if abs(axis[2]) < 0.95:
        raise NotImplementedError(f"door joint {joint} is not vertical")
    anchor = np.array(d.xanchor[jid])
    body = int(m.jnt_bodyid[jid])
    geoms = scene.subtree_geoms(body)
    panel = max(geoms, key=lambda g: float(np.prod(m.geom_aabb[g, 3:])))
    lo, hi = _local_box(scene, body, [panel])
    rb, pb = np.array(d.xmat[body]).reshape(3, 3), np.array(d.xpos[body])
    corners = np.array(
        [
            pb + rb @ np.array([x, y, z])
            for x in (lo[0], hi[0])
            for y in (lo[1], hi[1])
            for z in (lo[2], hi[2])
        ]
    )
    # radial = the panel's long axis across the hinge (not the direction to its centre: the panel is
    # offset from the hinge line by its thickness), pointing from the hinge to the free edge
    local_axis = rb.T @ axis
    k = max((i for i in range(3) if i != int(np.argmax(np.abs(local_axis)))), key=lambda i: hi[i] - lo[i])
    radial = E._horizontal(rb[:, k])
    if (corners.mean(axis=0) - anchor) @ radial < 0:
        radial = -radial
    normal = np.cross(axis, radial)
    rel = corners - anchor
    return DoorFrame(
        joint=joint,
        body=body,
        anchor=anchor,
        axis=axis,
        radial=radial,
        normal=normal,
        width=float(np.max(rel @ radial)),
        n_lo=float(np.min(rel @ normal)),
        n_hi=float(np.max(rel @ normal)),
        top=float(np.max(corners[:, 2])),
    )


def _door_pose(scene: E.Scene, body: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array(scene.data.xpos[body]), np.array(scene.data.xmat[body]).reshape(3, 3)


class PushArc(E.Skill):
    """Push a hinged part along its arc with the closed fingers until `done` holds (then `extra_steps`).

    The hand's target is a point fixed in the door's frame (on the pushed face, `standoff` off it),
    carried `lead` rad further round the hinge: the hand presses the face and follows it round. The
    finger axis follows the door's radial direction (the palm's long side along the door). `stuck` is
    set when the joint stops moving or `max_steps` runs out.
    """

    name = "push_arc"

    def __init__(
        self,
        scene: E.Scene,
        frame: DoorFrame,
        contact: np.ndarray,
        sign: float,
        turn: float,
        done: Callable[[E.Scene], bool],
        lead: float,
        extra_steps: int = 4,
        max_steps: int = 150,
        stall_steps: int = 15,
    ) -> None:
        super().__init__()
        self.f, self.sign, self.turn, self.done = frame, sign, turn, done
        self.lead, self.extra, self.max_steps, self.stall_steps = lead, extra_steps, max_steps, stall_steps
        # the contact point and the door's axes in the door's own frame (valid however it turns later)
        pb, rb = _door_pose(scene, frame.body)
        self.local = rb.T @ (contact - pb)
        self._radial_local = rb.T @ frame.radial
        self._normal_local = rb.T @ frame.normal
        self.fsign: float | None = None
        self.after = 0
        self.stuck = False
        self.qs: list[float] = []
        self.hand: list[np.ndarray] = []

    def target(self, scene: E.Scene, lead: float) -> tuple[np.ndarray, np.ndarray]:
        """Hand position and finger axis for the door as it is now, turned `lead` further.

        The finger sign (of the two symmetric grasps) is chosen on first use, from the wrist's room for
        the turn still to come (see _choose_finger)."""
        pb, rb = _door_pose(scene, self.f.body)
        rot = axis_rotation(self.f.axis, self.sign * lead)
        p = self.f.anchor + rot @ (pb + rb @ self.local - self.f.anchor)
        radial = E._horizontal(rot @ rb @ self._radial_local)
        if self.fsign is None:
            self.fsign = float(np.sign(_choose_finger(scene, radial, self.turn) @ radial)) or 1.0
        return p, self.fsign * radial

    def push_dir(self, scene: E.Scene) -> np.ndarray:
        """The direction the pushed face moves now (horizontal)."""
        _, rb = _door_pose(scene, self.f.body)
        return self.sign * E._horizontal(rb @ self._normal_local)

    def step(self, scene: E.Scene, lim: E.Limits) -> np.ndarray | None:
        q = scene.joint_q(self.f.joint)
        self.qs.append(q)
        self.hand.append(scene.eef_pos)
        if self.done(scene):
            self.after += 1
            if self.after > self.extra:
                return None
        n = self.stall_steps
        # stuck = neither the door nor the hand moves (the hand closes a gap before it touches the door)
        stalled = (
            len(self.qs) > n
            and abs(self.qs[-1] - self.qs[-1 - n]) < 0.01
            and float(np.linalg.norm(self.hand[-1] - self.hand[-1 - n])) < 0.01
        )
        if self.t >= self.max_steps or (stalled and not self.done(scene)):
            self.stuck = True
            return None
        self.t += 1
        p, finger = self.target(scene, self.lead)
        rot_a, _ = E._rot_action(E.down_rotation(finger), scene.eef_mat, lim)
        return np.concatenate([E._pos_action(p - scene.eef_pos, lim), rot_a, [1.0]])


class Retreat(E.Skill):
    """Move by a fixed offset with the wrist held (zero rotation action) and the gripper as given."""

    def __init__(
        self,
        name: str,
        offset: Callable[[E.Scene], np.ndarray],
        gripper: float = -1.0,
        tol: float = 0.01,
        max_steps: int = 30,
    ) -> None:
        super().__init__()
        self.name, self.offset, self.gripper, self.tol, self.max_steps = name, offset, gripper, tol, max_steps

    def start(self, scene: E.Scene) -> None:
        self.goal = scene.eef_pos + self.offset(scene)

    def step(self, scene: E.Scene, lim: E.Limits) -> np.ndarray | None:
        err = self.goal - scene.eef_pos
        if np.linalg.norm(err) < self.tol or self.t >= self.max_steps:
            return None
        self.t += 1
        return np.concatenate([E._pos_action(err, lim), np.zeros(3), [self.gripper]])


def _door_joints(scene: E.Scene, name: str) -> tuple[str, list[str]]:
    """(object name, hinge joints) for a bddl object or a region of one."""
    site = scene.inner.object_sites_dict.get(name)
    if site is not None and name not in scene.inner.obj_body_id:
        joints = list(getattr(site, "joints", None) or [])
        m = scene.model
        return site.parent_name, [j for j in joints if int(m.jnt_type[m.joint_name2id(j)]) == MJ_HINGE]
    return name, hinge_joints(scene, name)


def _door_state(scene: E.Scene, name: str, opening: bool) -> Callable[[E.Scene], bool]:
    state = scene.inner.object_states_dict[name]
    if opening:
        return lambda s: bool(state.is_open())
    return lambda s: bool(state.is_close())


def _push_arc_skills(
    scene: E.Scene, fr: DoorFrame, spec: DoorSpec, sign: float, q_goal: float, done: Callable[[E.Scene], bool]
) -> list[E.Skill]:
    """Approach a door face (from 3 cm off it, at the push height), push it round the hinge, back off.

    Targets are read from the door's pose when each skill starts, so these skills may follow others
    that move the door."""
    # the face the hand pushes: the one facing away from the push direction sign * normal
    face = fr.n_lo - spec.standoff if sign > 0 else fr.n_hi + spec.standoff
    radius = spec.push_frac * fr.width
    contact = fr.anchor + radius * fr.radial + face * fr.normal
    contact[2] = fr.top - spec.below_top
    turn = (q_goal - scene.joint_q(fr.joint)) * float(fr.axis[2])
    push = PushArc(scene, fr, contact, sign, turn, done, spec.lead / radius, extra_steps=spec.extra_steps)

    def pre(s: E.Scene) -> np.ndarray:
        p, _ = push.target(s, 0.0)
        return p - 0.03 * push.push_dir(s)

    def axis_fn(s: E.Scene) -> np.ndarray:
        return push.target(s, 0.0)[1]

    def back(s: E.Scene) -> np.ndarray:
        return -0.05 * push.push_dir(s) + np.array([0.0, 0.0, 0.03])

    return [
        move_exact(
            "approach", lambda s: pre(s) + np.array([0.0, 0.0, 0.03]), axis_fn, gripper=1.0, tol=0.015
        ),
        move_exact("descend", pre, axis_fn, gripper=1.0, tol=0.006),
        push,
        Retreat("retreat", back, gripper=1.0),
    ]


def plan_close_hinge(ex: E.Expert, scene: E.Scene, name: str) -> list[E.Skill]:
    """Close a hinged door: approach its outer face, push it round the hinge to the stop, back off."""
    obj, joints = _door_joints(scene, name)
    if not joints:
        raise NotImplementedError(f"no hinge to close on {name}")
    joint = joints[0]
    art = scene.inner.get_object(obj).object_properties["articulation"]
    spec = E.spec_for(DOOR_SPECS, ex.categories.get(obj, ""), DEFAULT_DOOR)
    q_goal = max(art["default_close_ranges"])
    sign = float(np.sign(q_goal - scene.joint_q(joint))) or 1.0
    fr = door_frame(scene, joint)
    return _push_arc_skills(scene, fr, spec, sign, q_goal, _door_state(scene, obj, opening=False))


def _handle_grasp(scene: E.Scene, fr: DoorFrame, palm_clear: float) -> tuple[np.ndarray, list[int]]:
    """Grip point on a door's handle: the centre of the door geom (other than the panel) that stands
    furthest off the panel, at a height where the palm (~2.4 cm above the grip site) clears the handle."""
    m = scene.model
    geoms = scene.subtree_geoms(fr.body)
    panel = max(geoms, key=lambda g: float(np.prod(m.geom_aabb[g, 3:])))
    others = [g for g in geoms if g != panel]
    if not others:
        raise NotImplementedError(f"door {fr.joint} has no handle geom")
    mid = 0.5 * (fr.n_lo + fr.n_hi)

    def off(g: int) -> float:
        lo, hi = scene.geoms_aabb([g])
        return abs(float(((lo + hi) / 2.0 - fr.anchor) @ fr.normal) - mid)

    bar = max(others, key=off)
    lo, hi = scene.geoms_aabb([bar])
    top = float(scene.geoms_aabb(others)[1][2])
    centre = (lo + hi) / 2.0
    return np.array([centre[0], centre[1], top + palm_clear - 0.024]), others


def plan_open_hinge(ex: E.Expert, scene: E.Scene, name: str) -> list[E.Skill]:
    """Open a hinged door: pull it part way by its handle, then push its inner face the rest of the way.

    The handle is grasped from above (fingers across the bar, along the door) and carried round the
    hinge (TurnGrasped) for `pull_frac` of the travel. Pulling all the way failed: the microwave's
    handle stands 5 cm off the door, and at q = -1.3 (Open's threshold) it is at the arm's reach
    limit. Pushing the inner face near the door's middle finishes 5 cm nearer the robot."""
    obj, joints = _door_joints(scene, name)
    if not joints:
        raise NotImplementedError(f"no hinge to open on {name}")
    joint = joints[0]
    art = scene.inner.get_object(obj).object_properties["articulation"]
    spec = E.spec_for(DOOR_SPECS, ex.categories.get(obj, ""), DEFAULT_DOOR)
    q0 = scene.joint_q(joint)
    q_goal = max(art["default_open_ranges"]) - spec.open_overshoot
    if min(art["default_open_ranges"]) > q0:  # opening means increasing q
        q_goal = min(art["default_open_ranges"]) + spec.open_overshoot
    sign = float(np.sign(q_goal - q0)) or 1.0
    fr = door_frame(scene, joint)
    grip, _ = _handle_grasp(scene, fr, spec.palm_clear)
    finger = _choose_finger(scene, fr.radial, (q_goal - q0) * float(fr.axis[2]))
    done = _door_state(scene, obj, opening=True)
    radius = float(np.linalg.norm((grip - fr.anchor)[:2]))

    def axis_fn(s: E.Scene) -> np.ndarray:
        return finger

    q_switch = q0 + spec.pull_frac * (q_goal - q0)

    def pulled(s: E.Scene) -> bool:
        return bool(done(s) or sign * (s.joint_q(joint) - q_switch) >= 0)

    return [
        move_exact("approach", lambda s: grip + np.array([0.0, 0.0, 0.05]), axis_fn, gripper=-1.0, tol=0.01),
        move_exact("descend", lambda s: grip, axis_fn, gripper=-1.0, tol=0.004, stop_on_stall=True),
        E.Gripper("grasp_handle", close=True),
        TurnGrasped(joint, sign, pulled, lead=spec.lead / radius, extra_steps=0, max_steps=120),
        Lift("lift", 0.04),
        *_push_arc_skills(scene, fr, spec, sign, q_goal, done),
    ]


# ----------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------


def has_hinge(scene: E.Scene, name: str) -> bool:
    """Whether the goal's object (or region) moves on a hinge (a door), not on a slide (a drawer)."""
    return bool(_door_joints(scene, name)[1])
