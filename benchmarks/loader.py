"""Loader benchmark: can the window loader feed training? (issue: >= 5x what training consumes).

Measures (1) DataLoader throughput in samples/s for batches of 64 with two 128x128 cameras x 2 frames,
read from memory-mapped arrays exactly as training reads them, and (2) what the `tiny` policy's training
step consumes on the same machine (forward + backward + AdamW on batches already in memory). Uses the
pipeline's data/windows when present, otherwise builds a synthetic dataset of the same layout (random
pixels; the loader's cost does not depend on the content). Writes benchmarks/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from libero_dp.config import WindowsParams
from libero_dp.fileio import write_json
from libero_dp.policy import DiffusionPolicy, preset
from libero_dp.sampling import diffusion_loss, train_scheduler
from libero_dp.windows import WindowDataset, build_windows


def synthetic_windows(root: Path, frames: int = 6000, size: int = 128, demo_len: int = 130) -> Path:
    """Extracted + scaled + windows layout with random content, for machines without the pipeline's data."""
    ex, sc = root / "extracted", root / "scaled"
    (ex / "frames").mkdir(parents=True)
    sc.mkdir()
    rng = np.random.default_rng(0)
    for k in ("agentview_rgb", "eye_in_hand_rgb"):
        a = np.lib.format.open_memmap(ex / "frames" / f"{k}.npy", "w+", np.uint8, (frames, size, size, 3))
        for i in range(0, frames, 1000):
            a[i : i + 1000] = rng.integers(0, 255, (min(1000, frames - i), size, size, 3), dtype=np.uint8)
        a.flush()
    np.save(sc / "actions.npy", rng.normal(size=(frames, 10)).astype(np.float32))
    np.save(sc / "proprio.npy", rng.normal(size=(frames, 10)).astype(np.float32))
    eps = [{"task_id": 0, "start": s, "end": min(s + demo_len, frames)} for s in range(0, frames, demo_len)]
    (ex / "episodes.json").write_text(json.dumps(eps))
    (ex / "tasks.json").write_text(
        json.dumps([{"task_id": 0, "name": "synthetic", "language": "do the task"}])
    )
    (sc / "split.json").write_text(json.dumps({"train": list(range(len(eps))), "val": []}))
    (sc / "stats.json").write_text("{}")
    build_windows(WindowsParams(out_dir=str(root / "windows")), ex, sc)
    return root / "windows"


def loader_throughput(ds: WindowDataset, batch: int, workers: int, batches: int) -> float:
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        generator=g,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    it = iter(dl)
    next(it)  # warm-up: worker start, page cache
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += len(b["actions"])
    return n / (time.perf_counter() - t0)


def train_consumption(ds: WindowDataset, batch: int, steps: int) -> float:
    """Samples/s the tiny policy's optimisation step consumes (data already in memory)."""
    torch.manual_seed(0)
    cfg = preset(
        "tiny",
        action_dim=ds.action_dim,
        proprio_dim=ds.proprio_dim,
        horizon=ds.horizon,
        num_cameras=ds.num_cameras,
        image_history=ds.image_history,
    )
    model = DiffusionPolicy(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = train_scheduler("sample")
    items = [ds[i] for i in range(batch)]
    b = {
        k: torch.from_numpy(np.stack([it[k] for it in items]))
        for k in ("actions", "mask", "proprio", "images")
    }
    b["lang"] = torch.zeros(batch, 8, cfg.lang_dim)
    b["lang_mask"] = torch.ones(batch, 8, dtype=torch.bool)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss, _ = diffusion_loss(model, b, sched, "sample")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", default="data/windows")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/loader.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wdir = Path(a.windows)
        source = "pipeline data"
        if not (wdir / "meta.json").exists() or WindowDataset(wdir).image_size != 128:
            wdir, source = synthetic_windows(Path(tmp)), "synthetic (random pixels, same layout)"
        ds = WindowDataset(wdir, "train")
        item = ds[0]
        loader = {w: loader_throughput(ds, a.batch, w, a.batches) for w in sorted({0, a.workers})}
        consume = train_consumption(ds, a.batch, a.train_steps)
    best = max(loader.values())
    res = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads",
        "data": source,
        "batch": a.batch,
        "images_per_sample": list(item["images"].shape),
        "loader_samples_per_s": {str(k): v for k, v in loader.items()},
        "train_consumes_samples_per_s": consume,
        "ratio_loader_to_train": best / consume,
        "meets_5x": best / consume >= 5.0,
    }
    write_json(a.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
