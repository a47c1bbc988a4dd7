"""The offline bundle's host side: checksums, preflight (Python + torch, EGL) and the 90-task check's
machinery, on a tiny bundle made here by the real packer; bad input gets a clear error and no partial
output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from libero_dp import bundle
from libero_dp.bundle import MANIFEST, PARTS, BundleError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _tiny_stage(tmp_path: Path) -> Path:
    stage = tmp_path / "stage" / "libero-bundle"
    (stage / "wheels").mkdir(parents=True)
    (stage / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"not really a wheel" * 100)
    (stage / "language.safetensors").write_bytes(b"\0" * 4096)
    (stage / bundle.INFO).write_text(json.dumps({"python": PY}))
    bundle.write_manifest(stage)
    return stage


def _tiny_bundle(tmp_path: Path) -> Path:
    """A real archive + parts list, made by tools/build_bundle.pack as `make bundle` does."""
    from build_bundle import pack

    out = tmp_path / "dist"
    out.mkdir()
    parts = pack(_tiny_stage(tmp_path), out)
    (out / PARTS).write_text(json.dumps({"python": PY, "parts": parts}))
    return out


def test_manifest_catches_missing_and_corrupt_files(tmp_path: Path) -> None:
    stage = _tiny_stage(tmp_path)
    assert set(bundle.verify_tree(stage)["files"]) == {
        "wheels/a-1.0-py3-none-any.whl",
        "language.safetensors",
        bundle.INFO,
    }
    (stage / "language.safetensors").write_bytes(b"\1" * 4096)  # same size, other bytes
    with pytest.raises(BundleError, match=r"1 with a wrong checksum \['language.safetensors'\]"):
        bundle.verify_tree(stage)
    (stage / "wheels" / "a-1.0-py3-none-any.whl").unlink()
    with pytest.raises(BundleError, match=r"1 file\(s\) missing \['wheels/a-1.0-py3-none-any.whl'\]"):
        bundle.verify_tree(stage)
    (stage / MANIFEST).unlink()
    with pytest.raises(BundleError, match="MANIFEST.json: missing"):
        bundle.verify_tree(stage)


def test_unpack_round_trip_and_a_file_missing_from_the_archive(tmp_path: Path) -> None:
    dist = _tiny_bundle(tmp_path)
    root = bundle.unpack(dist, tmp_path / "prefix" / "bundle")
    assert (root / "language.safetensors").read_bytes() == b"\0" * 4096
    # an archive whose manifest lists a file it does not hold: refused, nothing left behind
    stage = tmp_path / "stage" / "libero-bundle"
    (stage / "wheels" / "a-1.0-py3-none-any.whl").unlink()
    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(bad / bundle.ARCHIVE, "w:xz") as tar:
        tar.add(stage, arcname="libero-bundle")
    p = bad / bundle.ARCHIVE
    part = {"name": p.name, "size": p.stat().st_size, "sha256": bundle.sha256(p)}
    (bad / PARTS).write_text(json.dumps({"python": "3.12", "parts": [part]}))
    with pytest.raises(BundleError, match=r"missing \['wheels/a-1.0-py3-none-any.whl'\]"):
        bundle.unpack(bad, tmp_path / "other" / "bundle")
    assert not (tmp_path / "other" / "bundle").exists() and list((tmp_path / "other").iterdir()) == []


def _install(dist: Path, prefix: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "libero_dp.bundle", "install", str(dist), "--prefix", str(prefix), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def test_install_refuses_a_missing_or_damaged_part_before_any_work(tmp_path: Path) -> None:
    dist = _tiny_bundle(tmp_path)
    archive = dist / bundle.ARCHIVE
    data = archive.read_bytes()
    archive.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    r = _install(dist, tmp_path / "prefix")
    assert r.returncode == 2 and "sha256 differs" in r.stderr and "copy it again" in r.stderr
    archive.unlink()
    r = _install(dist, tmp_path / "prefix")
    assert r.returncode == 2 and f"{archive}: bundle part missing" in r.stderr
    assert not (tmp_path / "prefix").exists()


def test_host_without_egl_gets_told_what_to_install(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "libEGL.so.1")
    with pytest.raises(BundleError, match=r"cannot load .*libEGL.so.1.*apt-get install libegl1"):
        bundle.check_egl(missing)
    # the installer checks EGL before unpacking anything (this interpreter has torch, as a host must)
    r = _install(_tiny_bundle(tmp_path), tmp_path / "prefix", "--egl-lib", missing)
    assert r.returncode == 2 and "EGL: cannot load" in r.stderr and "--unpack-gl" in r.stderr
    assert not (tmp_path / "prefix").exists()
    # and so does the 90-task check: no JSON, exit 2
    out = tmp_path / "check.json"
    cmd = [sys.executable, "tools/check_libero90.py", "--egl-lib", missing, "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "EGL: cannot load" in r.stderr and not out.exists()


def test_host_python_without_torch_or_of_another_version(tmp_path: Path) -> None:
    py = PY
    assert bundle.check_python({"python": py}, sys.executable)["torch"]
    with pytest.raises(BundleError, match=r"the bundle's wheels are for CPython 3.99"):
        bundle.check_python({"python": "3.99"}, sys.executable)
    bare = tmp_path / "bare"  # an interpreter that cannot see torch: a venv without site packages
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(BundleError, match="has no torch: the bundle leaves torch to the host"):
        bundle.check_python({"python": py}, str(bare / "bin" / "python"))


@pytest.mark.sim
def test_check_one_task_builds_resets_and_renders(tmp_path: Path) -> None:
    """The host check on one task, here (EGL on llvmpipe): imports, services, env, both cameras."""
    out = tmp_path / "check.json"
    cmd = [sys.executable, "tools/check_libero90.py", "--tasks", "libero_90:0", "--workers", "1"]
    cmd += ["--image-size", "64", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    s = json.loads(out.read_text())
    assert r.returncode == 0, (r.stderr[-2000:], s.get("failed"), s.get("imports"))
    assert s["tasks"] == s["tasks_ok"] == 1 and s["failed"] == {}
    rec = s["per_task"][0]
    assert rec["ok"] and rec["agentview_rgb_mean"] > 0 and rec["eye_in_hand_rgb_mean"] > 0
    assert s["services"] == {"ray": "ok", "mlflow_sqlite": "ok"} and s["language"].startswith("ok")
    assert s["host"]["egl"]["devices"] >= 1


def test_pack_splits_into_parts_that_reassemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the part size the archive is split; the installer streams the parts back together."""
    import build_bundle

    stage = _tiny_stage(tmp_path)
    (stage / "noise.bin").write_bytes(bytes(range(256)) * 64 + __import__("os").urandom(20000))
    bundle.write_manifest(stage)
    monkeypatch.setattr(build_bundle, "PART_BYTES", 8000)
    out = tmp_path / "dist"
    out.mkdir()
    parts = build_bundle.pack(stage, out)
    assert len(parts) >= 3 and all(p["size"] <= 8000 for p in parts)
    (out / PARTS).write_text(json.dumps({"python": "3.12", "parts": parts}))
    root = bundle.unpack(out, tmp_path / "p" / "bundle")
    assert (root / "noise.bin").read_bytes() == (stage / "noise.bin").read_bytes()
    shutil.rmtree(tmp_path / "p")


def test_halved_texture_is_the_next_mip_level() -> None:
    """Textures over the limit are halved by 2x2 box averages (what a mipmap chain holds); small or odd-sized
    ones are kept byte for byte."""
    import io

    import numpy as np
    from build_bundle import halve_texture
    from PIL import Image

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = np.asarray(Image.open(io.BytesIO(halve_texture(png(a), 4))))
    want = (a.astype(int).reshape(4, 2, 4, 2, 3).sum((1, 3)) + 2) // 4
    assert out.shape == (4, 4, 3) and (out == want).all()
    assert halve_texture(png(a), 8) == png(a)
    odd = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    assert halve_texture(png(odd), 4) == png(odd)
