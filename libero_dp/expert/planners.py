"""Goal predicate -> plan: which skill module handles which goal (filled into core.PLANNERS on import).

(On|In obj target)   pick and place: books (caddy compartments, shelf slots), objects with handles or wide
                     rims (pans, mugs, moka pots) and table regions (objects), everything else (pick_place).
(Open|Close x)       hinged doors (hinges) or slide-jointed drawers (drawers), by the joint that moves;
                     a drawer opens by a pinch of its handle, or by a hook where the handle is too low.
(Turnon|Turnoff x)   stove knobs (hinges).
"""

from __future__ import annotations

from libero_dp.expert import (
    books,
    cavity,
    doors,
    drawer_room,
    drawers,
    hinges,
    object_grasps,
    objects,
    pick_place,
)
from libero_dp.expert import core as E
from libero_dp.expert.core import order_goals


def _place_plan(
    scene: E.Scene,
    obj: str,
    target: str,
    spec: E.GraspSpec,
    slot: tuple[int, int] = (0, 1),
    exposed: bool = False,
    inside: bool = True,
) -> list[E.Skill]:
    """The pick-and-place plan for one object and target, from the resting scene (`slot`: this object's
    share of a region that several goals fill, see objects.plan_pick_place)."""
    if books.is_book(spec):
        plan = books.plan_book(scene, obj, target, spec)
        if plan is not None:
            return plan
    if cavity.applies(scene, obj, target, spec):
        return cavity.plan(scene, obj, target, spec)
    inner = scene.inner
    is_site = target in inner.object_sites_dict and target not in inner.obj_body_id
    table_region = is_site and not inner.object_sites_dict[target].parent_name
    if isinstance(spec, objects.ObjGraspSpec) or table_region:
        return objects.plan_pick_place(scene, obj, target, spec, slot=slot, inside=inside)
    plan = pick_place.plan_pick_place(scene, obj, target, spec, exposed=exposed, inside=inside)
    return pick_place.fast(plan)


def closed_region(scene: E.Scene, target: str) -> bool:
    """A region of an articulated part (a drawer, a door) that is closed now: nothing can go in before it
    opens, and a goal may ask only for the object inside (libero_goal's "open the top drawer and put the
    bowl inside" is just (In bowl top_region))."""
    site_obj = scene.inner.object_sites_dict.get(target)
    state = scene.inner.object_states_dict.get(target)
    if not getattr(site_obj, "joints", None) or not hasattr(state, "is_open"):
        return False
    return not state.is_open()


def plan_place(ex: E.Expert, scene: E.Scene, args: tuple[str, ...]) -> list[E.Skill]:
    """(On obj target) / (In obj region): open the region first if it is closed, wait for the objects to
    rest, then plan from their resting poses."""
    obj, target = args
    inside = ("on", obj, target) not in ex.goal  # an (In ..) goal: a tall object may be laid down
    partly = closed_region(scene, target) and not doors.has_hinge(scene, target)
    opening = plan_open(ex, scene, (target,)) if closed_region(scene, target) and not partly else []
    if partly:  # a closed drawer: opened just enough for the object, which then goes into the open part
        opening = drawers.plan_open_drawer(scene, target, fit=obj)
    elif not closed_region(scene, target) and drawer_room.room_short(scene, target, obj) > 0.0:
        opening, partly = drawer_room.plan_widen(scene, target, obj), True  # an open drawer, too short
    ex._obj = obj
    spec = E.spec_for(E.GRASP_SPECS, ex.categories.get(obj, ""), E.DEFAULT_GRASP)

    sharing = [g[1] for g in order_goals(ex.goal) if g[0] in ("on", "in") and len(g) == 3 and g[2] == target]
    slot = (sharing.index(obj), len(sharing)) if obj in sharing else (0, 1)

    def build(s: E.Scene) -> list[E.Skill]:
        ex._obj_z0 = float(s.body_pos(obj)[2])
        return _place_plan(s, obj, target, spec, slot, exposed=partly, inside=inside)

    return [*opening, pick_place.Settle(ex, build)]


def plan_open(ex: E.Expert, scene: E.Scene, args: tuple[str, ...]) -> list[E.Skill]:
    if doors.has_hinge(scene, args[0]):
        return doors.plan_open_hinge(ex, scene, args[0])
    return drawers.plan_open_drawer(scene, args[0])


def plan_close(ex: E.Expert, scene: E.Scene, args: tuple[str, ...]) -> list[E.Skill]:
    if doors.has_hinge(scene, args[0]):
        return doors.plan_close_hinge(ex, scene, args[0])
    return drawers.plan_close_drawer(scene, args[0])


E.GRASP_SPECS.update(object_grasps.OBJECT_SPECS)
E.GRASP_SPECS.update(books.BOOK_SPECS)
E.PLANNERS.update(
    {
        "on": plan_place,
        "in": plan_place,
        "open": plan_open,
        "close": plan_close,
        "turnon": hinges.plan_turnon,
        "turnoff": hinges.plan_turnoff,
    }
)
