"""Collect: official layout, replay to success in a fresh env, determinism and resume (real simulator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from libero_dp import sim
from libero_dp.collect import Job, reset_seed_for, run_job

pytestmark = pytest.mark.sim


def _file(demos_dir: Path) -> Path:
    return next(demos_dir.glob("*_demo.hdf5"))


def test_official_layout(tiny_demos, tiny_task) -> None:
    demos_dir, metrics = tiny_demos
    path = _file(demos_dir)
    assert path.name == f"{tiny_task.name}_demo.hdf5"
    with h5py.File(path) as f:
        g = f["data"]
        for attr in (
            "env_name",
            "problem_info",
            "bddl_file_name",
            "env_args",
            "num_demos",
            "total",
            "macros_image_convention",
            "bddl_file_content",
        ):
            assert attr in g.attrs, attr
        assert json.loads(g.attrs["problem_info"])["language_instruction"] == tiny_task.language
        assert json.loads(g.attrs["env_args"])["env_kwargs"]["camera_heights"] == 64
        assert g.attrs["num_demos"] == 2 and g.attrs["macros_image_convention"] == "opengl"
        total = 0
        for i in range(2):
            d = g[f"demo_{i}"]
            t = d.attrs["num_samples"]
            total += t
            assert d["actions"].shape == (t, 7) and d["actions"].dtype == np.float64
            assert d["states"].shape[0] == t and d["robot_states"].shape == (t, 9)
            assert d["dones"][-1] == 1 and d["dones"][:-1].sum() == 0 and d["rewards"].dtype == np.uint8
            np.testing.assert_array_equal(d.attrs["init_state"], d["states"][0])
            assert "<mujoco" in d.attrs["model_file"]
            for k in ("agentview_rgb", "eye_in_hand_rgb"):
                assert d["obs"][k].shape == (t, 64, 64, 3) and d["obs"][k].dtype == np.uint8
            for k, w in (
                ("ee_pos", 3),
                ("ee_ori", 3),
                ("ee_states", 6),
                ("gripper_states", 2),
                ("joint_states", 7),
            ):
                assert d["obs"][k].shape == (t, w)
            pos = d["actions"][:, :3]
            assert np.abs(pos).max() <= 1.0  # fast free-space moves reach 1.0 (5 cm commanded)
            # slew limit 0.08 per step at every step, phase handovers included (cap applied before slew)
            assert np.abs(np.diff(pos, axis=0)).max() <= 0.08 + 1e-9
        assert g.attrs["total"] == total
    m = metrics["tasks"][tiny_task.name]
    assert m["demos"] == 2 and m["expert_official"]["n"] == 1


def test_replay_reaches_success_in_fresh_env(tiny_demos, tiny_task) -> None:
    """Stored reset seed + init state + actions, replayed in a new env, succeed (LIBERO's own `done`)."""
    path = _file(tiny_demos[0])
    env = sim.make_env(tiny_task, image_size=64, render=False)
    with h5py.File(path) as f:
        for i in range(2):
            d = f[f"data/demo_{i}"]
            sim.reset_to(env, int(d.attrs["reset_seed"]), d.attrs["init_state"])
            done = False
            for j, a in enumerate(d["actions"][()]):
                _, _, done_j, info = env.step(a)
                assert info == {}  # LIBERO never fills info: success must come from done/check_success
                done = done or done_j or env.check_success()
                if j + 1 < len(d["actions"]):
                    np.testing.assert_allclose(sim.get_state(env), d["states"][j + 1], atol=1e-6)
            assert done, f"demo_{i} did not succeed on replay"
    env.close()


def test_stored_images_match_live_render(tiny_demos, tiny_task) -> None:
    """obs[j] is the state after action j, rendered by the one rendering path (exact pixels)."""
    path = _file(tiny_demos[0])
    env = sim.make_env(tiny_task, image_size=64, render=True)
    with h5py.File(path) as f:
        d = f["data/demo_0"]
        sim.reset_to(env, int(d.attrs["reset_seed"]), d.attrs["init_state"])
        for j in range(3):
            env.step(d["actions"][j])
            live = sim.render_views(env, 64)
            for k, img in live.items():
                np.testing.assert_array_equal(img, d["obs"][k][j])
    env.close()


def test_resume_and_determinism(tiny_demos, tiny_root, tiny_collect_params, tiny_task) -> None:
    """A rerun redoes nothing; an attempt rerun elsewhere from the same seed gives identical data."""
    from libero_dp.collect import collect

    cache = tiny_root / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    collect(tiny_collect_params, cache_root=cache)
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert before == after
    out = tiny_root / "again" / "demo_00000"
    out.parent.mkdir()
    p = tiny_collect_params
    res = run_job(Job("demo", tiny_task, 0, reset_seed_for(p.seed, tiny_task, 0), False, str(out)), p)
    assert res["success"]
    with h5py.File(str(out) + ".h5") as a, h5py.File(_file(tiny_demos[0])) as b:
        np.testing.assert_array_equal(a["data/demo_0/actions"][()], b["data/demo_0/actions"][()])
        np.testing.assert_array_equal(
            a["data/demo_0/obs/agentview_rgb"][()], b["data/demo_0/obs/agentview_rgb"][()]
        )


KILLABLE = """
import sys
from pathlib import Path
from libero_dp.collect import collect
from libero_dp.config import CollectParams
collect(CollectParams.model_validate_json(sys.argv[1]), cache_root=Path(sys.argv[2]))
"""


def test_killed_collect_resumes_to_the_uninterrupted_result(
    tiny_demos, tiny_collect_params, tmp_path
) -> None:
    """A collection killed (SIGKILL) once its first demo is done, then rerun: nothing it finished is redone,
    no task file exists in between, and the file equals the uninterrupted run's (the tiny_demos fixture)."""
    from libero_dp.collect import collect

    p = tiny_collect_params.model_copy(update={"out_dir": str(tmp_path / "demos")})
    cache = tmp_path / "cache"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, p.model_dump_json(), str(cache)], env=env)
    deadline = time.time() + 600
    while not list(cache.rglob("demo_*.json")):
        assert proc.poll() is None, "collect ended before it could be killed"
        assert time.time() < deadline, "no demo finished in 10 minutes"
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    finished = {f: f.stat().st_mtime_ns for f in cache.rglob("*") if f.suffix in (".json", ".h5")}
    assert len([f for f in finished if f.name.startswith("demo_")]) in (2, 4)  # 1-2 demos (.json + .h5)
    assert not list((tmp_path / "demos").glob("*.hdf5"))  # no partial output
    collect(p, cache_root=cache)
    assert {f: f.stat().st_mtime_ns for f in finished} == finished  # nothing finished was redone
    with h5py.File(_file(tmp_path / "demos")) as a, h5py.File(_file(tiny_demos[0])) as b:
        assert sorted(a["data"]) == sorted(b["data"]) == ["demo_0", "demo_1"]
        for demo in a["data"]:
            for key in ("actions", "states", "robot_states", "obs/agentview_rgb", "obs/eye_in_hand_rgb"):
                np.testing.assert_array_equal(a["data"][demo][key][()], b["data"][demo][key][()])


