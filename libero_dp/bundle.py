"""The offline bundle on the host side: verify it, check the host, install it (standard library only).

`make bundle` (tools/build_bundle.py) packs what the pipeline needs beyond torch into one xz archive (or a few
parts <= 64 MiB); an air-gapped GPU host installs it with one command (tools/install_bundle.sh):

    python3 -m libero_dp.bundle install dist --prefix .bundle     # verify, preflight, install, env.sh

Nothing here imports a third-party package, because it runs before any is installed. Every failure names
what is missing and what to do, and comes before any file is written: a missing or corrupt part or file
(checksums), a Python that is not the bundle's, a host without torch, a host whose EGL cannot open a device.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ARCHIVE = "libero-bundle.tar.xz"
PARTS = "libero-bundle.parts.json"  # beside the archive (or its parts): name -> sha256, size
MANIFEST = "MANIFEST.json"  # inside the archive: every file's sha256 and size
INFO = "BUNDLE.json"  # inside the archive: composition (packages, versions, what was trimmed or left out)
# 62 MiB, not 64: one part plus the repository fits the 64 MiB a device-tool call carries
PART_BYTES = 62 * 1024 * 1024


class BundleError(RuntimeError):
    """A bundle or host problem, with what to do about it in the message."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: Path) -> dict[str, Any]:
    """MANIFEST.json for every file under `root` (itself excluded)."""
    files = {
        p.relative_to(root).as_posix(): {"sha256": sha256(p), "size": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def verify_tree(root: Path) -> dict[str, Any]:
    """Check every file listed in root/MANIFEST.json is there with its size and checksum."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing; this is not an unpacked bundle (rebuild it with `make bundle`)")
    manifest = json.loads(mpath.read_text())
    missing, bad = [], []
    for rel, want in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            missing.append(rel)
        elif p.stat().st_size != want["size"] or sha256(p) != want["sha256"]:
            bad.append(rel)
    if missing or bad:
        raise BundleError(
            f"{root}: bundle incomplete: {len(missing)} file(s) missing {missing[:5]}, "
            f"{len(bad)} with a wrong checksum {bad[:5]} (of {len(manifest['files'])} in {MANIFEST}); "
            "copy the bundle again or rebuild it with `make bundle`"
        )
    return manifest


def verify_parts(folder: Path) -> list[Path]:
    """The archive's parts in order, each checked against libero-bundle.parts.json."""
    index = folder / PARTS
    if not index.is_file():
        raise BundleError(f"{index}: missing; expected the bundle's parts list beside {ARCHIVE}")
    parts = json.loads(index.read_text())["parts"]
    out = []
    for part in parts:
        p = folder / part["name"]
        if not p.is_file():
            raise BundleError(f"{p}: bundle part missing ({len(parts)} parts listed in {index})")
        if p.stat().st_size != part["size"] or sha256(p) != part["sha256"]:
            raise BundleError(f"{p}: size or sha256 differs from {index}: the copy is damaged; copy it again")
        out.append(p)
    return out


class _Joined:
    """A read-only file object over the parts, in order, so tarfile streams them without a joined copy."""

    def __init__(self, parts: list[Path]) -> None:
        self.parts, self.i, self.f = parts, 0, open(parts[0], "rb")

    def read(self, n: int = -1) -> bytes:
        out = b""
        while n < 0 or len(out) < n:
            chunk = self.f.read(-1 if n < 0 else n - len(out))
            if chunk:
                out += chunk
                continue
            self.f.close()
            self.i += 1
            if self.i == len(self.parts):
                break
            self.f = open(self.parts[self.i], "rb")
        return out

    def close(self) -> None:
        self.f.close()


def unpack(folder: Path, dest: Path) -> Path:
    """Verify the parts, extract them into dest (replaced atomically), verify every file; return dest."""
    parts = verify_parts(folder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        stream = _Joined(parts)
        try:
            with tarfile.open(fileobj=stream, mode="r|xz") as tar:
                tar.extractall(tmp, filter="data")
        finally:
            stream.close()
        root = tmp / "libero-bundle"
        verify_tree(root)
        if dest.exists():
            shutil.rmtree(dest)
        root.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------------------------- host checks
EGL_HELP = (
    "install the EGL loader and an EGL vendor: Debian/Ubuntu `apt-get install libegl1 libopengl0` (glvnd) "
    "plus the NVIDIA driver's EGL library (or libegl-mesa0 libgl1-mesa-dri for CPU rendering), or pass "
    "--unpack-gl to unpack the bundle's glvnd loaders (gl/*.deb) into /; if a vendor is installed but not "
    "found, set __EGL_VENDOR_LIBRARY_FILENAMES to its json (NVIDIA: .../glvnd/egl_vendor.d/10_nvidia.json)"
)


def check_egl(lib: str | None = None) -> dict[str, Any]:
    """Open libEGL, list EGL devices (EGL_EXT_device_enumeration, what MuJoCo's EGL backend uses), initialise
    a display on the first one. `lib` overrides the library (tests point it at a missing file)."""
    name = lib or os.environ.get("LIBERO_DP_EGL_LIB") or "libEGL.so.1"
    try:
        egl = ctypes.CDLL(name)
    except OSError as e:
        raise BundleError(f"EGL: cannot load {name} ({e}); {EGL_HELP}") from None
    gl = next((g for g in ("libOpenGL.so.0", "libGL.so.1") if _loads(g)), None)
    if gl is None:
        raise BundleError(f"EGL: {name} loads but neither libOpenGL.so.0 nor libGL.so.1 does; {EGL_HELP}")
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    query = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
    get_display = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    if not query or not get_display:
        raise BundleError(f"EGL: {name} has no EGL device extension (no vendor library found); {EGL_HELP}")
    devices = (ctypes.c_void_p * 32)()
    count = ctypes.c_int(0)
    query_fn = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
    if not query_fn(query)(32, devices, ctypes.byref(count)) or count.value == 0:
        raise BundleError(f"EGL: {name} lists no EGL device; {EGL_HELP}")
    display_fn = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)
    display = display_fn(get_display)(0x313F, devices[0], None)  # EGL_PLATFORM_DEVICE_EXT
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    if not display or not egl.eglInitialize(display, ctypes.byref(major), ctypes.byref(minor)):
        raise BundleError(
            f"EGL: {name} found {count.value} device(s) but could not initialise one; {EGL_HELP}"
        )
    egl.eglTerminate.argtypes = [ctypes.c_void_p]
    egl.eglTerminate(display)
    return {"lib": name, "gl": gl, "devices": count.value, "version": f"{major.value}.{minor.value}"}


def _loads(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def check_python(info: dict[str, Any], python: str) -> dict[str, Any]:
    """The host Python must match the wheels (version, x86_64) and hold torch (the bundle carries none)."""
    probe = (
        "import json, platform, sys, importlib.util as u; "
        "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'machine': platform.machine(), "
        "'torch': bool(u.find_spec('torch'))}))"
    )
    got = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout)
    want = info["python"]
    if got["version"] != want or got["machine"] != "x86_64":
        raise BundleError(
            f"{python} is Python {got['version']} on {got['machine']}; the bundle's wheels are for CPython "
            f"{want} on x86_64 (rebuild with `make bundle BUNDLE_PYTHON=...` or use a matching python)"
        )
    if not got["torch"]:
        raise BundleError(
            f"{python} has no torch: the bundle leaves torch to the host (install the host's CUDA build of "
            f"torch for this Python, or point PYTHON= at the interpreter that has it)"
        )
    return got


def unpack_gl_debs(root: Path) -> list[str]:
    """Unpack the bundled glvnd loaders into / (only the libraries; as the device README prescribes)."""
    debs = sorted((root / "gl").glob("*.deb"))
    if not debs:
        raise BundleError(f"{root / 'gl'}: no .deb files in this bundle; {EGL_HELP}")
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), "/"], check=True)
    subprocess.run(["ldconfig"], check=False)
    return [d.name for d in debs]


