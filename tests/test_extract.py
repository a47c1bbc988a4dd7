"""Extract: reads our official-layout files and rejects each kind of bad input with a precise message."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from libero_dp.config import ExtractParams
from libero_dp.dataformat import DemoFileError
from libero_dp.extract import extract

pytestmark = pytest.mark.sim


def test_extract_reads_our_files(tiny_extracted: Path, tiny_demos) -> None:
    meta = json.loads((tiny_extracted / "meta.json").read_text())
    episodes = json.loads((tiny_extracted / "episodes.json").read_text())
    with h5py.File(next(tiny_demos[0].glob("*_demo.hdf5"))) as f:
        lengths = [f[f"data/demo_{i}"].attrs["num_samples"] for i in range(f["data"].attrs["num_demos"])]
        assert f["data/demo_0"].attrs["num_steps_wait"] == 10
        raw0 = f["data/demo_0/obs/agentview_rgb"][9]  # after the last wait step: what the expert saw first
        act1 = f["data/demo_0/actions"][10]  # the expert's first action
    assert [e["end"] - e["start"] for e in episodes] == [n - 10 for n in lengths]  # 10 wait steps skipped
    imgs = np.load(tiny_extracted / "frames" / "agentview_rgb.npy", mmap_mode="r")
    assert imgs.shape[0] == meta["frames"]
    np.testing.assert_array_equal(imgs[0], raw0[::-1])  # stored upside down (OpenGL), extracted upright
    np.testing.assert_array_equal(np.load(tiny_extracted / "actions.npy")[0], act1)  # obs[j-1] -> actions[j]


def test_parallel_extract_equals_serial(tiny_demos, tmp_path: Path) -> None:
    """extract.workers decodes task files in separate processes into their own slices: same bytes as one."""
    src = tmp_path / "src"
    src.mkdir()
    f = next(tiny_demos[0].glob("*_demo.hdf5"))
    for name in ("A_demo.hdf5", "B_demo.hdf5", "C_demo.hdf5"):  # three task files for three processes
        shutil.copy(f, src / name)
    outs = {}
    for w in (1, 3):
        outs[w] = tmp_path / f"out{w}"
        extract(ExtractParams(source_dir=str(src), out_dir=str(outs[w]), min_length=10, workers=w))
    files = sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[3]) for p in outs[3].rglob("*") if p.is_file())
    assert any(p.suffix == ".npy" for p in files)
    for rel in files:
        assert (outs[1] / rel).read_bytes() == (outs[3] / rel).read_bytes(), rel
    episodes = json.loads((outs[3] / "episodes.json").read_text())
    assert [e["task_id"] for e in episodes] == sorted(e["task_id"] for e in episodes)
    assert {e["task_id"] for e in episodes} == {0, 1, 2}


def _mutated(src_dir: Path, tmp: Path, fn: Callable[[h5py.File], None]) -> Path:
    d = tmp / "src"
    d.mkdir()
    src = next(src_dir.glob("*_demo.hdf5"))
    dst = d / src.name
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return d


def _replace(f: h5py.File, key: str, data: np.ndarray) -> None:
    del f[key]
    f[key] = data


CASES = {
    "missing_data_group": (lambda f: f.move("data", "other"), "missing group 'data'"),
    "missing_obs_key": (
        lambda f: f.__delitem__("data/demo_1/obs/ee_pos"),
        "data/demo_1/obs/ee_pos: missing dataset",
    ),
    "missing_actions": (
        lambda f: f.__delitem__("data/demo_0/actions"),
        "data/demo_0/actions: missing dataset",
    ),
    "wrong_action_shape": (
        lambda f: _replace(f, "data/demo_0/actions", np.zeros((f["data/demo_0/actions"].shape[0], 6))),
        "data/demo_0/actions: expected shape (T, 7)",
    ),
    "wrong_image_dtype": (
        lambda f: _replace(
            f, "data/demo_0/obs/agentview_rgb", f["data/demo_0/obs/agentview_rgb"][()].astype(np.float32)
        ),
        "data/demo_0/obs/agentview_rgb: expected uint8",
    ),
    "nan_action": (
        lambda f: f["data/demo_1/actions"].__setitem__((3, 2), np.nan),
        "data/demo_1/actions: contains NaN/inf (first at step 3)",
    ),
    "inf_proprio": (
        lambda f: f["data/demo_0/obs/gripper_states"].__setitem__((5, 0), np.inf),
        "data/demo_0/obs/gripper_states: contains NaN/inf",
    ),
    "empty_demo": (lambda f: _replace(f, "data/demo_0/actions", np.zeros((0, 7))), "data/demo_0: empty demo"),
    "mismatched_lengths": (
        lambda f: _replace(f, "data/demo_1/obs/joint_states", f["data/demo_1/obs/joint_states"][:-3]),
        "data/demo_1/obs/joint_states: length",
    ),
    "no_demos": (
        lambda f: [f.__delitem__(f"data/{k}") for k in list(f["data"].keys())],
        "no demo_<i> groups",
    ),
    "bad_problem_info": (lambda f: f["data"].attrs.__setitem__("problem_info", "{not json"), "problem_info"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_extract_rejects_bad_input(case: str, tiny_demos, tmp_path: Path) -> None:
    fn, message = CASES[case]
    src = _mutated(tiny_demos[0], tmp_path, fn)
    out = tmp_path / "out"
    with pytest.raises(DemoFileError) as e:
        extract(ExtractParams(source_dir=str(src), out_dir=str(out), min_length=10))
    assert message in str(e.value)
    assert str(src) in str(e.value)  # names the file
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # no partial output


def test_extract_rejects_non_hdf5_and_short(tiny_demos, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "KITCHEN_SCENE1_x_demo.hdf5").write_text("not an hdf5 file")
    with pytest.raises(DemoFileError, match="not an HDF5 file"):
        extract(ExtractParams(source_dir=str(src), out_dir=str(tmp_path / "o")))
    good = tiny_demos[0]
    with pytest.raises(DemoFileError, match="expected at least extract.min_length=100000"):
        extract(ExtractParams(source_dir=str(good), out_dir=str(tmp_path / "o"), min_length=100000))
    with pytest.raises(DemoFileError, match="file not found for task 'NOPE'"):
        extract(ExtractParams(source_dir=str(good), tasks=["NOPE"], out_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def _copy_demo_file(src_dir: Path, tmp: Path) -> Path:
    d = tmp / "src"
    d.mkdir()
    src = next(src_dir.glob("*_demo.hdf5"))
    shutil.copy(src, d / src.name)
    return d / src.name


def test_extract_rejects_truncated_file(tiny_demos, tmp_path: Path) -> None:
    """A file cut short (an interrupted copy or download) still starts like HDF5, so h5py's own OSError used
    to come through without the file's name: now it is a DemoFileError naming the file, and nothing is
    written."""
    dst = _copy_demo_file(tiny_demos[0], tmp_path)
    size = dst.stat().st_size
    with open(dst, "r+b") as f:
        f.truncate(size // 2)
    assert h5py.is_hdf5(dst)  # the signature survives: only reading the file finds the damage
    out = tmp_path / "out"
    with pytest.raises(DemoFileError) as e:
        extract(ExtractParams(source_dir=str(dst.parent), out_dir=str(out), min_length=10))
    msg = str(e.value)
    assert msg.startswith(f"{dst}: ") and "truncated" in msg
    assert "expected a complete, readable LIBERO *_demo.hdf5 file" in msg
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # no partial output


def test_extract_rejects_corrupted_image_chunk(tiny_demos, tmp_path: Path) -> None:
    """Damage inside a compressed image chunk passes validation (images are read only when extracting) and
    fails mid-extraction: the error names the file and the demo, and the half-written output is removed."""
    dst = _copy_demo_file(tiny_demos[0], tmp_path)
    with h5py.File(dst, "r") as f:
        chunk = f["data/demo_1/obs/agentview_rgb"].id.get_chunk_info(3)
    with open(dst, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    out = tmp_path / "out"
    with pytest.raises(DemoFileError) as e:
        extract(ExtractParams(source_dir=str(dst.parent), out_dir=str(out), min_length=10))
    msg = str(e.value)
    assert msg.startswith(f"{dst}: data/demo_1: HDF5 cannot read it")
    assert "expected a complete, readable LIBERO *_demo.hdf5 file" in msg
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