def test_several_tasks_and_failing_task_skipped(tmp_path: Path) -> None:
    """One collection over two tasks (one pool, rounds across tasks): a task the expert never finishes
    (task 45, two goals in ~460 steps, cut off here at 150) stops the stage by default, and with
    on_task_failure=skip is left out, with its reason in the metrics. (Every libero_90 task has a plan
    now; a goal without one is refused at construction: test_expert.test_unsupported_goal_raises.)"""
    from libero_dp.collect import collect
    from libero_dp.config import CollectParams

    params = dict(
        tasks=["libero_90:45", "libero_90:0"],
        demos_per_task=1,
        expert_check_episodes=0,
        image_size=32,
        workers=1,
        max_steps=150,
        max_attempts_factor=1,
        out_dir=str(tmp_path / "demos"),
    )
    failing = "KITCHEN_SCENE9_turn_on_the_stove_and_put_the_frying_pan_on_it"
    with pytest.raises(RuntimeError, match=rf"{failing}: the expert succeeded in none of 1 attempts"):
        collect(CollectParams(**params), cache_root=tmp_path / "cache")
    m = collect(CollectParams(**params, on_task_failure="skip"), cache_root=tmp_path / "cache")
    assert list(m["skipped"]) == [failing]
    assert list(m["tasks"]) == ["KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet"]
    files = sorted(p.name for p in (tmp_path / "demos").glob("*.hdf5"))
    assert files == ["KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet_demo.hdf5"]
    assert m["num_demos"] == 1 and m["disk_bytes"] > 0


