"""Report rendering and run comparison on small fabricated, schema-correct inputs (no simulator, no training).

The scale metrics and histograms come from the real scale stage run on synthetic extracted arrays, so their
schema cannot drift from the code; train/eval files follow the train and eval stages' documented layouts.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from libero_dp import report as rp
from libero_dp.config import ScaleParams
from libero_dp.fileio import write_json
from libero_dp.metrics import rate_summary, wilson

ROOT = Path(__file__).resolve().parents[1]
TASKS = [
    "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE10_put_the_butter_at_the_back_in_the_top_drawer_of_the_cabinet_and_close_it",
    "LIVING_ROOM_SCENE2_pick_up_the_butter_and_put_it_in_the_basket",
]
LABELS = ["stuck", "timed_out_moving", "gripper_never_closed", "error"]


def _load_script(name: str, path: Path):
    """Import a script that is not in a package (stages/, benchmarks/) by path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def _demo_path(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    start = np.array([-0.1, 0.0, 1.1]) + rng.normal(0, 0.01, 3)
    goal = np.array([0.05, 0.2, 0.95])
    return start + (goal - start) * t + 0.03 * np.sin(np.pi * t) * np.array([0, 0, 1])


def fabricate(root: Path, n_episodes: int = 6) -> dict[str, Path]:
    """A finished run in miniature under `root`: metrics/, data/{extracted,scaled,eval}, params, dvc.lock."""
    rng = np.random.default_rng(0)
    metrics, data = root / "metrics", root / "data"
    ext = data / "extracted"
    ext.mkdir(parents=True)
    episodes, ee, acts, ori, grip, cursor = [], [], [], [], [], 0
    for tid in range(len(TASKS)):
        for k in range(4):
            n = 50 + 5 * k
            ee.append(_demo_path(rng, n))
            a = np.concatenate(
                [
                    rng.normal(0, 0.3, (n, 3)),
                    rng.normal(0, 0.08, (n, 3)),
                    np.where(np.arange(n) > n // 2, 1.0, -1.0)[:, None],
                ],
                axis=1,
            )
            acts.append(np.clip(a, -1, 1))
            ori.append(np.array([np.pi, 0, 0]) + rng.normal(0, 0.02, (n, 3)))
            grip.append(np.tile([0.04, -0.04], (n, 1)))
            episodes.append(
                {"task_id": tid, "demo": f"demo_{k}", "start": cursor, "end": cursor + n, "reset_seed": k}
            )
            cursor += n
    for name, arr in (("ee_pos", ee), ("actions", acts), ("ee_ori", ori), ("gripper_states", grip)):
        np.save(ext / f"{name}.npy", np.concatenate(arr))
    write_json(ext / "episodes.json", episodes)
    write_json(
        ext / "tasks.json",
        [
            {"task_id": i, "name": t, "language": t.lower(), "file": "", "demos": 4}
            for i, t in enumerate(TASKS)
        ],
    )

    from libero_dp.scale import scale

    scaled = data / "scaled"
    write_json(metrics / "scale.json", scale(ScaleParams(out_dir=str(scaled), val_fraction=0.25), ext))
    write_json(
        metrics / "collect.json",
        {
            "tasks": {t: {"demos": 4} for t in TASKS},
            "num_demos": 12,
            "mean_expert_success": 0.9,
            "wall_s": 12.0,
        },
    )
    write_json(metrics / "extract.json", {"frames": cursor, "demos": 12, "image_size": 64, "tasks": {}})
    write_json(metrics / "windows.json", {"horizon": 16, "image_history": 2, "splits": {}, "tasks": {}})

    # train: the columns train.py writes; validation only every 250 steps (blank cells otherwise)
    with open(metrics / "train_log.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "lr", "val_mse", "samples_per_s"])
        for step in range(50, 1001, 50):
            lr = 3e-4 * min(1.0, step / 200) * (0.5 + 0.5 * np.cos(np.pi * step / 1000))
            val = 0.5 / np.sqrt(step) if step % 250 == 0 else ""
            w.writerow([step, 1.0 / np.sqrt(step), f"{lr:.6g}", val, 120.0 + step / 100])
    dims = ["x", "y", "z", "rx", "ry", "rz", "gripper"]
    write_json(
        metrics / "train.json",
        {
            "steps": 1000,
            "loss": 0.031,
            "val_mse": 0.016,
            "val_mse_model": 0.02,
            "val_mse_dim": dict.fromkeys(dims, 0.01),
            "params": 123456,
            "samples_per_s": 130.0,
            "device": "cpu",
            "world_size": 1,
        },
    )

    # eval: records as rollout() writes them, videos named as the eval stage names them
    ev = data / "eval"
    (ev / "videos").mkdir(parents=True)
    records, demo, n_failed = [], _demo_path(rng, 60), 0
    for t_i, task in enumerate(TASKS):
        for e in range(n_episodes):
            success = (e + t_i) % 3 != 0
            label = None if success else LABELS[n_failed % len(LABELS)]
            n_failed += not success
            steps = 40 + e if success else 400
            path = [] if label == "error" else (demo[: steps if success else 60] + rng.normal(0, 0.004, 3))
            records.append(
                {
                    "task": task,
                    "suite": "libero_90",
                    "task_index": t_i,
                    "episode": e,
                    "init_index": e,
                    "demo": None,
                    "seed": 0,
                    "reset_seed": e,
                    "policy": "learned",
                    "success": success,
                    "steps_to_success": steps if success else None,
                    "steps": 0 if label == "error" else steps,
                    "wait_steps": 10,
                    "chunks": 3,
                    "clip_rate": None if label == "error" else 0.01 * e,
                    "out_of_range_rate": None if label == "error" else 0.002,
                    "inference_ms": 35.0 + e,
                    "wall_s": 3.0,
                    "error": "RuntimeError: boom" if label == "error" else None,
                    "gripper_closed": label != "gripper_never_closed",
                    "failure": label,
                    "eef_path": np.asarray(path).tolist(),
                }
            )
    with open(ev / "records.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    from libero_dp.video import encode_mp4

    frames = [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(8)]
    for r in records:
        if r["task"] == TASKS[0] and not r["error"]:
            (ev / "videos" / rp.video_name(r)).write_bytes(encode_mp4(frames, fps=10))
    tasks_m = {}
    for task in TASKS:
        rs = [r for r in records if r["task"] == task]
        succ = [r for r in rs if r["success"]]
        tasks_m[task] = {
            **rate_summary(len(succ), len(rs)),
            "mean_steps_to_success": float(np.mean([r["steps_to_success"] for r in succ])),
            "median_steps_to_success": float(np.median([r["steps_to_success"] for r in succ])),
            "mean_clip_rate": 0.02,
            "mean_out_of_range_rate": 0.002,
            "mean_inference_ms": 37.0,
            "errors": sum(bool(r["error"]) for r in rs),
            "failures": {lab: sum(r["failure"] == lab for r in rs) for lab in LABELS},
        }
    n_succ = sum(r["success"] for r in records)
    write_json(
        metrics / "eval.json",
        {
            "policy": "learned",
            "overall": {**rate_summary(n_succ, len(records)), "mean_clip_rate": 0.02},
            "tasks": tasks_m,
            "exec": {"steps": 64, "stride": 1},
            "timing": {"wall_s": 100.0},
            "videos": [],
        },
    )
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "dvc.lock").write_text(
        yaml.safe_dump(
            {
                "schema": "2.0",
                "stages": {
                    "scale": {
                        "cmd": "python stages/scale.py",
                        "deps": [{"path": "data/extracted", "md5": "ab" * 16 + ".dir"}],
                        "params": {"params.yaml": {"scale": {"pos_unit": "cm"}}},
                        "outs": [{"path": "data/scaled", "md5": "cd" * 16 + ".dir", "nfiles": 5}],
                    },
                    "eval": {
                        "cmd": "python stages/eval.py",
                        "deps": [],
                        "params": {"params.yaml": {"exec": {"steps": 64}}},
                        "outs": [{"path": "data/eval", "md5": "ef" * 16 + ".dir", "nfiles": 7}],
                    },
                },
            }
        )
    )
    return {
        "metrics": metrics,
        "scaled": scaled,
        "eval": ev,
        "extracted": ext,
        "params": root / "params.yaml",
        "lock": root / "dvc.lock",
        "out": root / "reports",
    }


def _inputs(paths: dict[str, Path], extracted: bool = True) -> rp.Inputs:
    return rp.load_inputs(
        paths["scaled"],
        paths["eval"],
        paths["extracted"] if extracted else None,
        metrics_dir=paths["metrics"],
        params_file=paths["params"],
        lock_file=paths["lock"],
        repo_dir=ROOT,
    )


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict] = []
        self.videos: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "video":
            self.videos.append(dict(attrs))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], rp.Report, list[Path]]:
    paths = fabricate(tmp_path_factory.mktemp("run"))
    rep, files = rp.build_report(
        paths["out"], _inputs(paths), paths_episodes=3, tasks_csv=paths["metrics"] / "eval_tasks.csv"
    )
    return paths, rep, files


