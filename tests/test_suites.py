"""Task selections over every suite of the installed benchmark: LIBERO's standard suites and LIBERO-PRO's
16 robustness suites, their instructions, and the errors for a suite that does not exist or lacks files."""

from __future__ import annotations

import pytest

from libero_dp import sim
from libero_dp.config import EvalParams
from libero_dp.evaluate.protocol import eval_tasks


def test_every_pro_suite_resolves_with_ten_tasks_and_init_states() -> None:
    assert len(sim.PRO_SUITES) == 16
    for suite in sim.PRO_SUITES:
        tasks = sim.resolve_tasks([suite])
        assert len(tasks) == 10, suite
        assert all(t.suite == suite and t.key.startswith(f"{suite}/") for t in tasks)
    states = sim.official_init_states(sim.resolve_tasks(["libero_goal_swap:0"])[0])
    assert states.shape[0] == 50 and states.ndim == 2


def test_pro_instructions_come_from_the_task_file_where_reworded() -> None:
    base = sim.resolve_tasks(["libero_goal:0"])[0]
    lan = sim.resolve_tasks(["libero_goal_lan:0"])[0]
    task = sim.resolve_tasks(["libero_goal_task:0"])[0]
    swap = sim.resolve_tasks(["libero_goal_swap:0"])[0]
    assert base.name == lan.name == task.name == swap.name  # the same task map, other files
    assert lan.language != base.language and lan.language == sim.bddl_language(lan.bddl_file)
    assert "bottom drawer" in task.language and "middle" in base.language  # a new goal, a new sentence
    assert swap.language == base.language  # the scene is perturbed, not the words


def test_unknown_suite_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as e:
        sim.resolve_tasks(["libero_goal_swapped"])
    msg = str(e.value)
    assert "libero_goal_swapped" in msg and "libero_goal_swap" in msg and "libero_spatial_lan" in msg


def test_registered_suite_with_missing_files_is_refused_naming_them() -> None:
    missing = {k: v for k, v in sim.installed_suites().items() if v}
    assert "libero_goal_env" in missing  # LIBERO-PRO registers it; its task files are not in the package
    with pytest.raises(ValueError) as e:
        sim.resolve_tasks(["libero_goal_env"])
    msg = str(e.value)
    assert "libero_goal_env" in msg and "missing" in msg and "libero_goal_swap" in msg
    assert "libero_goal_env" not in sim.valid_suites()


def test_eval_task_selection_fails_before_any_episode(tmp_path) -> None:
    ep = EvalParams(tasks=["libero_nonexistent"])
    with pytest.raises(ValueError, match="libero_nonexistent"):
        eval_tasks(ep, {}, tmp_path)
    ok = eval_tasks(EvalParams(tasks=["libero_10_swap:2"]), {}, tmp_path)
    assert [t.suite for t in ok] == ["libero_10_swap"]
