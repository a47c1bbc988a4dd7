"""Scale stage: split demos, fit the unit/normalisation transform on the training split, write model units.

The split lives here (not in windows) because statistics must be fitted on training demos only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from libero_dp.config import ScaleParams
from libero_dp.fileio import atomic_dir, write_json
from libero_dp.units import POS_FACTORS, Transform, magnitude_ratio


def split_episodes(episodes: list[dict], val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Whole-demo split per task, seeded and deterministic; every task keeps >= 1 training demo."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for tid in sorted({e["task_id"] for e in episodes}):
        ids = [i for i, e in enumerate(episodes) if e["task_id"] == tid]
        perm = rng.permutation(len(ids))
        n_val = int(round(val_fraction * len(ids)))
        if val_fraction > 0 and n_val == 0 and len(ids) >= 2:
            n_val = 1
        n_val = min(n_val, len(ids) - 1)
        val += sorted(ids[j] for j in perm[:n_val])
        train += sorted(ids[j] for j in perm[n_val:])
    if not train:
        raise ValueError("scale: the split leaves the training set empty")
    if val_fraction > 0 and not val:
        raise ValueError(
            f"scale.val_fraction={val_fraction}: the split leaves the validation set empty "
            f"({len(episodes)} demos); collect more demos or set scale.val_fraction: 0"
        )
    return {"train": sorted(train), "val": sorted(val)}


def _stats(x: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    return {
        n: {
            "min": float(x[:, i].min()),
            "max": float(x[:, i].max()),
            "mean": float(x[:, i].mean()),
            "std": float(x[:, i].std()),
        }
        for i, n in enumerate(names)
    }


def scale(p: ScaleParams, extracted_dir: Path) -> dict:
    extracted_dir = Path(extracted_dir)
    episodes = json.loads((extracted_dir / "episodes.json").read_text())
    split = split_episodes(episodes, p.val_fraction, p.split_seed)
    raw = {
        k: np.load(extracted_dir / f"{k}.npy", mmap_mode="r")
        for k in ("actions", "ee_pos", "ee_ori", "gripper_states")
    }
    train_rows = np.concatenate([np.arange(episodes[i]["start"], episodes[i]["end"]) for i in split["train"]])
    t = Transform(p.pos_unit, p.rot_repr, p.proprio_repr, p.norm)
    t.fit(
        raw["actions"][train_rows],
        raw["ee_pos"][train_rows],
        raw["ee_ori"][train_rows],
        raw["gripper_states"][train_rows],
    )
    actions = t.actions_to_model(raw["actions"])
    proprio = t.proprio_to_model(raw["ee_pos"], raw["ee_ori"], raw["gripper_states"])
    phys = t.actions_to_physical(raw["actions"][train_rows])
    # ratios in every unit, so the seed's failure (m) and fix (cm) are visible side by side
    ratios = {}
    for unit in POS_FACTORS:
        tu = Transform(unit, p.rot_repr, p.proprio_repr, "none")
        ratios[unit] = magnitude_ratio(tu.actions_to_physical(raw["actions"][train_rows]), tu.rot_slice)
    hist = {}
    for name, x in (
        ("raw", np.asarray(raw["actions"][train_rows])),
        ("physical", phys),
        ("model", actions[train_rows]),
    ):
        for i in range(x.shape[1]):
            counts, edges = np.histogram(x[:, i], bins=40)
            hist[f"{name}/{i}"] = {"counts": counts.tolist(), "edges": edges.tolist()}
    with atomic_dir(p.out_dir) as out:
        np.save(out / "actions.npy", actions)
        np.save(out / "proprio.npy", proprio)
        t.meta = {"extracted_dir": str(extracted_dir)}
        t.save(out / "stats.json")
        write_json(out / "split.json", split)
        write_json(
            out / "histograms.json",
            {
                "action_names": t.action_names,
                "raw_names": ["x", "y", "z", "rx", "ry", "rz", "gripper"],
                **hist,
            },
        )
    return {
        "pos_unit": p.pos_unit,
        "rot_repr": p.rot_repr,
        "norm": p.norm,
        "pos_rot_ratio": magnitude_ratio(phys, t.rot_slice),
        "pos_rot_ratio_by_unit": ratios,
        "train_demos": len(split["train"]),
        "val_demos": len(split["val"]),
        "actions_raw": _stats(
            np.asarray(raw["actions"][train_rows]), ["x", "y", "z", "rx", "ry", "rz", "gripper"]
        ),
        "actions_physical": _stats(phys, t.action_names),
        "actions_model": _stats(actions[train_rows], t.action_names),
        "proprio_model": _stats(proprio[train_rows], t.proprio_names),
        "model_range_max_abs": float(np.abs(actions[train_rows]).max()),
    }
