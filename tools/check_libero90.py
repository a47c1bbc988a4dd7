"""Check a host can run the pipeline: every task of a suite builds, resets and renders both cameras (EGL).

    python tools/check_libero90.py --out check.json                 # all 90 libero_90 tasks, a worker a core
    python tools/check_libero90.py --tasks libero_90:0 --workers 1  # one task

Before any simulation: EGL must open a device (libero_dp.bundle.check_egl), and the modules the stages
import must import. Then each task's env is built (rendering on, 128x128), reset to official init state 0
with a fixed seed, and both cameras are rendered once through sim.render_views (the pipeline's one rendering
path); an image that is all one colour counts as a failure. Worker processes spread over the GPUs
(MUJOCO_EGL_DEVICE_ID). Also checks that the carried packages' requirements are met by what the host has
(--site), that the bundled instruction embeddings cover the suite, and that Ray and MLflow's sqlite store
start. Writes a JSON summary; exit status 1 if any task or check failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libero_dp.bundle import BundleError, check_egl  # noqa: E402 (standard library only)

MODULES = (
    "mujoco",
    "robosuite",
    "libero.libero",
    "ray",
    "mlflow",
    "diffusers",
    "pydantic",
    "dvc",
    "torch",
    "libero_dp.collect",
    "libero_dp.extract",
    "libero_dp.scale",
    "libero_dp.windows",
    "libero_dp.train",
    "libero_dp.evaluate",
    "libero_dp.report",
)


def gpus() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        return [x.strip() for x in out.stdout.splitlines() if x.strip()]
    except OSError:
        return []


def import_modules() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in MODULES:
        try:
            m = importlib.import_module(name)
            out[name] = getattr(m, "__version__", "ok")
        except Exception as e:  # noqa: BLE001 - report every failure, not the first
            out[name] = f"ERROR {type(e).__name__}: {str(e)[:300]}"
    return out


def requirements_met(site: Path) -> list[str]:
    """Requirements of the dists installed in `site` that nothing installed satisfies (markers for this host;
    those the bundle skips on purpose are in its BUNDLE.json and ignored here)."""
    from importlib.metadata import PackageNotFoundError, distributions, version

    from packaging.requirements import Requirement

    info_path = site.parent / "bundle" / "BUNDLE.json"
    skipped = set(json.loads(info_path.read_text())["skipped_requirements"]) if info_path.is_file() else set()
    problems = []
    for dist in distributions(path=[str(site)]):
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if req.name.lower().replace("_", "-") in skipped:
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                problems.append(f"{dist.metadata['Name']} needs {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.metadata['Name']} needs {req}: have {have}")
    return sorted(set(problems))


def services() -> dict[str, str]:
    """Ray starts and runs a task; MLflow's sqlite store takes a run (what eval and every stage need)."""
    out = {}
    try:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        out["ray"] = "ok" if ray.get(ray.remote(lambda: 41 + 1).remote()) == 42 else "wrong result"
        ray.shutdown()
    except Exception as e:  # noqa: BLE001
        out["ray"] = f"ERROR {type(e).__name__}: {str(e)[:300]}"
    try:
        import mlflow

        with tempfile.TemporaryDirectory() as d:
            mlflow.set_tracking_uri(f"sqlite:///{d}/mlflow.db")
            mlflow.set_experiment("bundle-check")
            with mlflow.start_run():
                mlflow.log_metric("x", 1.0)
        out["mlflow_sqlite"] = "ok"
    except Exception as e:  # noqa: BLE001
        out["mlflow_sqlite"] = f"ERROR {type(e).__name__}: {str(e)[:300]}"
    return out


_slot: Any = None