def test_every_image_is_an_embedded_png(built: tuple) -> None:
    paths, rep, _ = built
    page = (paths["out"] / "index.html").read_text()
    tags = _Tags()
    tags.feed(page)
    # success, families (2 scenes over 3 tasks), training, magnitudes, histograms, paths, failures
    assert len(tags.imgs) == rep.images == 7
    for img in tags.imgs:
        src = img.get("src", "")
        assert src.startswith("data:image/png;base64,"), f"image {img.get('alt')} is not embedded"
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n", img.get("alt")
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
        with Image.open(io.BytesIO(raw)) as im:
            assert im.size[0] > 200 and im.size[1] > 100, (img.get("alt"), im.size)
            assert np.asarray(im.convert("L")).std() > 5, f"{img.get('alt')} is blank"
    assert not re.findall(r"<img[^>]*src=\"(?!data:image/png;base64,)", page), "a non-embedded image source"


def test_tables_match_the_records(built: tuple) -> None:
    paths, rep, _ = built
    records = rp.read_records(paths["eval"] / "records.jsonl")
    assert [r.name for r in rep.tasks] == sorted(TASKS)
    for row in rep.tasks:
        rs = [r for r in records if r["task"] == row.name]
        k = sum(r["success"] for r in rs)
        assert (row.n, row.successes) == (len(rs), k)
        assert row.interval == pytest.approx(wilson(k, len(rs)))
    assert rep.overall.n == len(records)
    assert rep.overall.successes == sum(r["success"] for r in records)
    assert [f.name for f in rep.families] == ["KITCHEN_SCENE10", "LIVING_ROOM_SCENE2"]
    assert not [w for w in rep.warnings if "!=" in w], rep.warnings  # records agree with eval.json
    page = (paths["out"] / "index.html").read_text()
    lo, hi = rep.overall.interval
    assert f"[{lo:.1%}, {hi:.1%}]" in page
    for lab in ("stuck", "timed_out_moving", "gripper_never_closed", "error"):
        assert f"<h3>{lab} — " in page
    with open(paths["metrics"] / "eval_tasks.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["task"] for r in rows] == [*sorted(TASKS), "overall"]
    assert float(rows[0]["wilson_low"]) <= float(rows[0]["success_rate"]) <= float(rows[0]["wilson_high"])


def test_units_callout_names_every_unit(built: tuple) -> None:
    paths, rep, _ = built
    scale_m = json.loads((paths["metrics"] / "scale.json").read_text())
    md = (paths["out"] / "summary.md").read_text()
    for unit in ("m", "cm", "mm"):
        assert f"| {unit}" in md
    r_m, r_cm = scale_m["pos_rot_ratio_by_unit"]["m"], scale_m["pos_rot_ratio_by_unit"]["cm"]
    assert r_cm == pytest.approx(100 * r_m)
    assert rp.ratio_verdict(0.05) == "positions 20x smaller than rotations"
    assert rp.ratio_verdict(1.0) == "comparable magnitudes"
    assert "seed's failure" in md and "Wilson 95%" in md


def test_failure_videos_embedded_and_large_ones_linked(built: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, rep, _ = built
    page = (paths["out"] / "index.html").read_text()
    tags = _Tags()
    tags.feed(page)
    n_videos = len(list((paths["eval"] / "videos").glob("*.mp4")))
    assert n_videos and len(tags.videos) == n_videos  # failures in their label group, the rest under "other"
    assert all(v["src"].startswith("data:video/mp4;base64,") for v in tags.videos)
    monkeypatch.setattr(rp, "VIDEO_EMBED_MAX", 10)
    rel = rp.video_html(next((paths["eval"] / "videos").glob("*failure.mp4")), paths["out"])
    assert 'src="../data/eval/videos/' in rel and "linked" in rel


def test_provenance_and_params(built: tuple) -> None:
    paths, rep, _ = built
    page = (paths["out"] / "index.html").read_text()
    assert "cdcdcdcdcd" in page and "data/scaled" in page  # dvc.lock outs hash
    assert "pos_unit: cm" in page and "paths_episodes" in page
    assert rep.markdown.count("```yaml") == 1


def test_missing_documented_input_names_its_stage(tmp_path: Path) -> None:
    paths = fabricate(tmp_path)
    (paths["eval"] / "records.jsonl").unlink()
    with pytest.raises(rp.ReportInputError, match="'eval' stage"):
        _inputs(paths)


def test_optional_inputs_missing(tmp_path: Path) -> None:
    """No demo arrays, no videos, no dvc.lock: the report still renders, and says what is missing."""
    paths = fabricate(tmp_path)
    shutil.rmtree(paths["eval"] / "videos")
    paths["lock"].unlink()
    rep, _ = rp.build_report(paths["out"], _inputs(paths, extracted=False))
    assert any("dvc.lock" in w for w in rep.warnings)
    assert "<video" not in rep.html and "Demo arrays not available" in rep.html


def test_flatten_metrics_for_mlflow(built: tuple) -> None:
    paths, _, _ = built
    flat = rp.flatten_metrics({"eval": json.loads((paths["metrics"] / "eval.json").read_text())})
    lo, rate, hi = (flat[f"eval.overall.{k}"] for k in ("wilson95.0", "success_rate", "wilson95.1"))
    assert lo <= rate <= hi
    assert all(isinstance(v, float) for v in flat.values())


def test_report_logs_summary_run(built: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage's MLflow logging path: all params, flattened metrics, the report files as artifacts."""
    import mlflow

    from libero_dp.tracking import EXPERIMENT, stage_run

    paths, _, files = built
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    inputs = _inputs(paths)
    with stage_run("report", yaml.safe_load(paths["params"].read_text())) as run:
        run.log_metrics(rp.flatten_metrics(inputs.metrics))
        for f in files:
            run.log_artifact(f)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="tags.stage = 'report'")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["params.exec.steps"] == "64" and row["params.scale.pos_unit"] == "cm"
    expected = inputs.metrics["eval"]["overall"]["success_rate"]
    assert row["metrics.eval.overall.success_rate"] == pytest.approx(expected)
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(row["run_id"])}
    assert {"index.html", "summary.md", "eval_tasks.csv"} <= arts


# ------------------------------------------------------------------------------------------------ compare
def _exp(rev: str, name: str | None, steps: int, stride: int, succ: int, n: int, **extra: object) -> dict:
    params = {
        "exec": {"steps": steps, "stride": stride, "temporal_ensemble": False},
        "train": {"lr": extra.get("lr", 3e-4), "seed": extra.get("seed", 0)},
    }
    return {
        "rev": rev,
        "name": name,
        "error": None,
        "experiments": None,
        "data": {
            "rev": rev,
            "timestamp": None,
            "params": {"params.yaml": {"data": params}},
            # dvc exp show drops lists from metrics (no wilson95 here): compare must recompute the interval
            "metrics": {
                "metrics/eval.json": {
                    "data": {
                        "overall": {
                            "success_rate": succ / n,
                            "n": n,
                            "successes": succ,
                            "mean_clip_rate": 0.01,
                        }
                    }
                }
            },
            "deps": {},
            "outs": {},
            "meta": {},
        },
    }


def test_compare_parses_dvc_exp_show(tmp_path: Path) -> None:
    from libero_dp import compare as cmp

    base = _exp("a" * 40, "main", 64, 1, 40, 50)
    base["experiments"] = [
        {"revs": [_exp("b" * 40, "steps8", 8, 1, 20, 50)], "executor": None, "name": "steps8"},
        {"revs": [_exp("c" * 40, "stride8", 64, 8, 2, 50, lr=1e-4)], "executor": None, "name": "stride8"},
        {
            "revs": [{"rev": "d" * 40, "name": "queued", "data": None, "error": None, "experiments": None}],
            "executor": {"state": "queued"},
            "name": "queued",
        },
    ]
    data = [_exp("workspace", None, 64, 1, 40, 50), base]
    rows = cmp.rows_from_exp_show(data)
    assert [r.name for r in rows] == ["workspace", "main", "steps8", "stride8"]
    by = {r.name: r for r in rows}
    assert (by["steps8"].steps, by["steps8"].stride) == (8, 1)
    assert (by["steps8"].lo, by["steps8"].hi) == pytest.approx(wilson(20, 50))
    assert by["stride8"].changed == "train.lr=0.0001"
    assert by["steps8"].changed == ""
    out = tmp_path / "out"
    cmp.write_outputs(out, rows, [])
    md = (out / "compare.md").read_text()
    assert "stride8" in md and "[" in md
    with Image.open(out / "compare.png") as im:
        assert im.size[0] > 200
    assert "data:image/png;base64," in (out / "compare.html").read_text()


def test_compare_reads_mlflow_eval_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from libero_dp import compare as cmp
    from libero_dp.tracking import stage_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    for steps, succ in ((64, 45), (8, 20)):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"exec": {"steps": steps, "stride": 1}}))
        logged = {"eval": {"episodes_per_task": 50}, "exec": {"steps": steps, "stride": 1}}
        with stage_run("eval", logged) as run:
            run.log_metrics({"overall": {**rate_summary(succ, 50), "mean_clip_rate": 0.02}})
    rows = cmp.rows_from_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}", "eval")
    assert sorted((r.steps, r.successes, r.n) for r in rows) == [(8, 20, 50), (64, 45, 50)]
    assert all(r.clip_rate == pytest.approx(0.02) for r in rows)


