"""A checkpoint that travels: one folder with everything an evaluation reads, small enough to commit.

`models/` holds fp32 raw and EMA weights, the optimizer state and a config that points at the run's windows
folder; the eval stage also reads the scale stage's stats.json. An exported checkpoint is self-contained:
the chosen weights cast to bf16 (half the bytes; the policy runs them in fp32 on a CPU), config.json with
the training tasks' names written in (no windows folder needed), the normalisation stats, the language
embeddings of the training instructions (no language model needed), and manifest.json with each file's
sha256, so a claimed success rate names exactly the bytes it was measured with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from libero_dp.bundle import sha256
from libero_dp.checkpoint import check_checkpoint
from libero_dp.fileio import atomic_dir, write_json

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MANIFEST = "manifest.json"


def _task_names(config: dict[str, Any], models_dir: Path) -> list[str]:
    ds = config["dataset"]
    if ds.get("task_names"):
        return list(ds["task_names"])
    meta = Path(ds.get("windows_dir", "")) / "meta.json"
    if not meta.is_file():
        raise FileNotFoundError(
            f"{models_dir / 'config.json'}: field 'dataset.task_names' missing and {meta} not found; "
            "expected the windows stage's meta.json (run from the pipeline's folder)"
        )
    return list(json.loads(meta.read_text())["task_names"])


def export_checkpoint(
    models_dir: str | Path,
    stats_path: str | Path,
    out_dir: str | Path,
    weights: str = "ema",
    dtype: str = "bf16",
    max_mib: float = 64.0,
) -> dict[str, Any]:
    """Write the self-contained checkpoint folder `out_dir` (replaced atomically); returns its manifest.

    Checks the source first (config vs weights vs stats, `check_checkpoint`) and the result's size against
    `max_mib` (an error, and nothing written, when it is larger)."""
    from safetensors.torch import load_file, save_file

    models_dir, stats_path, out_dir = Path(models_dir), Path(stats_path), Path(out_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    config = check_checkpoint(models_dir, weights, stats_path)
    config["dataset"] = {**config["dataset"], "task_names": _task_names(config, models_dir)}
    config["dataset"].pop("windows_dir", None)
    config["dataset"].pop("transform_path", None)
    src = models_dir / ("ema.safetensors" if weights == "ema" else "model.safetensors")
    state = {k: v.to(DTYPES[dtype]).contiguous() for k, v in load_file(str(src)).items()}
    language = models_dir / "language.safetensors"
    with atomic_dir(out_dir) as tmp:
        # stored as the eval's default weights file, whichever was exported
        save_file(state, str(tmp / "ema.safetensors"), metadata={"source": str(src), "dtype": dtype})
        write_json(tmp / "config.json", {**config, "export": {"weights": weights, "dtype": dtype}})
        shutil.copyfile(stats_path, tmp / "stats.json")
        if language.is_file():
            shutil.copyfile(language, tmp / "language.safetensors")
        files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(tmp.iterdir())}
        total = sum(f["bytes"] for f in files.values())
        if total > max_mib * 2**20:
            raise ValueError(
                f"{out_dir}: the exported checkpoint is {total / 2**20:.1f} MiB, over the limit of {max_mib} "
                "MiB; expected a smaller policy (train.preset) or dtype"
            )
        manifest = {
            "source": {"models_dir": str(models_dir), "weights": weights, "step": config.get("step")},
            "dtype": dtype,
            "tensors": len(state),
            "parameters": int(sum(v.numel() for v in state.values())),
            "total_bytes": total,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


def verify(ckpt_dir: str | Path) -> dict[str, Any]:
    """Check an exported folder's files against its manifest (a changed or missing file is an error)."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; expected a folder written by `make export-checkpoint`")
    manifest = json.loads(path.read_text())
    for name, f in manifest["files"].items():
        p = ckpt_dir / name
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; {path} lists it")
        if sha256(p) != f["sha256"]:
            raise ValueError(f"{p}: sha256 differs from {path} field 'files.{name}.sha256'")
    return manifest
