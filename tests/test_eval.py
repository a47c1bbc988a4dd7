"""Closed-loop evaluation on the real simulator: success detection, replay, chunk execution, on-demand
rendering, fault isolation and resume. Stand-in runners replace the trained policy where the harness itself
is under test (known chunks, injected faults)."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from libero_dp import evaluate as ev
from libero_dp import sim
from libero_dp.config import EvalParams, ExecParams
from libero_dp.units import Transform

pytestmark = pytest.mark.sim
TASK = "libero_90:0"
H = 64


def _register_by_value() -> None:
    """Ray workers cannot import this test module by name: ship its stand-in classes by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


_register_by_value()


class StandIn:
    """A policy with known outputs. chunk[i] = (x=i/1000, y=1.5 if i == 0 else 0, ..., gripper=-1) in model
    units; with the identity transform below raw x = model x, so the executed x reveals which index ran.

    The episode index comes from the sampling seed (reset_seed*1000 + chunk, reset_seed = i for seed 0).
    Faults: raise_on -> RuntimeError; exit_on -> os._exit (the actor dies); exit_once_on -> dies only on the
    first attempt (marker file); hang_on -> never returns (sleeps). Every first call of an episode is logged
    as a file in count_dir.
    """

    def __init__(
        self,
        horizon: int = H,
        image_history: int = 2,
        mode: str = "index",
        count_dir: str = "",
        raise_on: tuple[int, ...] = (),
        exit_on: tuple[int, ...] = (),
        exit_once_on: tuple[int, ...] = (),
        move: float = 0.0,
        hang_on: tuple[int, ...] = (),
    ) -> None:
        self.horizon, self.image_history, self.mode = horizon, image_history, mode
        self.count_dir, self.raise_on = count_dir, raise_on
        self.exit_on, self.exit_once_on = exit_on, exit_once_on
        self.move = move
        self.hang_on = hang_on
        self.calls = 0
        self.seen: list[dict] = []

    def predict_chunk(
        self, frames: dict, proprio: np.ndarray, language: str, seed: int | None = None
    ) -> np.ndarray:
        episode, chunk_no = (seed // 1000) % 1000, seed % 1000
        if self.count_dir and chunk_no == 0:
            Path(self.count_dir, f"e{episode}_{os.getpid()}_{time.monotonic_ns()}").touch()
        if episode in self.raise_on:
            raise RuntimeError(f"stand-in failure on episode {episode}")
        if episode in self.exit_on:
            os._exit(3)
        while episode in self.hang_on:  # a policy that never returns: only killing its process ends it
            time.sleep(3600)
        marker = Path(self.count_dir, f"died_once_e{episode}")
        if episode in self.exit_once_on and not marker.exists():
            marker.touch()
            os._exit(3)
        self.seen.append({"frames": {k: v.copy() for k, v in frames.items()}, "proprio": proprio.copy()})
        out = np.zeros((self.horizon, 7))
        out[:, 6] = -1.0
        if self.mode == "index":
            out[:, 0] = np.arange(self.horizon) / 1000.0
            out[0, 1] = 1.5  # out of range: clipped when executed
        elif self.mode == "call":  # every entry = the call number, to check the ensemble's weights
            out[:, 0] = self.calls / 1000.0
        else:  # "move": a steady motion so that frames change
            out[:, 0] = self.move
            out[:, 2] = -self.move
        self.calls += 1
        return out


def identity_stats(path: Path) -> Path:
    """A transform whose model units equal raw LIBERO units for x,y,z (pos_unit 20 = 1/0.05) and gripper."""
    t = Transform(pos_unit=20.0, rot_repr="axis_angle", norm="none")
    rng = np.random.default_rng(0)
    t.fit(
        rng.uniform(-1, 1, (10, 7)),
        rng.uniform(-1, 1, (10, 3)),
        rng.uniform(-1, 1, (10, 3)),
        rng.uniform(0, 0.04, (10, 2)),
    )
    t.save(path)
    return path


# -------------------------------------------------------------------------------- in-process harness
class TestRollout:
    """The episode loop itself, in this process on one env (closed before the Ray tests start theirs)."""

    @pytest.fixture(scope="class")
    @classmethod
    def env(cls):
        e = sim.make_env(sim.resolve_tasks([TASK])[0], 128)
        yield e
        e.close()

    @pytest.fixture(scope="class")
    @classmethod
    def transform(cls, tmp_path_factory: pytest.TempPathFactory) -> Transform:
        return Transform.load(identity_stats(tmp_path_factory.mktemp("stats") / "stats.json"))

    @staticmethod
    def _spec(max_steps: int, wait: int = 2) -> ev.EpisodeSpec:
        task = sim.resolve_tasks([TASK])[0]
        return ev.protocol_specs(task, [0], 1, EvalParams(max_steps=max_steps, num_steps_wait=wait))[0]

    @pytest.mark.parametrize(
        "steps,stride,expected_idx,chunks,renders",
        [
            (64, 1, list(range(64)) + list(range(8)), 2, 3),  # renders: step 0, 63 and 64 (K=2)
            (8, 1, list(range(8)) * 9, 9, 17),  # 0, then (7, 8), (15, 16), ... (63, 64)
            (64, 8, list(range(0, 64, 8)) * 9, 9, 17),  # the seed's failure: 8 actions of a 64-chunk
        ],
    )
    def test_exec_steps_and_stride(
        self, env, transform, steps, stride, expected_idx, chunks, renders
    ) -> None:
        runner = StandIn()
        ctrl = ev.ChunkController(runner, transform, ExecParams(steps=steps, stride=stride), "x", 0)
        rec, arrays = ev.rollout(env, self._spec(72), ctrl, image_size=128)
        assert rec["error"] is None
        executed = arrays["actions"]
        assert np.round(executed[:, 0] * 1000).astype(int).tolist() == expected_idx
        assert rec["chunks"] == chunks and rec["renders"] == renders
        # clipping: y = 1.5 at index 0 executed as 1.0; counted per executed action dim
        n0 = expected_idx.count(0)
        assert np.all(executed[:, 1] <= 1.0)
        assert rec["clip_rate"] == pytest.approx(n0 / (72 * 7))
        assert rec["clip_overshoot_max"] == pytest.approx(0.5)
        assert rec["out_of_range_rate"] == pytest.approx(1 / (H * 7))
        assert len(rec["eef_path"]) == 73 and arrays["states"].shape[0] == 73

    def test_temporal_ensemble_weights(self, env, transform) -> None:
        k, n = 0.5, 4
        ctrl = ev.ChunkController(
            StandIn(mode="call"), transform, ExecParams(steps=n, temporal_ensemble=True, ensemble_k=k), "x", 0
        )
        rec, arrays = ev.rollout(env, self._spec(10), ctrl, image_size=128)
        assert rec["error"] is None and rec["chunks"] == 10 and rec["renders"] == 10
        for t in range(10):  # prediction made at step r has value r; ACT: weight exp(-k * i), i=0 oldest
            rs = [r for r in range(max(0, t - n + 1), t + 1)]
            w = [math.exp(-k * i) for i in range(len(rs))]
            expected = sum(wi * r for wi, r in zip(w, rs, strict=True)) / sum(w) / 1000
            assert arrays["actions"][t, 0] == pytest.approx(expected)

    def test_on_demand_equals_every_step(self, env, transform) -> None:
        """Same images at the steps read, same trajectory, far fewer renders; and the images equal a re-render
        from the stored state (the path the training frames took: set_state + render_views + upright)."""
        got = {}
        for mode in ("on_demand", "every_step"):
            runner = StandIn(mode="move", move=0.5, image_history=3)
            ctrl = ev.ChunkController(runner, transform, ExecParams(steps=8), "x", 0)
            rec, arrays = ev.rollout(env, self._spec(20), ctrl, image_size=128, render=mode)
            assert rec["error"] is None
            got[mode] = (rec, arrays, runner.seen)
        (r1, a1, s1), (r2, a2, s2) = got["on_demand"], got["every_step"]
        assert r1["renders"] == 7 and r2["renders"] == 20  # 0, (6, 7, 8), (14, 15, 16)
        np.testing.assert_array_equal(a1["states"], a2["states"])
        assert len(s1) == len(s2) == 3
        for x, y in zip(s1, s2, strict=True):
            np.testing.assert_array_equal(x["proprio"], y["proprio"])
            for cam in sim.CAMERAS.values():
                assert x["frames"][cam].shape == (3, 128, 128, 3)
                np.testing.assert_array_equal(x["frames"][cam], y["frames"][cam])
        assert not np.array_equal(s1[0]["frames"]["agentview_rgb"][-1], s1[1]["frames"]["agentview_rgb"][-1])
        # history of the re-plan at step 8 = frames of steps 6, 7, 8; at step 0 = step 0 repeated
        sim.reset_to(env, r1["reset_seed"])
        assert ev.placement_hash(env) == r1["placement_hash"]
        for j, step in enumerate((6, 7, 8)):
            sim.set_state(env, a1["states"][step])
            ref = ev.render_upright(env, 128)
            for cam in sim.CAMERAS.values():
                np.testing.assert_array_equal(s1[1]["frames"][cam][j], ref[cam])
        for cam in sim.CAMERAS.values():
            np.testing.assert_array_equal(s1[0]["frames"][cam][0], s1[0]["frames"][cam][2])

    def test_resets_reproduce_placement(self, env) -> None:
        """LIBERO's reset draws grow with the reset count; sim.reset_to must make the seed alone decide, or
        eval results would depend on which actor ran which episode before (and videos would not re-render)."""
        hashes = []
        for seed in (5, 6, 5, 5):
            sim.reset_to(env, seed)
            hashes.append(ev.placement_hash(env))
        assert hashes[0] == hashes[2] == hashes[3] != hashes[1]


# ---------------------------------------------------------------------------------------- through Ray
def _params(**kw) -> EvalParams:
    base = dict(tasks=[TASK], episodes_per_task=1, workers=1, videos_success=0, videos_failure=0)
    return EvalParams(**{**base, **kw})


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_expert_success_detected_without_info(tmp_path: Path) -> None:
    """The scripted expert closes the drawer; success comes from done/check_success, info is always {}."""
    from libero_dp.video import read_mp4

    out = tmp_path / "eval"
    m = ev.evaluate(
        _params(policy="expert", videos_success=1),
        ExecParams(),
        tmp_path / "models",
        tmp_path / "stats.json",
        tmp_path / "demos",
        out,
        tmp_path / "cache",
        progress=False,
    )
    (rec,) = _records(out)
    assert rec["success"] and rec["error"] is None
    assert rec["steps"] == rec["steps_to_success"] > 0
    assert rec["info_keys_seen"] == []  # env.step's info was {} at every step
    assert m["overall"]["success_rate"] == 1.0 and m["tasks"][rec["task"]]["successes"] == 1
    video = out / "videos" / f"{rec['task']}_s0_e000_success.mp4"
    frames = read_mp4(video)
    assert frames.shape[0] == math.ceil((rec["steps"] + 1) / 2) + (rec["steps"] % 2 == 1)
    assert frames.shape[1:] == (128, 128, 3)


def test_replay_of_collected_demo_succeeds(tiny_demos, tmp_path: Path) -> None:
    demos_dir, _ = tiny_demos
    out = tmp_path / "eval"
    m = ev.evaluate(
        _params(policy="replay", tasks="from_data"),
        ExecParams(),
        tmp_path / "models",
        tmp_path / "stats.json",
        demos_dir,
        out,
        tmp_path / "cache",
        progress=False,
    )
    (rec,) = _records(out)
    assert rec["demo"] == "demo_0" and rec["wait_steps"] == 0
    assert rec["success"], rec
    assert rec["replay_max_state_diff"] == 0.0  # seeded reset + init state + actions: bit-identical states
    assert m["overall"]["success_rate"] == 1.0


def test_fault_isolation_retry_and_resume(tmp_path: Path) -> None:
    """Episode 1 raises, 2 kills its actor every time, 3 kills it once: 1 -> error, 2 -> retried once then
    error, 3 -> retried and done, 0 and 4 unaffected. A second call reruns nothing that finished."""
    counts = tmp_path / "counts"
    counts.mkdir()
    factory = functools.partial(
        StandIn, count_dir=str(counts), raise_on=(1,), exit_on=(2,), exit_once_on=(3,)
    )
    ep = _params(episodes_per_task=5, workers=2, max_steps=8, num_steps_wait=0)
    xp = ExecParams(steps=8)
    stats = identity_stats(tmp_path / "stats.json")
    args = (ep, xp, tmp_path / "models", stats, tmp_path / "demos", tmp_path / "eval", tmp_path / "cache")

    def runs() -> dict[int, int]:
        out: dict[int, int] = {}
        for f in counts.glob("e*_*"):
            e = int(f.name.split("_")[0][1:])
            out[e] = out.get(e, 0) + 1
        return out

    m = ev.evaluate(*args, runner_factory=factory, progress=False)
    recs = {r["episode"]: r for r in _records(tmp_path / "eval")}
    assert sorted(recs) == [0, 1, 2, 3, 4]
    assert recs[1]["error"].startswith("RuntimeError: stand-in failure") and recs[1]["failure"] == "error"
    assert recs[2]["error"].startswith("worker died (2 attempts)") and recs[2]["attempts"] == 2
    assert recs[3]["error"] is None and recs[3]["attempts"] == 2 and recs[3]["steps"] == 8
    for e in (0, 4):
        assert recs[e]["error"] is None and recs[e]["steps"] == 8 and recs[e]["chunks"] == 1
    assert m["tasks"][recs[0]["task"]]["errors"] == 2 and m["overall"]["n"] == 5
    assert runs() == {0: 1, 1: 1, 2: 2, 3: 2, 4: 1}

    # resume: finished episodes (also the one that raised) come from the cache; the dead-worker one reruns
    m2 = ev.evaluate(*args, runner_factory=factory, progress=False)
    assert runs() == {0: 1, 1: 1, 2: 4, 3: 2, 4: 1}
    assert m2["timing"]["episodes_cached"] == 4 and m2["timing"]["episodes_run"] == 1
    assert [r["success"] for r in _records(tmp_path / "eval")] == [r["success"] for r in recs.values()]


def test_hung_episode_times_out_and_the_run_goes_on(tmp_path: Path) -> None:
    """Episode 1's policy never returns: after eval.episode_timeout_s its actor is killed, the episode is a
    `timeout` error (counted in the failures), a fresh actor runs episode 2, and the run finishes."""
    limit = 60.0  # > an 8-step episode on a loaded CPU (env construction is off the clock)
    factory = functools.partial(StandIn, hang_on=(1,))
    ep = _params(episodes_per_task=3, workers=1, max_steps=8, num_steps_wait=0, episode_timeout_s=limit)
    stats = identity_stats(tmp_path / "stats.json")
    t0 = time.monotonic()
    m = ev.evaluate(
        ep,
        ExecParams(steps=8),
        tmp_path / "models",
        stats,
        tmp_path / "demos",
        tmp_path / "eval",
        tmp_path / "cache",
        runner_factory=factory,
        progress=False,
    )
    took = time.monotonic() - t0
    recs = {r["episode"]: r for r in _records(tmp_path / "eval")}
    assert sorted(recs) == [0, 1, 2]
    hung = recs[1]
    assert hung["failure"] == "timeout" and hung["error"].startswith("timeout: no result after")
    assert "eval.episode_timeout_s=60" in hung["error"] and hung["steps"] == 0 and not hung["success"]
    assert limit <= hung["wall_s"] < limit + 30 and took >= limit
    for e in (0, 2):
        assert recs[e]["error"] is None and recs[e]["steps"] == 8, recs[e]
    assert recs[0]["pid"] != recs[2]["pid"]  # the hung actor was replaced by a fresh process
    task = m["tasks"][hung["task"]]
    assert task["errors"] == 1 and task["failures"]["timeout"] == 1 and task["n"] == 3
    assert m["overall"]["failures"]["timeout"] == 1 and m["timing"]["episodes_run"] == 3
    # a timeout may come from a loaded machine, not the episode: it is not cached, a resume reruns it
    cached = {p.stem for p in (tmp_path / "cache").rglob("s0_e*.json")}
    assert cached == {"s0_e000", "s0_e002"}


def test_eval_render_equals_training_frames(tiny_demos, tiny_extracted: Path) -> None:
    """Evaluation's on-demand rendering (render_upright, after a seeded reset, the wait steps and the
    executed actions, as `rollout` does) returns exactly the frames the policy was trained on."""
    import h5py

    ep0 = json.loads((tiny_extracted / "episodes.json").read_text())[0]
    keys = list(sim.CAMERAS.values())
    frames = {k: np.load(tiny_extracted / "frames" / f"{k}.npy", mmap_mode="r") for k in keys}
    size = json.loads((tiny_extracted / "meta.json").read_text())["image_size"]
    task = sim.resolve_tasks(TASK)[0]
    env = sim.make_env(task, image_size=size, render=True)
    try:
        with h5py.File(next(tiny_demos[0].glob("*_demo.hdf5"))) as f:
            d = f[f"data/{ep0['demo']}"]
            first = int(d.attrs["num_steps_wait"])
            actions = d["actions"][:]
            sim.reset_to(env, int(d.attrs["reset_seed"]), d.attrs["init_state"])
        for a in actions[:first]:  # the wait steps, as in evaluation
            env.step(a)
        for i in range(6):  # sample i: the frame read before executing actions[first + i]
            live = ev.render_upright(env, size)
            for k in keys:
                np.testing.assert_array_equal(live[k], frames[k][ep0["start"] + i], err_msg=f"{k} step {i}")
            env.step(actions[first + i])
    finally:
        env.close()


KILLABLE = """
import sys
from pathlib import Path
from libero_dp import evaluate as ev
from libero_dp.config import EvalParams, ExecParams
t = Path(sys.argv[2])
args = (t / "models", t / "stats.json", t / "demos", t / "eval", t / "cache")
ev.evaluate(EvalParams.model_validate_json(sys.argv[1]), ExecParams(), *args, progress=False)
"""
SAME = (
    "task",
    "episode",
    "seed",
    "success",
    "steps",
    "steps_to_success",
    "placement_hash",
    "failure",
    "eef_path",
)


def test_killed_eval_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """The eval stage killed (SIGKILL) once its first episode is recorded, then rerun: finished episodes are
    not rerun, and the records and metrics equal those of an uninterrupted run."""
    import subprocess

    ep = _params(policy="expert", episodes_per_task=3, max_steps=200)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = ev.evaluate(
        ep,
        ExecParams(),
        *(ref_dir / n for n in ("models", "stats.json", "demos", "eval", "cache")),
        progress=False,
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, ep.model_dump_json(), str(run_dir)], env=env)
    deadline = time.time() + 600

    def done() -> list[Path]:
        return [p for p in (run_dir / "cache").rglob("*.json") if p.name != "params.json"]

    while not done():
        assert proc.poll() is None, "eval ended before it could be killed"
        assert time.time() < deadline, "no episode finished in 10 minutes"
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in done()}
    assert 1 <= len(finished) <= 3 and not (run_dir / "eval" / "records.jsonl").exists()
    m = ev.evaluate(
        ep,
        ExecParams(),
        *(run_dir / n for n in ("models", "stats.json", "demos", "eval", "cache")),
        progress=False,
    )
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished was rerun
    assert m["timing"]["episodes_cached"] == len(finished) and m["timing"]["episodes_run"] == 3 - len(
        finished
    )
    got, want = _records(run_dir / "eval"), _records(ref_dir / "eval")
    assert [{k: r.get(k) for k in SAME} for r in got] == [{k: r.get(k) for k in SAME} for r in want]
    assert m["overall"] == ref["overall"] and m["tasks"] == ref["tasks"]