@pytest.mark.browser
def test_report_screenshot_not_blank(built: tuple, tmp_path: Path) -> None:
    shot = _load_script("report_screenshot", ROOT / "benchmarks" / "report_screenshot.py")
    if shot.find_chromium() is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    paths, _, _ = built
    png = tmp_path / "shot.png"
    stats = shot.screenshot(paths["out"] / "index.html", png)
    assert stats["std"] > 20 and stats["colours"] > 50, stats


def test_multitask_section_ranks_tasks_from_the_worst_beside_the_expert() -> None:
    from libero_dp.metrics import rate_summary
    from libero_dp.report.multitask import multitask

    def task(k: int, fam: str, fails: dict[str, int]) -> dict:
        return {**rate_summary(k, 10), "family": fam, "failures": fails}

    ev = {
        "tasks": {
            f"T{i}": task(k, "a" if i < 3 else "b", {"stuck": 10 - k} if k < 10 else {})
            for i, k in enumerate([9, 2, 10, 5, 7])
        }
    }
    experts = {"tasks": {"T1": {"success_rate": 0.5}, "T3": {"success_rate": 1.0}}}
    m = multitask(ev, experts)
    assert m is not None and [r[1] for r in m["rows"]] == ["T1", "T3", "T4", "T0", "T2"]
    assert m["rows"][0] == ["1", "T1", "a", "20.0% (2/10)", m["rows"][0][4], "50.0%", "0.40", "stuck (8)"]
    assert m["rows"][1][5:7] == ["100.0%", "0.50"] and m["rows"][2][5:7] == ["–", "–"]
    assert m["rows"][-1][-1] == "–"  # no failures
    assert m["family_rows"][0] == ["a", "3", "70.0%", "50.0%", "1.40", "2"]
    assert m["mean_task_success"] == "66.0%" and m["at_least_90"] == 2 and m["expert_tasks"] == 2
    assert (
        multitask({"tasks": dict(list(ev["tasks"].items())[:4])}, experts) is None
    )  # a few tasks: no section


