"""The per-episode cache: each record is one JSON file (plus its states as .npz) the moment it arrives, keyed
by a hash of everything that changes an episode's outcome, outside the DVC output, so a killed run resumes
and a rerun with other episodes, workers or videos reuses what is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libero_dp.config import EvalParams, ExecParams
from libero_dp.evaluate.protocol import EpisodeSpec

PACKAGE_DIR = Path(__file__).resolve().parent  # libero_dp/evaluate
LIBERO_DP_DIR = PACKAGE_DIR.parent


def _hash_file(path: Path, h: Any) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def hash_paths(paths: list[Path]) -> str:
    """Content hash of files (directories: every file below, by relative path)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            _hash_file(f, h)
    return h.hexdigest()


def checkpoint_files(models_dir: Path, weights: str) -> list[Path]:
    """The files PolicyRunner.load reads (train_state.pt, with the optimizer, is not one of them)."""
    weights_file = "ema.safetensors" if weights == "ema" else "model.safetensors"
    names = ["config.json", weights_file, "language.safetensors"]
    files = [Path(models_dir) / n for n in names if (Path(models_dir) / n).exists()]
    return files or [Path(models_dir)]


def cache_key(
    ep: EvalParams,
    xp: ExecParams,
    models_dir: Path,
    stats_path: Path,
    demo_files: list[Path],
    image_size: int,
    runner_factory: Callable | None,
) -> str:
    """Hash of everything that changes an episode's outcome (not which episodes, workers or videos)."""
    here = LIBERO_DP_DIR
    code = [*sorted(PACKAGE_DIR.glob("*.py")), here / "sim.py"]
    parts: dict[str, Any] = {
        "policy": ep.policy,
        "max_steps": ep.max_steps,
        "num_steps_wait": ep.num_steps_wait,
        "image_size": image_size,
    }
    if ep.policy == "learned":
        parts.update(weights=ep.weights, exec=xp.model_dump(), stats=hash_paths([stats_path]))
        if runner_factory is None:
            parts["checkpoint"] = hash_paths(checkpoint_files(models_dir, ep.weights))
            code += [here / n for n in ("sampling.py", "policy.py", "units.py", "rdt.py", "statevec.py")]
            code += [here / "checkpoint.py", here / "encoders.py"]
        else:
            fn = getattr(runner_factory, "func", runner_factory)
            parts["runner"] = [
                getattr(fn, "__module__", ""),
                getattr(fn, "__qualname__", repr(fn)),
                repr(getattr(runner_factory, "args", ())),
                repr(sorted(getattr(runner_factory, "keywords", {}).items())),
            ]
    elif ep.policy == "expert":
        code += [*sorted((here / "expert").glob("*.py")), here / "bddl.py"]
    else:
        parts["demos"] = hash_paths(demo_files)
    parts["code"] = hash_paths([p for p in code if p.exists()])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_path(cache: Path, spec: EpisodeSpec) -> Path:
    """Where an episode's record lives in the cache (its states: .npz, its video: .mp4 beside it)."""
    return cache / f"{spec.key}.json"
