"""Training windows as RDT builds them, stored as index arrays over the memory-mapped frame arrays.

Sample at frame t of a demo [start, end): the action chunk a[t : t+H], padded past the demo end by repeating
the last action, with a validity mask; the last K frames of each camera ending at t (padded at the demo start
by repeating its first frame); the proprio state at t; the task's instruction. Nothing is copied: windows hold
int32 indices, and the loader gathers from np.load(mmap_mode="r") arrays, so RAM use stays flat.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from libero_dp.config import WindowsParams
from libero_dp.dataformat import OBS_IMAGE_KEYS
from libero_dp.fileio import atomic_dir, write_json


def demo_windows(start: int, end: int, horizon: int, history: int) -> dict[str, np.ndarray]:
    """Index arrays for every start index of one demo occupying global frames [start, end)."""
    if end - start < 1:
        raise ValueError(f"demo [{start}, {end}) is empty; expected at least 1 frame")
    t = np.arange(start, end)
    offs = np.arange(horizon)
    raw = t[:, None] + offs[None, :]
    chunk = np.minimum(raw, end - 1)
    mask = raw < end
    hist = np.maximum(t[:, None] - np.arange(history - 1, -1, -1)[None, :], start)
    return {
        "frame": t.astype(np.int64),
        "chunk": chunk.astype(np.int32),
        "mask": mask,
        "hist": hist.astype(np.int32),
    }


def build_windows(p: WindowsParams, extracted_dir: Path, scaled_dir: Path) -> dict:
    extracted_dir, scaled_dir = Path(extracted_dir), Path(scaled_dir)
    episodes = json.loads((extracted_dir / "episodes.json").read_text())
    tasks = json.loads((extracted_dir / "tasks.json").read_text())
    split = json.loads((scaled_dir / "split.json").read_text())
    counts: dict = {"horizon": p.horizon, "image_history": p.image_history, "splits": {}, "tasks": {}}
    with atomic_dir(p.out_dir) as out:
        for name, ids in split.items():
            if not ids:
                continue
            parts = [
                demo_windows(episodes[i]["start"], episodes[i]["end"], p.horizon, p.image_history)
                for i in ids
            ]
            arrays = {k: np.concatenate([w[k] for w in parts]) for k in parts[0]}
            arrays["task"] = np.concatenate(
                [
                    np.full(len(w["frame"]), episodes[i]["task_id"], np.int64)
                    for i, w in zip(ids, parts, strict=True)
                ]
            )
            for k, v in arrays.items():
                np.save(out / f"{name}_{k}.npy", v)
            counts["splits"][name] = {
                "windows": int(len(arrays["frame"])),
                "demos": len(ids),
                "padded_fraction": float(1 - arrays["mask"].mean()),
            }
            for tk in tasks:
                n = int((arrays["task"] == tk["task_id"]).sum())
                counts["tasks"].setdefault(tk["name"], {})[name] = n
        write_json(
            out / "meta.json",
            {
                "horizon": p.horizon,
                "image_history": p.image_history,
                "extracted_dir": str(extracted_dir),
                "scaled_dir": str(scaled_dir),
                "languages": [t["language"] for t in tasks],
                "task_names": [t["name"] for t in tasks],
            },
        )
    return counts


class WindowDataset:
    """torch-style Dataset of training windows; items are dicts of numpy arrays (see module docstring)."""

    def __init__(self, windows_dir: str | Path, split: str = "train") -> None:
        self.windows_dir = Path(windows_dir)
        meta_path = self.windows_dir / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: missing; run the windows stage first")
        meta = json.loads(meta_path.read_text())
        if not (self.windows_dir / f"{split}_frame.npy").exists():
            raise FileNotFoundError(f"{self.windows_dir}: no '{split}' split (is scale.val_fraction 0?)")
        self.split = split
        self.horizon = int(meta["horizon"])
        self.image_history = int(meta["image_history"])
        self.languages: list[str] = meta["languages"]
        self.task_names: list[str] = meta["task_names"]
        self.extracted_dir = Path(meta["extracted_dir"])
        self.scaled_dir = Path(meta["scaled_dir"])
        self.transform_path = self.scaled_dir / "stats.json"
        self.index = {
            k: np.load(self.windows_dir / f"{split}_{k}.npy")
            for k in ("frame", "chunk", "mask", "hist", "task")
        }
        self._arrays: dict[str, np.ndarray] | None = None
        a = np.load(self.scaled_dir / "actions.npy", mmap_mode="r")
        pr = np.load(self.scaled_dir / "proprio.npy", mmap_mode="r")
        img = np.load(self.extracted_dir / "frames" / f"{OBS_IMAGE_KEYS[0]}.npy", mmap_mode="r")
        self.action_dim, self.proprio_dim, self.image_size = a.shape[1], pr.shape[1], img.shape[1]
        self.num_cameras = len(OBS_IMAGE_KEYS)

    def _open(self) -> dict[str, np.ndarray]:
        # opened lazily so each DataLoader worker maps the files itself
        if self._arrays is None:
            self._arrays = {
                "actions": np.load(self.scaled_dir / "actions.npy", mmap_mode="r"),
                "proprio": np.load(self.scaled_dir / "proprio.npy", mmap_mode="r"),
                **{
                    k: np.load(self.extracted_dir / "frames" / f"{k}.npy", mmap_mode="r")
                    for k in OBS_IMAGE_KEYS
                },
            }
        return self._arrays

    def __len__(self) -> int:
        return len(self.index["frame"])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        a = self._open()
        hist = self.index["hist"][i]
        return {
            "actions": np.asarray(a["actions"][self.index["chunk"][i]], dtype=np.float32),
            "mask": self.index["mask"][i].copy(),
            "proprio": np.asarray(a["proprio"][self.index["frame"][i]], dtype=np.float32),
            "images": np.stack([a[k][hist] for k in OBS_IMAGE_KEYS]),
            "task_id": np.int64(self.index["task"][i]),
        }
