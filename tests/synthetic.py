"""A made-up windows dataset with WindowDataset's contract, for policy/training tests that need no simulator.

Demos are smooth raw LIBERO action curves converted to model units by a real fitted Transform; frames are
distinct per time step so a policy can tell the steps apart (as in a real demo). Windows are built with the
real `demo_windows` indexer, so padding and history follow the pipeline's rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from libero_dp.units import Transform
from libero_dp.windows import demo_windows

LANGUAGE = "close the top drawer of the cabinet"


def make_synthetic(
    root: Path,
    demos: int = 1,
    length: int = 12,
    horizon: int = 8,
    image_size: int = 32,
    image_history: int = 2,
    val: bool = True,
    seed: int = 0,
) -> Path:
    """Write `demos` training demos (and, with `val`, one more for validation) under root; returns root."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits = {"train": range(demos), "val": range(demos, demos + 1) if val else range(0)}
    n = (demos + int(val)) * length
    t = np.arange(n) / length
    phase = rng.uniform(0, 2 * np.pi, 7)
    raw = np.sin(2 * np.pi * t[:, None] + phase) * 0.8
    raw[:, 6] = np.where(raw[:, 6] > 0, 1.0, -1.0)
    ee_pos = np.stack([0.1 * t, 0.05 * np.sin(t), 0.9 + 0.01 * t], axis=1)
    ee_ori = np.stack([np.pi - 0.1 * t, 0.05 * np.cos(t), 0.02 * t], axis=1)
    gripper = np.stack([0.04 - 0.001 * t, -0.04 + 0.001 * t], axis=1)
    transform = Transform()
    transform.fit(
        raw[: demos * length], ee_pos[: demos * length], ee_ori[: demos * length], gripper[: demos * length]
    )
    transform.save(root / "stats.json")
    # Frames: a per-frame random image, so neighbouring steps look different.
    frames = rng.integers(0, 256, (n, 2, image_size, image_size, 3), dtype=np.uint8)
    np.savez(
        root / "data.npz",
        actions=transform.actions_to_model(raw),
        proprio=transform.proprio_to_model(ee_pos, ee_ori, gripper),
        frames=frames,
    )
    meta = {
        "horizon": horizon,
        "image_history": image_history,
        "length": length,
        "splits": {k: list(v) for k, v in splits.items()},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


class SyntheticWindows:
    """Drop-in for WindowDataset(windows_dir, split) over a make_synthetic() folder."""

    def __init__(self, windows_dir: Path, split: str = "train") -> None:
        windows_dir = Path(windows_dir)
        self.split = split
        meta = json.loads((windows_dir / "meta.json").read_text())
        demos = meta["splits"][split]
        if not demos:
            raise FileNotFoundError(f"{windows_dir}: no '{split}' split")
        data = np.load(windows_dir / "data.npz")
        self.actions, self.proprio, self.frames = data["actions"], data["proprio"], data["frames"]
        length, self.horizon, self.image_history = meta["length"], meta["horizon"], meta["image_history"]
        parts = [demo_windows(d * length, (d + 1) * length, self.horizon, self.image_history) for d in demos]
        self.index = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self.action_dim, self.proprio_dim = self.actions.shape[1], self.proprio.shape[1]
        self.num_cameras, self.image_size = self.frames.shape[1], self.frames.shape[2]
        self.languages = [LANGUAGE]
        self.transform_path = windows_dir / "stats.json"

    def __len__(self) -> int:
        return len(self.index["frame"])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {
            "actions": self.actions[self.index["chunk"][i]].astype(np.float32),
            "mask": self.index["mask"][i].copy(),
            "proprio": self.proprio[self.index["frame"][i]].astype(np.float32),
            "images": self.frames[self.index["hist"][i]].transpose(1, 0, 2, 3, 4).copy(),
            "task_id": np.int64(0),
        }