def test_base_suite_and_pro_variant_in_one_run_and_the_robustness_table(tmp_path: Path) -> None:
    """LIBERO-PRO's suites reuse their base suite's task names: one run over libero_goal and libero_goal_swap
    keeps them apart (records, cache, metrics), and the report compares them (drop in points)."""
    from libero_dp.report.robustness import robustness

    out = tmp_path / "eval"
    args = (
        ExecParams(),
        tmp_path / "models",
        tmp_path / "stats.json",
        tmp_path / "demos",
        out,
        tmp_path / "c",
    )
    m = ev.evaluate(
        _params(policy="expert", tasks=["libero_goal:1", "libero_goal_swap:1"], workers=2),
        *args,
        progress=False,
    )
    recs = _records(out)
    assert sorted(r["task"] for r in recs) == [
        "libero_goal_swap/put_the_bowl_on_the_stove",
        "put_the_bowl_on_the_stove",
    ]
    assert {r["suite"] for r in recs} == {"libero_goal", "libero_goal_swap"}
    assert (
        recs[0]["reset_seed"] == recs[1]["reset_seed"] and recs[0]["init_index"] == recs[1]["init_index"] == 0
    )
    assert set(m["suites"]) == {"libero_goal", "libero_goal_swap"} and m["overall"]["n"] == 2
    assert m["tasks"]["libero_goal_swap/put_the_bowl_on_the_stove"]["suite"] == "libero_goal_swap"
    table = robustness(m)
    assert table is not None
    (base, variant) = table["suite_rows"]
    assert base[0] == "libero_goal" and variant[:2] == ["libero_goal_swap", "positions swapped"]
    rates = {r["suite"]: r["success"] for r in recs}
    drop = 100 * (rates["libero_goal"] - rates["libero_goal_swap"])
    assert variant[-1] == f"{drop:+.1f}"
    assert table["task_rows"] == [
        [
            "put_the_bowl_on_the_stove",
            "libero_goal_swap",
            f"{100 * rates['libero_goal']:.1f}%",
            f"{100 * rates['libero_goal_swap']:.1f}%",
            f"{drop:+.1f}",
        ]
    ]
    assert (
        robustness({"tasks": {"put_the_bowl_on_the_stove": m["tasks"]["put_the_bowl_on_the_stove"]}}) is None
    )


