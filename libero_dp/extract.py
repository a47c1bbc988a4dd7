"""Extract: official-layout HDF5 files (ours or LIBERO's) -> flat, memory-mappable arrays for all tasks.

Alignment: in the official files obs[j] is the observation returned by env.step(actions[j]), i.e. what the
robot saw *after* action j. The policy chooses action j from what it saw *before* it, obs[j-1]. So frame i
pairs obs[i] (images, proprio) with actions[i+1]. Our own files start at the reset and mark their leading
no-op wait steps (attr num_steps_wait, as evaluation waits before the policy acts); those are not policy
decisions and are skipped: a demo of T steps with w wait steps yields T - max(w, 1) frames.
Images are flipped upright here, once; everything downstream (and evaluation) uses upright images.
"""

from __future__ import annotations

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


def extract(p: ExtractParams) -> dict:
    """Validate every file, then write <out_dir>/ atomically; return metrics."""
    files = find_task_files(Path(p.source_dir), p.tasks)
    # Validate everything before writing anything: bad input leaves no partial output.
    infos: list[TaskFile] = [
        validate_task_file(f, p.min_length) for f in tqdm(files, desc="validate", unit="file")
    ]
    sizes = {i.image_size for i in infos}
    if len(sizes) != 1:
        raise DemoFileError(f"{p.source_dir}: files have different image sizes {sorted(sizes)}; expected one")
    size = sizes.pop()
    n = sum(t - f for info in infos for t, f in zip(info.lengths, info.first_action, strict=True))
    episodes, tasks = [], []
    with atomic_dir(p.out_dir) as out:
        (out / "frames").mkdir()
        arrays = {
            k: np.lib.format.open_memmap(out / "frames" / f"{k}.npy", "w+", np.uint8, (n, size, size, 3))
            for k in OBS_IMAGE_KEYS
        }
        arrays["actions"] = np.lib.format.open_memmap(out / "actions.npy", "w+", np.float64, (n, 7))
        for k, trailing in REQUIRED_OBS.items():
            arrays[k] = np.lib.format.open_memmap(out / f"{k}.npy", "w+", np.float64, (n, *trailing))
        cursor = 0
        for tid, info in enumerate(infos):
            tasks.append(
                {
                    "task_id": tid,
                    "name": info.path.name[: -len(SUFFIX)],
                    "language": info.language,
                    "file": str(info.path),
                    "demos": len(info.demos),
                }
            )
            demos = zip(info.demos, info.first_action, strict=True)
            for key, first in tqdm(
                list(demos), desc=f"extract {info.path.name[:40]}", unit="demo", leave=False
            ):
                d = read_demo(info.path, key)
                t = len(d["actions"]) - first
                sl = slice(cursor, cursor + t)
                for k in OBS_IMAGE_KEYS:
                    arrays[k][sl] = upright(d[k][first - 1 : -1])
                for k in REQUIRED_OBS:
                    arrays[k][sl] = d[k][first - 1 : -1]
                arrays["actions"][sl] = d["actions"][first:]
                episodes.append(
                    {
                        "task_id": tid,
                        "demo": key,
                        "start": cursor,
                        "end": cursor + t,
                        "reset_seed": int(d["reset_seed"]) if "reset_seed" in d else None,
                    }
                )
                cursor += t
        for a in arrays.values():
            a.flush()
        del arrays
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
