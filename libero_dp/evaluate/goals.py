"""Why a failed episode failed, read from the final sim state against the task's goal predicates.

The coarse labels of episode.py come from the hand (never closed, stuck, moving until time ran out); at
scale the useful split is what happened to the objects: the goal's object was moved but did not end where the
goal wants it (`right_object_wrong_place`: a placement, a drop), or the goal's object stayed put while
another object moved (`wrong_object_moved`: the policy acted on the wrong thing, often the task the scene
also affords). An object "moved" when its body travelled more than MOVED_M between the first recorded state
(after the wait steps) and the last. The goal's objects are the first arguments of its On/In predicates.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from libero_dp import sim
from libero_dp.bddl import parse_goal

MOVED_M = 0.03
LABELS = ("right_object_wrong_place", "wrong_object_moved")


@lru_cache(maxsize=256)
def goal_objects(bddl_file: str) -> tuple[str, ...]:
    """Objects the goal wants placed (first argument of On / In); none for articulation-only goals."""
    try:
        goal = parse_goal(Path(bddl_file).read_text())
    except (OSError, ValueError):
        return ()
    return tuple(sorted({p[1] for p in goal if p[0] in ("on", "in") and len(p) > 2}))


def object_positions(env: Any, state: np.ndarray) -> dict[str, np.ndarray]:
    """World positions of the scene's movable objects (not fixtures) in a flattened sim state."""
    sim.set_state(env, state)
    inner = env.env
    return {
        n: np.array(env.sim.data.xpos[inner.obj_body_id[n]])
        for n in inner.objects_dict
        if n in inner.obj_body_id
    }


def goal_failure(env: Any, task: sim.TaskSpec, states: np.ndarray) -> tuple[str | None, list[str]]:
    """(label or None, the objects that moved) for a failed episode's first and last states."""
    first, last = object_positions(env, states[0]), object_positions(env, states[-1])
    moved = sorted(n for n in first if n in last and float(np.linalg.norm(last[n] - first[n])) > MOVED_M)
    targets = set(goal_objects(task.bddl_file))
    if targets & set(moved):
        return "right_object_wrong_place", moved
    if moved:
        return "wrong_object_moved", moved
    return None, moved
