"""Typed params: one pydantic model per params.yaml section, so a typo or bad value fails loudly.

Each stage reads only its own section (and names exactly those keys in dvc.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectParams(_Section):
    tasks: list[str] | str
    demos_per_task: int = Field(ge=1)
    init: Literal["sampled", "official"] = "sampled"
    seed: int = 0
    image_size: int = Field(128, ge=16)
    max_steps: int = Field(400, ge=1)
    steps_after_success: int = Field(10, ge=0)
    num_steps_wait: int = Field(10, ge=0)
    max_attempts_factor: int = Field(3, ge=1)
    expert_check_episodes: int = Field(50, ge=0, le=50)
    workers: int = Field(2, ge=1)
    # a task whose expert keeps failing: "error" stops the stage, "skip" leaves it out (listed in metrics)
    on_task_failure: Literal["error", "skip"] = "error"
    # the expert's pace: largest position action of any phase (1.0 = 5 cm/step commanded); <= 0.3 turns its
    # free-space speed profile off (~0.35 cm/step everywhere, like LIBERO's human demos)
    expert_top_action: float = Field(1.0, ge=0.05, le=1.0)
    # where a recorded demo ends: "goal" = the skill that reached the goal, then steps_after_success at rest
    # (as LIBERO's demos end at `done`); "plan" = on through release and retreat (the expert's whole plan)
    demo_end: Literal["goal", "plan"] = "goal"
    out_dir: str = "data/demos"


class ExtractParams(_Section):
    source_dir: str = "data/demos"
    tasks: list[str] | Literal["all"] = "all"
    min_length: int = Field(20, ge=1)
    workers: int = Field(1, ge=1)
    out_dir: str = "data/extracted"


class ScaleParams(_Section):
    pos_unit: Literal["m", "cm", "mm"] | float = "cm"
    rot_repr: Literal["axis_angle", "rot6d"] = "rot6d"
    proprio_repr: Literal["pos_rot6d_gripper"] = "pos_rot6d_gripper"
    norm: Literal["none", "minmax", "zscore", "quantile"] = "minmax"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0
    out_dir: str = "data/scaled"

    @field_validator("pos_unit")
    @classmethod
    def _positive(cls, v: str | float) -> str | float:
        if isinstance(v, float) and v <= 0:
            raise ValueError("a numeric pos_unit must be a positive factor (metres -> unit)")
        return v


class WindowsParams(_Section):
    horizon: int = 64
    image_history: int = 2
    out_dir: str = "data/windows"

    @field_validator("horizon")
    @classmethod
    def _h(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"windows.horizon must be >= 1 (got {v}): a chunk needs at least one action")
        return v

    @field_validator("image_history")
    @classmethod
    def _k(cls, v: int) -> int:
        if v < 1:
            raise ValueError(
                f"windows.image_history must be >= 1 (got {v}): the current frame is always read"
            )
        return v


class TrainParams(_Section):
    # dp: the project's RDT-style policy; rdt: RDT's own architecture and parameter names (rdt.py)
    policy: Literal["dp", "rdt"] = "dp"
    preset: Literal["tiny", "small", "rdt170m", "rdt1b"] = "tiny"
    # checkpoint to start from: an official RDT file/folder or a models/ output; a folder holding no weights
    # file (the default pretrained/, only a README) means from scratch
    init_from: str | None = None
    init_weights: Literal["ema", "raw"] = "ema"  # which weights of a folder holding both
    siglip_path: str | None = None  # rdt: local SigLIP so400m-patch14-384 folder -> image tokens
    t5_path: str | None = None  # local T5-v1.1-XXL folder -> language tokens (cached per instruction)
    steps: int = Field(4000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = 1e-2
    warmup_steps: int = Field(200, ge=0)
    grad_clip: float = 1.0
    ema_decay: float = Field(0.995, ge=0.0, le=1.0)
    prediction_type: Literal["sample", "epsilon"] = "sample"
    num_train_timesteps: int = 1000
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True
    compile: bool = False
    num_workers: int = Field(2, ge=0)
    val_every: int = Field(500, ge=1)
    ckpt_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    out_dir: str = "models"


class ExecParams(_Section):
    steps: int = Field(64, ge=1)
    stride: int = Field(1, ge=1)
    temporal_ensemble: bool = False
    ensemble_k: float = 0.01
    sampling_steps: int = Field(5, ge=1)


class EvalParams(_Section):
    policy: Literal["learned", "expert", "replay"] = "learned"
    tasks: list[str] | str = "from_data"
    episodes_per_task: int = Field(50, ge=1)
    seeds: list[int] = [0]
    max_steps: int = Field(400, ge=1)
    num_steps_wait: int = Field(10, ge=0)
    weights: Literal["ema", "raw"] = "ema"
    workers: int = Field(2, ge=1)
    videos_success: int = Field(2, ge=0)
    videos_failure: int = Field(2, ge=0)
    video_every: int = Field(2, ge=1)  # render every n-th recorded state into the MP4 (fps = 20 / n)
    # on_demand: images only where the policy reads them; every_step: render every step (benchmarking only)
    render: Literal["on_demand", "every_step"] = "on_demand"
    ray_address: str | None = (
        None  # None = local Ray with `workers` CPUs; else connect (e.g. "auto", "ray://h:10001")
    )
    threads_per_worker: int = Field(1, ge=1)  # torch intra-op threads per eval actor
    # wall-clock limit per episode: past it the episode is a `timeout` error and its actor is replaced
    # (None = no limit)
    episode_timeout_s: float | None = Field(600.0, gt=0)
    # policy=expert only: render the frames a policy re-planning every n steps (with this image history)
    # would read, so a scripted-expert protocol run costs what a learned policy's would; 0 = no images
    expert_image_every: int = Field(0, ge=0)
    expert_image_history: int = Field(2, ge=1)
    # language grounding (evaluate/grounding.py): for every ordered pair (A, B) of the evaluated tasks that
    # share a scene, B's instruction from A's first n official init states; 0 = off
    grounding_inits: int = Field(0, ge=0)
    out_dir: str = "data/eval"


class ReportParams(_Section):
    out_dir: str = "reports"
    paths_episodes: int = Field(3, ge=0)


SECTIONS: dict[str, type[_Section]] = {
    "collect": CollectParams,
    "extract": ExtractParams,
    "scale": ScaleParams,
    "windows": WindowsParams,
    "train": TrainParams,
    "exec": ExecParams,
    "eval": EvalParams,
    "report": ReportParams,
}


class ParamsError(ValueError):
    """A params file or section is missing or invalid; the message names file, field and expectation."""


def load_params(section: str, path: str | Path = "params.yaml") -> _Section:
    """Load and validate one section of params.yaml."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found; expected the pipeline's params.yaml")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if section not in raw:
        raise ParamsError(f"{path}: missing section '{section}'")
    try:
        return SECTIONS[section].model_validate(raw[section])
    except ValidationError as e:
        lines = [f"{path}: invalid '{section}' section:"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {section}.{loc}: {err['msg']} (got {err.get('input')!r})")
        raise ParamsError("\n".join(lines)) from None