def test_grounding_pairs_within_a_scene_and_the_report_table(tmp_path: Path) -> None:
    """eval.grounding_inits: for two libero_goal tasks (one scene), each is told from the other's init state;
    the outcome is read from the final state (B's goal: followed; only A's: ignored), kept apart from the
    protocol's rates, summarised in eval.json and tabled in the report."""
    from libero_dp.evaluate import grounding
    from libero_dp.report.grounding import grounding_table

    out = tmp_path / "eval"
    args = (ExecParams(), tmp_path / "models", tmp_path / "stats.json", tmp_path / "demos", out, tmp_path)
    params = _params(policy="expert", tasks=["libero_goal:7", "libero_goal:8"], workers=2, grounding_inits=1)
    langs = {t.name: t.language for t in sim.resolve_tasks(params.tasks)}
    m = ev.evaluate(params, *args, progress=False)
    recs = _records(out)
    assert sorted(r["task"] for r in recs) == ["put_the_bowl_on_the_plate", "turn_on_the_stove"]
    assert not any("grounding" in r for r in recs) and m["overall"]["n"] == 2  # protocol rates unchanged
    gr = [json.loads(line) for line in (out / "grounding.jsonl").read_text().splitlines()]
    assert sorted((r["grounding"]["from_task"], r["task"]) for r in gr) == [
        ("put_the_bowl_on_the_plate", "turn_on_the_stove"),
        ("turn_on_the_stove", "put_the_bowl_on_the_plate"),
    ]
    for r in gr:
        g = r["grounding"]
        assert g["instruction"] == langs[r["task"]]  # B's sentence, not A's
        assert g["outcome"] == grounding.outcome(r["success"], g["a_holds"]), r
        assert r["init_index"] == 0 and r["scene"] == "libero_goal"
    # the expert turns the stove on from the bowl-on-plate scene (its reference run: followed)
    stove = next(r for r in gr if r["task"] == "turn_on_the_stove")
    assert stove["grounding"]["outcome"] == "followed" and stove["success"]
    g = m["grounding"]
    assert g["pairs"] == 2 and g["episodes"] == 2 and g["overall"]["n"] == 2
    assert g["overall"]["followed"] == sum(r["grounding"]["outcome"] == "followed" for r in gr)
    assert set(g["per_scene"]) == {"libero_goal/libero_goal"}
    assert [(p["from"], p["to"], p["n"]) for p in g["per_pair"]] == [
        ("put_the_bowl_on_the_plate", "turn_on_the_stove", 1),
        ("turn_on_the_stove", "put_the_bowl_on_the_plate", 1),
    ]
    from libero_dp.tracking import flatten

    numeric = [k for k, v in flatten(m).items() if isinstance(v, (int, float))]
    assert not any("per_pair" in k for k in numeric)  # pairs stay out of MLflow's metric names
    table = grounding_table(m)
    assert table is not None and table["rows"][-1][0] == "all scenes"
    assert table["rows"][-1][1] == f"{100 * g['overall']['success_rate']:.1f}%"
    assert len(table["pair_rows"]) == 2 and grounding_table({"tasks": {}}) is None
    # a rerun finds every episode (the grounding ones too) in the cache
    m2 = ev.evaluate(params, *args, progress=False)
    assert m2["timing"]["episodes_run"] == 0 and m2["grounding"] == g


