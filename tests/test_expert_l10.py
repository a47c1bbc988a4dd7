"""libero_10 two-goal tasks the expert needed new skills for, in the real simulator (one init each)."""

from __future__ import annotations

import pytest

from libero_dp import sim
from libero_dp.expert import make_expert, run_episode

MUG_MICROWAVE = "libero_10/KITCHEN_SCENE6_put_the_yellow_and_white_mug_in_the_microwave_and_close_it"
BOWL_DRAWER = "libero_10/KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet_and_close_it"


def _episode(task_sel: str, init_id: int) -> tuple[dict, list[str]]:
    """One expert episode; returns its result and the phases it went through, in order."""
    task = sim.resolve_tasks(task_sel)[0]
    env = sim.make_env(task, render=False)
    expert = make_expert(task)
    phases: list[str] = []

    def record(i: int, s: object, a: object, o: object, d: bool) -> None:
        if i >= 0 and (not phases or phases[-1] != expert.phase):
            phases.append(expert.phase)

    init = sim.official_init_states(task)[init_id]
    try:
        r = run_episode(env, task, expert, init_id, init, 600, on_step=record)
    finally:
        env.close()
    return r, phases


@pytest.mark.sim
def test_mug_goes_into_the_microwave_by_its_handle_and_the_door_closes() -> None:
    r, phases = _episode(MUG_MICROWAVE, 0)
    assert r["success"] and r["final_success"], r
    # the sideways handle grasp slides the mug in under the 14 cm roof (a mug lowered from above ends on it)
    assert phases.index("reach_in") < phases.index("insert") < phases.index("push_arc"), phases


@pytest.mark.sim
def test_bowl_fits_the_bottom_drawer_after_it_is_pulled_wider() -> None:
    r, phases = _episode(BOWL_DRAWER, 2)
    assert r["success"] and r["final_success"], r
    # the open drawer is pulled further (the bowl did not fit in front of the handles above) before the grasp
    assert phases.index("pull") < phases.index("grasp_close") < phases.index("push"), phases
