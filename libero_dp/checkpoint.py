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


def header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a .safetensors file, from its header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict


def check_checkpoint(models_dir: str | Path, weights: str, stats_path: str | Path) -> dict[str, Any]:
    """Everything an evaluation needs from a checkpoint, checked before any episode (and any Ray actor) runs.

    config.json parses and names a policy; the weights file's tensor names and shapes are those of the model
    that config builds (read from the safetensors header, on the meta device: no weights are loaded); the
    normalisation stats exist and fit the data dims the config was trained with. Any failure is one error
    naming the file, the field and what was expected. Returns the config.
    """
    import json

    from libero_dp.units import Transform

    models_dir, stats_path = Path(models_dir), Path(stats_path)
    cfg_file = models_dir / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"{cfg_file}: missing; expected the train stage's config.json beside the weights"
        )
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: not valid JSON ({e})") from None
    for field in ("policy", "dataset"):
        if not isinstance(config.get(field), dict):
            raise ValueError(
                f"{cfg_file}: field '{field}' missing or not a mapping; expected train.py's config"
            )
    file = models_dir / {"ema": "ema.safetensors", "raw": "model.safetensors"}[weights]
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; eval.weights={weights} reads it")
    try:
        with torch.device("meta"):
            model = build_policy(config.get("kind", "dp"), config["policy"])
    except TypeError as e:
        raise ValueError(f"{cfg_file}: field 'policy' does not describe a policy: {e}") from None
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = header_shapes(file)
    try:
        compare(own, {k: torch.empty(s, device="meta") for k, s in found.items()}, str(file))
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{e}\n(the model is built from {cfg_file}, field 'policy')") from None
    if not stats_path.is_file():
        raise FileNotFoundError(
            f"{stats_path}: missing; the normalisation stats (the scale stage's stats.json) are needed to "
            "decode the policy's actions"
        )
    t = Transform.load(stats_path)
    ds = config["dataset"]
    for field, have in (("action_dim", t.action_dim), ("proprio_dim", t.proprio_dim)):
        norm = t.action_norm if field == "action_dim" else t.proprio_norm
        if field in ds and (int(ds[field]) != have or len(norm.offset) != have):
            raise ValueError(
                f"{stats_path}: {have}-d {field.split('_')[0]}s ({len(norm.offset)} normaliser dims) do not "
                f"fit {cfg_file} field 'dataset.{field}' = {ds[field]}; expected the stats the policy was "
                "trained with"
            )
    return config
