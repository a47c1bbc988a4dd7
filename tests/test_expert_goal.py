"""Real-sim checks of the expert fixes for libero_goal: one official init each, where a skill failed."""

from __future__ import annotations

import numpy as np
import pytest

from libero_dp import sim
from libero_dp.expert import make_expert, run_episode


def _episode(task_sel: str, init_id: int) -> tuple[dict, dict[str, np.ndarray]]:
    """One expert episode; returns its record and the final pose (position, rotation) of every object."""
    task = sim.resolve_tasks(task_sel)[0]
    env = sim.make_env(task, render=False)
    try:
        expert = make_expert(task)
        r = run_episode(env, task, expert, init_id, sim.official_init_states(task)[init_id], 600)
        scene = expert._scene
        assert scene is not None
        poses = {n: (scene.body_pos(n), scene.body_mat(n)) for n in scene.inner.obj_body_id}
    finally:
        env.close()
    return r, poses


@pytest.mark.sim
def test_plate_is_carried_by_its_rim_and_set_down_flat() -> None:
    """The plate (13.7 cm, 1.9 cm high) used to be gripped across its middle: grasp_missed on every init.

    Scored as the protocol scores it (the goal at any step). Where the plate rests after the expert's retreat
    is not asserted: since the rim-grasp changes for bowls (fingers.py) the plate slips in the hand while
    it is lowered at init 0 and comes to rest past the region (this task: goal at some step 98%, at the end
    52% over 50 inits, `metrics/experts_standard.json`); a known regression of the final placement."""
    r, poses = _episode("libero_goal/push_the_plate_to_the_front_of_the_stove", 0)
    assert r["success"] and r["failure_cause"] is None, r
    pos, rot = poses["plate_1"]
    assert pos[1] > 0.2  # carried to the stove's front (+y); it starts at y = -0.03
    # let go flat, not on its edge (at init 0 its rim rests 14 degrees up on the cream cheese box's edge)
    assert rot[2, 2] > np.cos(np.deg2rad(20.0))


@pytest.mark.sim
def test_wine_bottle_stands_upright_on_the_cabinet() -> None:
    """(On bottle top_side) holds for an upright bottle; laid down, the bottle was thrown off (init 4)."""
    r, poses = _episode("libero_goal/put_the_wine_bottle_on_top_of_the_cabinet", 4)
    assert r["success"] and r["final_success"], r
    _, rot = poses["wine_bottle_1"]
    assert rot[2, 2] > np.cos(np.deg2rad(10.0))


@pytest.mark.sim
def test_bowl_slides_out_from_under_the_open_drawer() -> None:
    """The opened top drawer overhangs the bowl: lifted straight up, it was knocked out of the grasp."""
    r, poses = _episode("libero_goal/open_the_top_drawer_and_put_the_bowl_inside", 3)
    assert r["success"] and r["final_success"], r
    assert r["failure_cause"] is None


@pytest.mark.sim
def test_bowl_under_the_drawer_corner_is_gripped_skewed_and_slid_out() -> None:
    """Init 8: the drawer's corner hangs over the bowl's middle; every grasp up to 30 degrees of skew met it
    (the hand stalled 16 cm up), and no slide within 10 cm passed between the wine bottle and the cheese."""
    r, _ = _episode("libero_goal/open_the_top_drawer_and_put_the_bowl_inside", 8)
    assert r["success"] and r["final_success"], r


@pytest.mark.sim
def test_bowl_in_the_drawer_is_gripped_clear_of_the_drawer_walls() -> None:
    """libero_spatial init 14: the rim grasp's outer finger came down on the drawer's side wall."""
    r, poses = _episode(
        "libero_spatial/pick_up_the_black_bowl_in_the_top_drawer_of_the_wooden_cabinet_and_place_it_on_the_plate",
        14,
    )
    assert r["success"] and r["final_success"], r
    _, rot = poses["akita_black_bowl_1"]
    assert rot[2, 2] > np.cos(np.deg2rad(20.0))  # set down upright on the plate


def test_rim_grip_moves_inward_until_the_open_fingers_clear_a_wall() -> None:
    """A 4 mm wall 6 cm out along the finger axis (the open finger spans 3.8-6.4 cm from the grip site):
    the grip moves 2 mm per try toward the bowl until clear (8 mm); a wall at the pad is never cleared."""
    from libero_dp.expert import fingers

    grip, f = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    wall = (np.array([0.060, 0.0, 1.0]), np.eye(3), np.array([0.002, 0.1, 0.05]))
    assert fingers.rim_inset([], grip, f, f) == 0.0
    inset = fingers.rim_inset([wall], grip, f, f)
    assert inset == pytest.approx(0.008)
    assert not fingers._hits([wall], fingers.finger_points(grip - inset * f, f))
    assert fingers._hits([wall], fingers.finger_points(grip - (inset - 0.002) * f, f))
    pad_wall = (np.array([0.042, 0.0, 1.0]), np.eye(3), np.array([0.002, 0.1, 0.05]))
    assert fingers.rim_inset([pad_wall], grip, f, f) is None