def test_compare_spread_across_training_seeds(tmp_path: Path) -> None:
    """Experiments that differ only in train.seed are summarised together: each seed, mean, std, min, max."""
    from libero_dp import compare as cmp

    base = _exp("a" * 40, "main", 64, 1, 40, 50)
    base["experiments"] = [
        {"revs": [_exp(c * 40, f"s{i}", 64, 1, k, 50, seed=i)], "executor": None, "name": f"s{i}"}
        for i, (c, k) in enumerate(zip("bcd", [45, 40, 47], strict=True), start=1)
    ] + [{"revs": [_exp("e" * 40, "lr", 64, 1, 10, 50, lr=1e-4, seed=1)], "executor": None, "name": "lr"}]
    rows = cmp.rows_from_exp_show([base])
    (g,) = cmp.seed_groups(rows)  # main (seed 0) + s1..s3; "lr" differs in more than the seed
    assert g[0].startswith("main (seed 0: 80.0%), s1 (seed 1: 90.0%)") and g[1] == "4"
    rates = [0.8, 0.9, 0.8, 0.94]
    assert g[2] == f"{sum(rates) / 4:.1%}" and g[4:6] == ["80.0%", "94.0%"]
    assert g[3] == f"{100 * float(np.std(rates, ddof=1)):.1f} pts"
    md = cmp.write_outputs(tmp_path, rows, [])
    assert "## Training seeds" in md and "Training seeds" in (tmp_path / "compare.html").read_text()