def test_failure_causes_read_from_the_objects() -> None:
    """A failed episode's objects decide its label: the goal's object moved but misplaced, another object
    moved instead, or none moved (the hand's label stays)."""
    from libero_dp.evaluate import goals

    task = sim.resolve_tasks(["libero_goal:8"])[0]  # put the bowl on the plate
    assert goals.goal_objects(task.bddl_file) == ("akita_black_bowl_1",)
    env = sim.make_env(task, render=False)
    try:
        sim.reset_to(env, 0, sim.official_init_states(task)[0])
        s0 = sim.get_state(env)

        def moved(name: str, dx: float) -> np.ndarray:
            sim.set_state(env, s0)
            joint = env.env.objects_dict[name].joints[0]
            q = env.sim.data.get_joint_qpos(joint).copy()
            q[0] += dx
            env.sim.data.set_joint_qpos(joint, q)
            env.sim.forward()
            return np.stack([s0, sim.get_state(env)])

        assert goals.goal_failure(env, task, np.stack([s0, s0])) == (None, [])
        assert goals.goal_failure(env, task, moved("akita_black_bowl_1", 0.1)) == (
            "right_object_wrong_place",
            ["akita_black_bowl_1"],
        )
        assert goals.goal_failure(env, task, moved("wine_bottle_1", 0.1)) == (
            "wrong_object_moved",
            ["wine_bottle_1"],
        )
        assert goals.goal_failure(env, task, moved("wine_bottle_1", 0.02))[0] is None  # under MOVED_M
    finally:
        env.close()
