"""Scripted expert in the real simulator (state-only, a few episodes): the demos' source must work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from libero_dp import sim
from libero_dp.expert import make_expert, parse_goal, run_episode

DRAWER = "libero_90:0"  # (Close wooden_cabinet_1_top_region)
PICK_PLACE = "libero_90:9"  # (On akita_black_bowl_1 plate_1)


def _run(task_sel: str, init_ids: list[int]) -> list[dict]:
    task = sim.resolve_tasks(task_sel)[0]
    env = sim.make_env(task, render=False)
    expert = make_expert(task)
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
        assert np.abs(acts[:, :3]).max() <= 0.3 + 1e-9  # position cap kept
        assert np.all(np.abs(acts) <= 1.0)


@pytest.mark.sim
def test_pick_place_expert_puts_bowl_on_plate() -> None:
    (r,) = _run(PICK_PLACE, [0])
    assert r["success"] and r["final_success"], r
    grip = r["actions"][:, 6]
    assert grip.max() == 1.0 and grip[-1] == -1.0  # grasped, then released


def test_goal_parsing() -> None:
    text = "(define (problem p) (:goal (And (On akita_black_bowl_1 plate_1) (Close c_1_top_region))))"
    assert parse_goal(text) == [("on", "akita_black_bowl_1", "plate_1"), ("close", "c_1_top_region")]


@pytest.mark.sim
def test_unsupported_goal_raises(tmp_path) -> None:
    task = sim.resolve_tasks("libero_90:20")[0]  # KITCHEN_SCENE3_turn_on_the_stove: (Turnon flat_stove_1)
    with pytest.raises(NotImplementedError, match=r"no expert plan for goal .*turnon"):
        make_expert(task)
    # and a goal the parser accepts but no skill handles, from an edited bddl file
    text = open(sim.resolve_tasks(DRAWER)[0].bddl_file).read().replace("(Close ", "(Open ")
    bddl = tmp_path / "open_drawer.bddl"
    bddl.write_text(text)
    edited = dataclasses.replace(sim.resolve_tasks(DRAWER)[0], bddl_file=str(bddl))
    with pytest.raises(NotImplementedError, match="no expert plan for goal"):
        make_expert(edited)
