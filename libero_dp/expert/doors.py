"""Hinged doors for the scripted expert (microwave): planners for (Open/Close <door object>); the
package's dispatcher sends open/close goals here when `has_hinge` says the object moves on a hinge.

Close pushes the door's outer face round the hinge with the closed fingers (PushArc); Open pulls the handle
part way (`hinges.TurnGrasped`), then pushes the inner face the rest of the way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from libero_dp.expert import core as E
from libero_dp.expert.hinges import (
    MJ_HINGE,
    Lift,
    TurnGrasped,
    _choose_finger,
    _local_box,
    axis_rotation,
    hinge_joints,
    move_exact,
)

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


def _hinge(ex: E.Expert, scene: E.Scene, name: str, verb: str) -> tuple[str, str, dict, DoorSpec]:
    """(object, its first hinge joint, its articulation properties, its DoorSpec) for a door to `verb`."""
    obj, joints = _door_joints(scene, name)
    if not joints:
        raise NotImplementedError(f"no hinge to {verb} on {name}")
    art = scene.inner.get_object(obj).object_properties["articulation"]
    return obj, joints[0], art, E.spec_for(DOOR_SPECS, ex.categories.get(obj, ""), DEFAULT_DOOR)


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
    obj, joint, art, spec = _hinge(ex, scene, name, "close")
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
    obj, joint, art, spec = _hinge(ex, scene, name, "open")
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
