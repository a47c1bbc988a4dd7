"""Scripted privileged-state expert for LIBERO, organised by skill.

The plan is read from the task's bddl goal (never from the sentence), one planner per goal predicate:

core           grasp data, the Expert that runs one plan per goal in a feasible order, run_episode
scene          privileged scene access (live poses, boxes, obstacles), rotation helpers
skills         motion skills (move with a free-space speed profile, move to a pose, grip, push a joint)
grasp_choice   where to grip a free object (clearance, reach, turn; a turned descent under overhangs)
pick_place     settle, hover/descend/grasp/lift/carry/lower/release/retreat, free-space speed (`fast`)
object_grasps  grasp modes and data for handles and wide rims (pans, mugs, moka pots): OBJECT_SPECS
objects        those objects' pick-and-place, table regions, a spot each for objects sharing a region
shelves        a pan slid into a closed shelf layer, a bottle laid on a sloped rack board
books          books into caddy compartments (and which book plan applies)
book_slots     books into shelf layers from the open side; the slot geometry other insertions share
book_frame     a book's box frame and grasp, the In() check, a hold skill
drawers        open (pinch-pull, or hook-pull under a low handle) and close (push) slide-jointed drawers
drawer_skills  the drawer moves: wrist-side pose, pull a grasped handle, push holding a pose
hinges         stove knobs (grasp and turn), and the hinge geometry the doors share
doors          hinged doors (push / pull along the arc)
planners       which module handles which goal (fills core.PLANNERS)

Per-object grasp parameters are data (GRASP_SPECS, OBJECT_SPECS, BOOK_SPECS, KNOB_SPECS, DOOR_SPECS).
"""

from libero_dp.expert import planners as _planners  # noqa: F401 (registers the planners)
from libero_dp.expert.core import (
    FAILURE_CAUSES,
    GRASP_SPECS,
    NOOP,
    PLANNERS,
    Expert,
    GraspSpec,
    Scene,
    family_of,
    make_expert,
    order_goals,
    parse_categories,
    parse_goal,
    run_episode,
    task_family,
)

__all__ = [
    "FAILURE_CAUSES",
    "GRASP_SPECS",
    "NOOP",
    "PLANNERS",
    "Expert",
    "GraspSpec",
    "Scene",
    "family_of",
    "make_expert",
    "order_goals",
    "parse_categories",
    "parse_goal",
    "run_episode",
    "task_family",
]
