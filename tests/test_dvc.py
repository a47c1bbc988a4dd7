"""The DVC wiring, run for real in a temporary copy of the repo on a tiny config.

Checks that a second `dvc repro` is a no-op, and that each param change reruns exactly the stages that
read it: scale.pos_unit -> scale and after (never collect/extract), windows.horizon -> not scale,
exec.steps -> eval and report only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.sim, pytest.mark.slow]

TINY = {
    "collect": {
        "demos_per_task": 3,
        "image_size": 64,
        "expert_check_episodes": 1,
        "workers": 1,
        "max_steps": 300,
    },
    "scale": {"val_fraction": 0.34},
    "windows": {"horizon": 16},
    "train": {"steps": 3, "batch_size": 4, "val_every": 2, "ckpt_every": 2, "log_every": 1, "num_workers": 0},
    "eval": {"episodes_per_task": 1, "max_steps": 30, "workers": 1, "videos_success": 0, "videos_failure": 1},
    "exec": {"steps": 16},
}


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if f.startswith(("tests/", "benchmarks/")) or not (REPO / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)


def _set_params(root: Path, changes: dict) -> None:
    p = yaml.safe_load((root / "params.yaml").read_text())
    for section, kv in changes.items():
        p[section].update(kv)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def _dvc(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
    }
    r = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r.stdout + r.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    _copy_repo(root)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _set_params(root, TINY)
    return root


def test_data_stages_rerun_only_what_reads_a_param(repo_copy: Path) -> None:
    root = repo_copy
    first = _ran(_dvc(root, "repro", "windows"))
    assert first == {"collect", "extract", "scale", "windows"}
    assert _ran(_dvc(root, "repro", "windows")) == set()  # second repro is a no-op
    assert "up to date" in _dvc(root, "status", "windows")

    _set_params(root, {"scale": {"pos_unit": "m"}})
    assert _ran(_dvc(root, "repro", "windows")) == {"scale", "windows"}  # never collect or extract

    _set_params(root, {"windows": {"horizon": 8}})
    assert _ran(_dvc(root, "repro", "windows")) == {"windows"}  # not scale

    _set_params(root, {"extract": {"min_length": 5}})
    ran = _ran(_dvc(root, "repro", "windows"))
    assert "extract" in ran and "collect" not in ran


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True, capture_output=True
    )


def test_full_pipeline_and_exec_experiment(repo_copy: Path) -> None:
    """End to end on the tiny config, then `dvc exp run -S exec.steps=8` reruns eval and report only."""
    root = repo_copy
    _set_params(root, {"windows": {"horizon": TINY["windows"]["horizon"]}})  # the first test shrank it to 8
    ran = _ran(_dvc(root, "repro"))
    assert {"train", "eval", "report"} <= ran
    for f in ("metrics/train.json", "metrics/eval.json", "reports/index.html", "models/ema.safetensors"):
        assert (root / f).exists(), f
    assert _ran(_dvc(root, "repro")) == set()
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "tiny baseline")
    out = _dvc(root, "exp", "run", "-S", "exec.steps=8")
    assert _ran(out) == {"eval", "report"}, out[-3000:]
    shown = json.loads(_dvc_stdout(root, "exp", "show", "--json"))
    assert sorted(set(_find_exec_steps(shown))) == [8, 16]  # the baseline (16) and the experiment (8)


def _dvc_stdout(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _find_exec_steps(node: object) -> list[int]:
    """Every params.yaml exec.steps value anywhere in `dvc exp show --json` output."""
    found = []
    if isinstance(node, dict):
        ex = node.get("exec")
        if isinstance(ex, dict) and isinstance(ex.get("steps"), int):
            found.append(ex["steps"])
        for v in node.values():
            found += _find_exec_steps(v)
    elif isinstance(node, list):
        for v in node:
            found += _find_exec_steps(v)
    return found


def test_failure_page_groups_the_runs_failures_with_their_videos(repo_copy: Path, tmp_path: Path) -> None:
    """libero_dp.failure_page on the tiny run's eval output: every failed episode under its cause, and the
    failure video the eval stage rendered embedded under that cause."""
    from libero_dp.failure_page import build

    root = repo_copy
    lines = (root / "data/eval/records.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines if x.strip()]
    failed = [r for r in records if not r["success"]]
    assert failed, "the 3-step tiny policy should fail its 30-step episode"
    videos = sorted(p.name for p in (root / "data/eval/videos").glob("*failure.mp4"))
    assert videos
    res = build(root / "metrics/eval.json", root / "data/eval", tmp_path / "page", "tiny run")
    assert res["failed"] == len(failed)
    assert sum(res["counts"].values()) == len(failed)
    page = (tmp_path / "page/index.html").read_text()
    summary = (tmp_path / "page/summary.md").read_text()
    for label in res["counts"]:
        assert f"<h2>{label}: " in page and f"### {label}: " in summary
    placed = [v for vs in res["videos"].values() for v in vs]
    assert sorted(placed) == videos
    assert page.count("data:video/mp4;base64,") == len(videos)
    assert all(v in summary for v in videos)
    with pytest.raises(FileNotFoundError, match="records.jsonl: missing"):
        build(root / "metrics/eval.json", tmp_path / "nowhere", tmp_path / "page2", "x")
    assert not (tmp_path / "page2" / "index.html").exists()
