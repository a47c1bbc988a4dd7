"""Shared fixtures: one tiny real dataset (2 expert demos of the drawer task, 64x64 images), built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + str(Path(__file__).parent / ".mlflow-test.db"))

from libero_dp import sim  # noqa: E402  (sets MUJOCO_GL before anything imports mujoco)
from libero_dp.config import CollectParams, ExtractParams, ScaleParams, WindowsParams  # noqa: E402

TASK = "libero_90:0"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_collect_params(tiny_root: Path) -> CollectParams:
    return CollectParams(
        tasks=[TASK],
        demos_per_task=2,
        image_size=64,
        expert_check_episodes=1,
        workers=1,
        max_steps=300,
        out_dir=str(tiny_root / "demos"),
    )


@pytest.fixture(scope="session")
def tiny_demos(tiny_root: Path, tiny_collect_params: CollectParams) -> tuple[Path, dict]:
    """Real demonstrations from the real simulator, written in the official layout."""
    from libero_dp.collect import collect

    metrics = collect(tiny_collect_params, cache_root=tiny_root / "cache")
    return Path(tiny_collect_params.out_dir), metrics


@pytest.fixture(scope="session")
def tiny_task() -> sim.TaskSpec:
    return sim.resolve_tasks([TASK])[0]


@pytest.fixture(scope="session")
def tiny_extracted(tiny_root: Path, tiny_demos: tuple[Path, dict]) -> Path:
    from libero_dp.extract import extract

    out = tiny_root / "extracted"
    extract(ExtractParams(source_dir=str(tiny_demos[0]), out_dir=str(out), min_length=10))
    return out


@pytest.fixture(scope="session")
def tiny_scaled(tiny_root: Path, tiny_extracted: Path) -> Path:
    from libero_dp.scale import scale

    out = tiny_root / "scaled"
    scale(ScaleParams(val_fraction=0.5, out_dir=str(out)), tiny_extracted)
    return out


@pytest.fixture(scope="session")
def tiny_windows(tiny_root: Path, tiny_extracted: Path, tiny_scaled: Path) -> Path:
    from libero_dp.windows import build_windows

    out = tiny_root / "windows"
    build_windows(WindowsParams(horizon=16, image_history=2, out_dir=str(out)), tiny_extracted, tiny_scaled)
    return out