REPLAY_SCRIPT = """
import sys, h5py, numpy as np
from libero_dp import sim
sim.setup_gl()
for path in sys.argv[1:]:
    with h5py.File(path) as f:
        task = sim.resolve_tasks(path.split("/")[-1][: -len("_demo.hdf5")])[0]
        env = sim.make_env(task, render=False)
        for key in f["data"]:
            d = f["data"][key]
            sim.reset_to(env, int(d.attrs["reset_seed"]), d.attrs["init_state"])
            ok = False
            for a in d["actions"][()]:
                _, _, done, _ = env.step(a)
                ok = ok or bool(done) or sim.check_success(env)
            print(task.name, key, "REPLAY_OK" if ok else "REPLAY_FAIL")
        env.close()
"""


def test_demos_of_other_families_replay_in_a_fresh_process(tmp_path: Path) -> None:
    """Real official-layout files for a stove task and a two-goal task: every stored demo (reset seed +
    init state + actions) succeeds again in a new Python process."""
    import subprocess
    import sys

    from libero_dp.collect import collect
    from libero_dp.config import CollectParams

    p = CollectParams(
        tasks=["libero_90:20", "libero_90:63"],
        demos_per_task=1,
        expert_check_episodes=0,
        image_size=32,
        workers=1,
        max_steps=600,
        out_dir=str(tmp_path / "demos"),
    )
    m = collect(p, cache_root=tmp_path / "cache")
    assert m["num_demos"] == 2 and not m["skipped"]
    files = sorted(str(f) for f in (tmp_path / "demos").glob("*_demo.hdf5"))
    cmd = [sys.executable, "-c", REPLAY_SCRIPT, *files]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = [ln for ln in out.stdout.splitlines() if "REPLAY_" in ln]
    assert len(lines) == 2 and all(ln.endswith("REPLAY_OK") for ln in lines), out.stdout + out.stderr


def test_pro_variant_and_base_task_demos_side_by_side(tmp_path: Path) -> None:
    """LIBERO-PRO's suites reuse their base suite's task names: one collection over a base task and its
    `_swap` variant writes two files (the variant's named suite__name), and the eval stage's from_data maps
    each file back to its own suite's task (replayed from its recorded reset: the expert's demo succeeds)."""
    from libero_dp import evaluate as ev
    from libero_dp.collect import collect
    from libero_dp.config import CollectParams, EvalParams, ExecParams

    params = dict(
        tasks=["libero_goal:7", "libero_goal_swap:7"],  # turn on the stove
        demos_per_task=1,
        expert_check_episodes=0,
        image_size=32,
        workers=2,
        max_steps=300,
        out_dir=str(tmp_path / "demos"),
    )
    m = collect(CollectParams(**params), cache_root=tmp_path / "cache")
    assert sorted(m["tasks"]) == ["libero_goal_swap__turn_on_the_stove", "turn_on_the_stove"]
    files = sorted(p.name for p in (tmp_path / "demos").glob("*.hdf5"))
    assert files == ["libero_goal_swap__turn_on_the_stove_demo.hdf5", "turn_on_the_stove_demo.hdf5"]
    out = tmp_path / "eval"
    ep = EvalParams(policy="replay", episodes_per_task=1, workers=1, videos_success=0, videos_failure=0)
    metrics = ev.evaluate(
        ep,
        ExecParams(),
        tmp_path,
        tmp_path / "s.json",
        tmp_path / "demos",
        out,
        tmp_path / "ec",
        progress=False,
    )
    assert metrics["tasks"]["libero_goal_swap/turn_on_the_stove"]["suite"] == "libero_goal_swap"
    assert metrics["tasks"]["turn_on_the_stove"]["suite"] == "libero_goal"
    assert metrics["overall"]["successes"] == 2
