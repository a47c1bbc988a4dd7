"""Scripted expert in the real simulator (state-only, a few episodes): the demos' source must work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from libero_dp import sim
from libero_dp.expert import family_of, make_expert, order_goals, parse_goal, run_episode, task_family

DRAWER = "libero_90:0"  # (Close wooden_cabinet_1_top_region)
PICK_PLACE = "libero_90:9"  # (On akita_black_bowl_1 plate_1)


def _run(task_sel: str, init_ids: list[int], top_action: float = 1.0) -> list[dict]:
    task = sim.resolve_tasks(task_sel)[0]
    env = sim.make_env(task, render=False)
    expert = make_expert(task, top_action=top_action)
    inits = sim.official_init_states(task)
    out = []
    try:
        for k in init_ids:
            actions: list[np.ndarray] = []

            def record(i: int, s: object, a: np.ndarray, o: object, d: bool, acc: list = actions) -> None:
                if i >= 0:  # negative indices are the wait steps
                    acc.append(a)

            r = run_episode(env, task, expert, k, inits[k], 400, on_step=record)
            r["actions"] = np.array(actions)
            out.append(r)
    finally:
        env.close()
    return out


@pytest.mark.sim
def test_drawer_expert_closes_drawer() -> None:
    for r in _run(DRAWER, [0, 1]):
        assert r["success"] and r["final_success"], r
        assert r["failure_cause"] is None
        assert r["steps_to_success"] <= 250
        acts = r["actions"]
        assert acts.shape == (r["length"], 7)
        assert np.all(np.abs(acts) <= 1.0)
        _assert_smooth(acts)


def _assert_smooth(acts: np.ndarray) -> None:
    """Slew limits hold at every step, phase handovers included (the cap is applied before the slew):
    position components change by at most 0.08 per step, rotation components by at most 0.25."""
    step = np.abs(np.diff(acts, axis=0))
    assert step[:, :3].max() <= 0.08 + 1e-9
    assert step[:, 3:6].max() <= 0.25 + 1e-9


@pytest.mark.sim
def test_pick_place_expert_puts_bowl_on_plate() -> None:
    (r,) = _run(PICK_PLACE, [0])
    assert r["success"] and r["final_success"], r
    grip = r["actions"][:, 6]
    assert grip.max() == 1.0 and grip[-1] == -1.0  # grasped, then released


def test_goal_parsing() -> None:
    text = "(define (problem p) (:goal (And (On akita_black_bowl_1 plate_1) (Close c_1_top_region))))"
    assert parse_goal(text) == [("on", "akita_black_bowl_1", "plate_1"), ("close", "c_1_top_region")]


def test_goal_order_and_families() -> None:
    two = [("on", "bowl_1", "bowl_2"), ("in", "bowl_2", "tray_region")]
    assert order_goals(two) == [two[1], two[0]]  # the supporting bowl goes into the tray first
    drawer = [("in", "butter_1", "cab_top_region"), ("close", "cab_top_region")]
    assert order_goals(drawer) == drawer  # close the drawer after putting something in it
    oven = [("in", "mug_1", "microwave_1_heating_region"), ("close", "microwave_1")]
    assert order_goals(oven) == oven  # close the microwave (an object) after filling its region
    assert order_goals(oven[::-1]) == oven
    assert order_goals([("on", "pot_1", "stove_1_cook_region"), ("turnon", "stove_1")])[0][0] == "turnon"
    cats = {"akita_black_bowl_1": "akita_black_bowl", "akita_black_bowl_2": "akita_black_bowl"}
    assert task_family([("on", "akita_black_bowl_1", "akita_black_bowl_2")], cats) == "stack"
    assert task_family([("on", "mug_1", "kitchen_table_plate_right_region")], {}) == "relative_placement"
    assert task_family([("in", "book_1", "desk_caddy_1_left_contain_region")], {}) == "into_caddy"
    assert task_family([("open", "microwave_1")], {}) == "microwave"


def test_libero90_families_from_bddl() -> None:
    """The 90 tasks fall into the 12 skill families with the counts read from the bddl goals."""
    from collections import Counter

    counts = Counter(family_of(t) for t in sim.resolve_tasks("libero_90"))
    assert counts == {
        "onto_object": 22,
        "two_goal": 10,
        "into_caddy": 10,
        "into_basket": 9,
        "into_tray": 8,
        "drawer_articulation": 7,
        "relative_placement": 7,
        "into_drawer": 5,
        "into_shelf": 5,
        "stove": 3,
        "stack": 2,
        "microwave": 2,
    }


# one task per skill family that needs a skill of its own (the placement families share pick_place)
FAMILY_TASKS = {
    "stove (grasp and turn the knob)": "libero_90:20",
    "microwave close (push the door along its arc)": "libero_90:33",
    "microwave open (pull the handle, push the inner face)": "libero_90:35",
    "drawer open (pinch and pull the handle)": "libero_90:7",
    "bottom drawer open (hook the low handle and pull)": "libero_90:6",
    "book into a caddy compartment": "libero_90:74",
    "mug on a plate (rim grasp away from the handle)": "libero_90:67",
    "relative placement (table region)": "libero_90:69",
    "two goals: stack a bowl, both in the tray": "libero_90:63",
}


@pytest.mark.sim
@pytest.mark.parametrize("task_sel", list(FAMILY_TASKS.values()), ids=list(FAMILY_TASKS))
def test_family_expert_succeeds(task_sel: str) -> None:
    """One official init state per family (beyond those used while developing the skill: 0-19)."""
    (r,) = _run(task_sel, [21])
    assert r["success"] and r["final_success"], r
    assert np.all(np.abs(r["actions"]) <= 1.0)
    _assert_smooth(r["actions"])  # the move skills' handovers (travel -> contact) are slew-limited too


@pytest.mark.sim
def test_unsupported_goal_raises(tmp_path) -> None:
    """A goal predicate no skill handles fails loudly at construction, naming the goal."""
    text = open(sim.resolve_tasks(DRAWER)[0].bddl_file).read().replace("(Close ", "(Squash ")
    bddl = tmp_path / "squash_drawer.bddl"
    bddl.write_text(text)
    edited = dataclasses.replace(sim.resolve_tasks(DRAWER)[0], bddl_file=str(bddl))
    with pytest.raises(NotImplementedError, match=r"no expert plan for goal \(squash wooden_cabinet_1"):
        make_expert(edited)


@pytest.mark.sim
def test_expert_pace_knob_slows_every_phase() -> None:
    """collect.expert_top_action: at 0.3 no phase commands more than 0.3; slower, still a success."""
    fast = _run(DRAWER, [3], top_action=1.0)[0]
    slow = _run(DRAWER, [3], top_action=0.3)[0]
    assert fast["success"] and slow["success"]
    assert np.abs(fast["actions"][:, :3]).max() > 0.5  # the free-space speed profile is on by default
    assert np.abs(slow["actions"][:, :3]).max() <= 0.3 + 1e-9
    assert slow["steps_to_success"] > 1.4 * fast["steps_to_success"]


@pytest.mark.sim
def test_demo_ends_at_the_goal_without_the_retreat() -> None:
    """stop_at_success (collect.demo_end=goal): after the push that closes the drawer the expert holds still,
    so a recorded demo never shows the back-off a policy would copy before the drawer is shut."""
    task = sim.resolve_tasks(DRAWER)[0]
    env = sim.make_env(task, render=False)
    init = sim.official_init_states(task)[4]
    runs = {}
    try:
        for stop in (False, True):
            acts: list[np.ndarray] = []

            def rec(i: int, s: object, a: np.ndarray, o: object, d: bool, acc: list = acts) -> None:
                if i >= 0:
                    acc.append(a)

            r = run_episode(env, task, make_expert(task), 4, init, 400, on_step=rec, stop_at_success=stop)
            runs[stop] = (r, np.array(acts))
    finally:
        env.close()
    (full, a_full), (goal, a_goal) = runs[False], runs[True]
    assert full["success"] and goal["success"] and goal["final_success"]
    assert full["steps_to_success"] == goal["steps_to_success"]  # same episode up to the goal
    k = goal["steps_to_success"]
    # full plan: backs off afterwards; goal: the push's extra pressing steps (<= 4), then still for 10 steps
    assert np.abs(a_full[k:, :3]).max() > 0.2
    assert len(a_goal) <= k + 4 + 11
    push = a_goal[k - 5 : k, :3].mean(axis=0)  # the push's direction just before the goal
    assert np.all(a_goal[k:, :3] @ push >= 0.0)  # never backs off (the hold ramps down under the slew limit)
    assert np.allclose(a_goal[-5:, :6], 0.0)
    assert np.any(a_full[k:, :3] @ push < -0.05)  # the whole plan does back off


def test_pro_object_variants_resolve_to_their_base_grasp() -> None:
    """Every recoloured/rescaled object of the installed LIBERO-PRO `_object` suites that a goal moves gets
    its base object's grasp data (lengths scaled for the bigger copies), not the untested default."""
    from pathlib import Path

    from libero_dp.bddl import parse_categories
    from libero_dp.expert import core as E

    moved = set()
    for suite in ("libero_spatial_object", "libero_goal_object", "libero_10_object", "libero_object_object"):
        for task in sim.resolve_tasks(suite):
            text = Path(task.bddl_file).read_text()
            cats = parse_categories(text)
            moved |= {cats[g[1]] for g in parse_goal(text) if g[0] in ("on", "in") and g[1] in cats}
    variants = moved - set(E.GRASP_SPECS)
    assert {"black_bowl", "yellow_plate", "red_cream_cheese"} <= variants
    for cat in variants & set(E.CATEGORY_ALIASES):
        base, size = E.CATEGORY_ALIASES[cat]
        got = E.spec_for(E.GRASP_SPECS, cat, E.DEFAULT_GRASP)
        assert got is not E.DEFAULT_GRASP and got.mode == E.GRASP_SPECS[base].mode, cat
        assert got.depth == pytest.approx(E.GRASP_SPECS[base].depth * size), cat
    big = E.spec_for(E.GRASP_SPECS, "bigger_akita_black_bowl", E.DEFAULT_GRASP)
    assert big.rim_offset == pytest.approx(1.5 * E.GRASP_SPECS["akita_black_bowl"].rim_offset)
    assert E.spec_for(E.GRASP_SPECS, "no_such_object", E.DEFAULT_GRASP) is E.DEFAULT_GRASP


@pytest.mark.sim
def test_expert_moves_a_pro_replaced_object() -> None:
    """libero_spatial_object swaps the akita bowl for `black_bowl`: the expert still places it (was 10%)."""
    (r,) = _run("libero_spatial_object:0", [3])
    assert r["success"] and r["final_success"], r
