"""Extract: official-layout HDF5 files (ours or LIBERO's) -> flat, memory-mappable arrays for all tasks.

Alignment: in the official files obs[j] is the observation returned by env.step(actions[j]), i.e. what the
robot saw *after* action j. The policy chooses action j from what it saw *before* it, obs[j-1]. So frame i
pairs obs[i] (images, proprio) with actions[i+1]. Our own files start at the reset and mark their leading
no-op wait steps (attr num_steps_wait, as evaluation waits before the policy acts); those are not policy
decisions and are skipped: a demo of T steps with w wait steps yields T - max(w, 1) frames.
Images are flipped upright here, once; everything downstream (and evaluation) uses upright images.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from libero_dp.config import ExtractParams
from libero_dp.dataformat import (
    OBS_IMAGE_KEYS,
    REQUIRED_OBS,
    DemoFileError,
    TaskFile,
    read_demo,
    validate_task_file,
)
from libero_dp.fileio import atomic_dir, write_json
from libero_dp.sim import upright

SUFFIX = "_demo.hdf5"


def find_task_files(source_dir: Path, tasks: list[str] | str) -> list[Path]:
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise DemoFileError(
            f"{source_dir}: extract.source_dir is not a directory; expected a folder of *{SUFFIX}"
        )
    if tasks == "all":
        files = sorted(source_dir.glob(f"*{SUFFIX}"))
        if not files:
            raise DemoFileError(f"{source_dir}: no *{SUFFIX} files found (extract.source_dir)")
        return files
    files = []
    for name in tasks:
        f = source_dir / f"{name}{SUFFIX}"
        if not f.exists():
            raise DemoFileError(f"{f}: file not found for task {name!r} listed in extract.tasks")
        files.append(f)
    return files


def _fill(out: Path, tid: int, path: Path, demos: list[tuple[str, int]], cursor: int) -> list[dict]:
    """Write one task file's demos into the memmaps from frame `cursor` on (own process: HDF5 decoding is
    serial within a process); return their episode records."""
    arrays = {k: np.load(out / "frames" / f"{k}.npy", mmap_mode="r+") for k in OBS_IMAGE_KEYS}
    arrays["actions"] = np.load(out / "actions.npy", mmap_mode="r+")
    for k in REQUIRED_OBS:
        arrays[k] = np.load(out / f"{k}.npy", mmap_mode="r+")
    episodes = []
    for key, first in demos:
        d = read_demo(path, key)
        t = len(d["actions"]) - first
        sl = slice(cursor, cursor + t)
        for k in OBS_IMAGE_KEYS:
            arrays[k][sl] = upright(d[k][first - 1 : -1])
        for k in REQUIRED_OBS:
            arrays[k][sl] = d[k][first - 1 : -1]
        arrays["actions"][sl] = d["actions"][first:]
        reset_seed = int(d["reset_seed"]) if "reset_seed" in d else None
        episodes.append(
            {"task_id": tid, "demo": key, "start": cursor, "end": cursor + t, "reset_seed": reset_seed}
        )
        cursor += t
    for a in arrays.values():
        a.flush()
    return episodes


def extract(p: ExtractParams) -> dict:
    """Validate every file, then write <out_dir>/ atomically; return metrics.

    Each task file is decoded in its own process (`extract.workers`) into its precomputed slice of the
    shared memmaps, so the output is the same for any number of workers.
    """
    files = find_task_files(Path(p.source_dir), p.tasks)
    # Validate everything before writing anything: bad input leaves no partial output.
    infos: list[TaskFile] = [
        validate_task_file(f, p.min_length) for f in tqdm(files, desc="validate", unit="file")
    ]
    sizes = {i.image_size for i in infos}
    if len(sizes) != 1:
        raise DemoFileError(f"{p.source_dir}: files have different image sizes {sorted(sizes)}; expected one")
    size = sizes.pop()
    starts, n = [], 0
    for info in infos:
        starts.append(n)
        n += sum(t - f for t, f in zip(info.lengths, info.first_action, strict=True))
    tasks = [
        {
            "task_id": tid,
            "name": info.path.name[: -len(SUFFIX)],
            "language": info.language,
            "file": str(info.path),
            "demos": len(info.demos),
        }
        for tid, info in enumerate(infos)
    ]
    jobs = [
        (tid, info.path, list(zip(info.demos, info.first_action, strict=True)), starts[tid])
        for tid, info in enumerate(infos)
    ]
    by_task: dict[int, list[dict]] = {}
    with atomic_dir(p.out_dir) as out:
        (out / "frames").mkdir()
        shapes = {k: ((n, size, size, 3), np.uint8) for k in OBS_IMAGE_KEYS}
        shapes["actions"] = ((n, 7), np.float64)
        shapes.update({k: ((n, *trailing), np.float64) for k, trailing in REQUIRED_OBS.items()})
        for k, (shape, dtype) in shapes.items():
            path = out / "frames" / f"{k}.npy" if k in OBS_IMAGE_KEYS else out / f"{k}.npy"
            np.lib.format.open_memmap(path, "w+", dtype, shape).flush()
        bar = tqdm(total=sum(len(j[2]) for j in jobs), desc="extract", unit="demo")
        if p.workers == 1:
            for tid, path, demos, cursor in jobs:
                by_task[tid] = _fill(out, tid, path, demos, cursor)
                bar.update(len(demos))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(p.workers, len(jobs)), mp_context=ctx) as ex:
                futs = {ex.submit(_fill, out, *job): job for job in jobs}
                for fut in as_completed(futs):
                    by_task[futs[fut][0]] = fut.result()
                    bar.update(len(futs[fut][2]))
        bar.close()
        episodes = [e for tid in sorted(by_task) for e in by_task[tid]]
        write_json(out / "episodes.json", episodes)
        write_json(out / "tasks.json", tasks)
        write_json(
            out / "meta.json",
            {
                "frames": n,
                "image_size": size,
                "alignment": "obs[j-1] -> actions[j]",
                "images": "upright",
                "source_dir": str(p.source_dir),
            },
        )
    per_task = {}
    for t in tasks:
        eps = [e for e in episodes if e["task_id"] == t["task_id"]]
        lens = [e["end"] - e["start"] for e in eps]
        per_task[t["name"]] = {
            "demos": len(eps),
            "frames": sum(lens),
            "mean_length": float(np.mean(lens)),
            "min_length": int(min(lens)),
            "max_length": int(max(lens)),
        }
    return {"tasks": per_task, "frames": n, "demos": len(episodes), "image_size": size}