def install(
    folder: Path, prefix: Path, python: str, unpack_gl: bool = False, egl_lib: str | None = None
) -> Path:
    """Preflight (parts, Python + torch, EGL) before any work; then unpack, verify every file, install the
    wheels into prefix/site with pip --no-index and write prefix/env.sh."""
    repo = Path(__file__).resolve().parents[1]
    verify_parts(folder)
    info = json.loads((folder / PARTS).read_text())
    host = check_python(info, python)
    root = None
    try:
        egl = check_egl(egl_lib)
    except BundleError:
        if not unpack_gl:
            raise
        root = unpack(folder, prefix / "bundle")
        print(f"EGL missing: unpacked {unpack_gl_debs(root)} into /")
        egl = check_egl(egl_lib)
    print(f"host ok: Python {host['version']}, torch present, EGL {egl}")
    root = root or unpack(folder, prefix / "bundle")
    site = prefix / "site"
    if site.exists():
        shutil.rmtree(site)
    wheels = sorted(str(p) for p in (root / "wheels").glob("*.whl"))
    cmd = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir"]
    cmd += ["--disable-pip-version-check", "--target", str(site), *wheels]
    subprocess.run(cmd, check=True)
    env = {
        "PYTHONPATH": f"{site.resolve()}:{repo}${{PYTHONPATH:+:$PYTHONPATH}}",
        "PATH": f"{(site / 'bin').resolve()}:$PATH",
        "LIBERO_DP_LANGUAGE_CACHE": str((root / "language.safetensors").resolve()),
        "MUJOCO_GL": "${MUJOCO_GL:-egl}",
        "PYOPENGL_PLATFORM": "${PYOPENGL_PLATFORM:-egl}",
        "LIBERO_DP_PYTHON": python,
    }
    lines = ["# source me: the offline bundle's packages before the host's (written by libero_dp.bundle)"]
    lines += [f'export {k}="{v}"' for k, v in env.items()]
    (prefix / "env.sh").write_text("\n".join(lines) + "\n")
    print(f"installed {len(wheels)} wheels into {site}; `source {prefix / 'env.sh'}` to use them")
    return prefix / "env.sh"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m libero_dp.bundle", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_inst = sub.add_parser("install", help="verify, check the host, install, write env.sh")
    p_inst.add_argument("folder", type=Path, help=f"folder holding {PARTS} and the archive or its parts")
    p_inst.add_argument("--prefix", type=Path, default=Path(".bundle"))
    p_inst.add_argument("--python", default=sys.executable)
    p_inst.add_argument(
        "--unpack-gl", action="store_true", help="unpack the bundled EGL loaders if EGL is missing"
    )
    p_inst.add_argument("--egl-lib", default=None)
    p_ver = sub.add_parser("verify", help="check the parts and (if given) an unpacked tree")
    p_ver.add_argument("folder", type=Path)
    p_egl = sub.add_parser("egl", help="check that EGL can open a device")
    p_egl.add_argument("--egl-lib", default=None)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "install":
            install(args.folder, args.prefix, args.python, args.unpack_gl, args.egl_lib)
        elif args.cmd == "verify":
            if (args.folder / MANIFEST).is_file():
                verify_tree(args.folder)
            else:
                verify_parts(args.folder)
            print(f"{args.folder}: ok")
        else:
            print(json.dumps(check_egl(args.egl_lib)))
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