def _init(counter: Any, n_gpus: int) -> None:
    """Give this worker an EGL device (round robin over the GPUs) before mujoco is imported."""
    with counter.get_lock():
        i = counter.value
        counter.value += 1
    if n_gpus > 1:
        os.environ["MUJOCO_EGL_DEVICE_ID"] = str(i % n_gpus)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def check_task(key: str, image_size: int) -> dict[str, Any]:
    import numpy as np

    from libero_dp import sim

    rec: dict[str, Any] = {"task": key, "egl_device": os.environ.get("MUJOCO_EGL_DEVICE_ID")}
    try:
        task = sim.resolve_tasks(key)[0]
        t = time.perf_counter()
        env = sim.make_env(task, image_size, render=True)
        rec["build_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        sim.reset_to(env, 0, sim.official_init_states(task)[0])
        rec["reset_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        views = sim.render_views(env, image_size)
        rec["render_s"] = round(time.perf_counter() - t, 3)
        for cam, img in views.items():
            if img.shape != (image_size, image_size, 3) or img.dtype != np.uint8:
                raise ValueError(f"{cam}: got {img.shape} {img.dtype}")
            if int(img.max()) == int(img.min()):
                raise ValueError(f"{cam}: blank image (every pixel {int(img.min())})")
            rec[f"{cam}_mean"] = round(float(img.mean()), 2)
        env.close()
        rec["ok"] = True
    except Exception as e:  # noqa: BLE001
        rec["ok"] = False
        rec["error"] = f"{type(e).__name__}: {e}"[:500]
        rec["traceback"] = traceback.format_exc()[-1500:]
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["libero_90"])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--site", type=Path, default=None, help="the bundle's install folder (requirement check)")
    ap.add_argument("--egl-lib", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    try:
        egl = check_egl(args.egl_lib)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl")
    summary: dict[str, Any] = {
        "host": {
            "cpus": os.cpu_count(),
            "gpus": gpus(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "mujoco_gl": os.environ["MUJOCO_GL"],
            "egl": egl,
        },
        "imports": import_modules(),
    }
    import_errors = [k for k, v in summary["imports"].items() if str(v).startswith("ERROR")]
    if args.site is not None:
        summary["unmet_requirements"] = requirements_met(args.site)
    if "libero_dp.collect" in import_errors:
        summary["error"] = "the pipeline does not import; no task checked"
        _write(args.out, summary)
        return 1
    from libero_dp import sim
    from libero_dp.language import language_table

    tasks = sim.resolve_tasks(args.tasks)
    try:
        t = time.perf_counter()
        language_table(sorted({x.language for x in tasks}))
        summary["language"] = f"ok ({time.perf_counter() - t:.1f} s)"
    except Exception as e:  # noqa: BLE001
        summary["language"] = f"ERROR {type(e).__name__}: {str(e)[:300]}"
    summary["services"] = services()
    n_gpus = len(summary["host"]["gpus"])
    workers = max(1, min(args.workers, len(tasks)))
    t = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(ctx.Value("i", 0), n_gpus)) as pool:
        recs = pool.starmap(check_task, [(x.key, args.image_size) for x in tasks], chunksize=1)
    ok = [r for r in recs if r["ok"]]
    summary.update(
        tasks=len(tasks),
        tasks_ok=len(ok),
        failed={r["task"]: r["error"] for r in recs if not r["ok"]},
        workers=workers,
        envs_wall_s=round(time.perf_counter() - t, 1),
        median_s={k: _median([r[k] for r in ok]) for k in ("build_s", "reset_s", "render_s")},
        wall_s=round(time.time() - t0, 1),
        per_task=recs,
    )
    _write(args.out, summary)
    bad = bool(import_errors) or len(ok) < len(tasks) or summary["language"].startswith("ERROR")
    bad = bad or any(str(v).startswith("ERROR") for v in summary["services"].values())
    print(
        f"{len(ok)}/{len(tasks)} tasks built, reset and rendered in {summary['envs_wall_s']} s "
        f"with {workers} workers; import errors: {import_errors or 'none'}; {args.out}"
    )
    return 1 if bad else 0


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
