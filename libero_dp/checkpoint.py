"""Policies by kind (`dp`, `rdt`): build one from a config, and load weights into it strictly.

A checkpoint is a file (.safetensors, or a torch .pt/.bin state dict, DeepSpeed's {"module": ...} included)
or a folder: this project's `models/` output (config.json + ema/model.safetensors) or an official RDT
checkpoint folder (ema/model.safetensors, model.safetensors, pytorch_model.bin or DeepSpeed's
pytorch_model/mp_rank_00_model_states.pt). Where a folder holds both, the EMA weights are the default.
Keys and shapes are compared before anything is copied; any difference is one error naming the file and
every missing key, unexpected key and shape mismatch (expected vs found).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from libero_dp import policy as dp
from libero_dp import rdt

PolicyKind = Literal["dp", "rdt"]
Policy = dp.DiffusionPolicy | rdt.RDTPolicy

#: Candidate weight files inside a folder, in order of preference (EMA first).
FOLDER_FILES = {
    "ema": ["ema.safetensors", "ema/model.safetensors", "ema/pytorch_model.bin"],
    "raw": ["model.safetensors", "pytorch_model.bin", "pytorch_model/mp_rank_00_model_states.pt"],
}


def make_config(kind: PolicyKind, preset: str, **dims: Any) -> dp.PolicyConfig | rdt.RDTConfig:
    """The config of a named size; dims (horizon, cameras, ...) come from the data."""
    if kind == "dp":
        return dp.preset(preset, **dims)
    if kind == "rdt":
        return rdt.preset(preset, **dims)
    raise ValueError(f"unknown policy kind {kind!r}; expected 'dp' or 'rdt'")


def build_policy(kind: PolicyKind, config: dict) -> Policy:
    """A freshly initialised policy from the `policy` dict of a models/config.json."""
    if kind == "dp":
        return dp.DiffusionPolicy(dp.PolicyConfig(**config))
    if kind == "rdt":
        return rdt.RDTPolicy(rdt.RDTConfig.from_dict(config))
    raise ValueError(f"unknown policy kind {kind!r}; expected 'dp' or 'rdt'")


class CheckpointMismatch(ValueError):
    """A state dict whose keys or shapes differ from the model's."""


def weights_file(path: str | Path, prefer: Literal["ema", "raw"] = "ema") -> Path:
    """The weights file a path names: the file itself, or the preferred one inside a folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint file or folder")
    order = FOLDER_FILES[prefer] + FOLDER_FILES["raw" if prefer == "ema" else "ema"]
    for name in order:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: no weights file; expected one of {order}")


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pt / .bin file, unwrapped from DeepSpeed's or a trainer's dict."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    if file.suffix in (".pt", ".bin", ".pth"):
        obj = torch.load(file, map_location="cpu", weights_only=True)
        for key in ("module", "state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{file}: not a state dict (a dict of tensor names to tensors)")
        return obj
    raise ValueError(f"{file}: unknown checkpoint format {file.suffix!r}; expected .safetensors, .pt or .bin")


def compare(expected: dict[str, tuple[int, ...]], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointMismatch naming every missing key, unexpected key and shape difference."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        (k, expected[k], tuple(found[k].shape))
        for k in set(expected) & set(found)
        if tuple(found[k].shape) != tuple(expected[k])
    )
    if not (missing or unexpected or shapes):
        return
    lines = [f"{source}: state dict does not match the model ({len(expected)} tensors expected):"]
    lines += [f"  missing key: {k} (expected shape {list(expected[k])})" for k in missing]
    lines += [f"  unexpected key: {k} (shape {list(found[k].shape)})" for k in unexpected]
    lines += [f"  shape mismatch: {k}: expected {list(e)}, found {list(f)}" for k, e, f in shapes]
    raise CheckpointMismatch("\n".join(lines))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy `state` into `model` after a strict comparison; returns the keys left at their init.

    For the rdt policy, a state dict without the project's image encoder (`vision.*`, which an official RDT
    checkpoint never has) is compared against the official keys only, and the encoder keeps its init.
    """
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if isinstance(model, rdt.RDTPolicy) and not any(k.startswith("vision.") for k in state):
        own = {k: own[k] for k in model.official_keys()}
    compare(own, state, source)
    model.load_state_dict(state, strict=False, assign=any(v.is_meta for v in model.state_dict().values()))
    return sorted(set(model.state_dict()) - set(own))


def has_weights(folder: Path) -> bool:
    return any((folder / n).is_file() for names in FOLDER_FILES.values() for n in names)


def init_from(model: nn.Module, path: str | Path, prefer: Literal["ema", "raw"] = "ema") -> dict[str, Any]:
    """Start training from a checkpoint (train.init_from); returns what was loaded, for the metrics.

    A folder holding no weights file at all (the default `pretrained/`, with only its README) means: start
    from scratch; that is returned as {"file": None} and printed by the caller.
    """
    if Path(path).is_dir() and not has_weights(Path(path)):
        return {"file": None, "tensors": 0, "kept_init": len(model.state_dict())}
    file = weights_file(path, prefer)
    state = read_state_dict(file)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from a DDP wrapper
    left = load_weights(model, state, str(file))
    return {"file": str(file), "tensors": len(state), "kept_init": len(left)}
