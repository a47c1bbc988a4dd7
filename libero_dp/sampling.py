"""Diffusion schedules, the training loss, the sampling loop and the inference wrapper that evaluation calls.

As in RDT: a DDPM noise schedule (squared-cosine betas, 1000 steps) for training and DPM-Solver++ with a
handful of steps for inference, both from diffusers so the two share exactly the same alphas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from libero_dp.policy import DiffusionPolicy, ObsEncoding

PredictionType = Literal["sample", "epsilon"]


def train_scheduler(
    prediction_type: PredictionType = "sample", num_train_timesteps: int = 1000
) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
    )


def inference_scheduler(
    prediction_type: PredictionType = "sample", num_train_timesteps: int = 1000
) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        algorithm_type="dpmsolver++",
    )


def diffusion_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    scheduler: DDPMScheduler,
    prediction_type: PredictionType,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Denoising loss on one batch: a masked mean over the valid (non-padded) steps of each chunk.

    batch: actions (B,H,Da), mask (B,H) bool, proprio (B,Dp), images uint8 (B,ncam,K,S,S,3), lang (B,L,384),
    lang_mask (B,L). Noise and timesteps come from `generator` (a CPU generator), so a run is reproducible on
    any device. Padded steps are still predicted (the model always outputs H actions) but carry no weight.
    """
    actions = batch["actions"]
    b = actions.shape[0]
    noise = torch.randn(actions.shape, generator=generator).to(actions.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(actions.device)
    noisy = scheduler.add_noise(actions, noise, t)
    pred = model(noisy, t, batch["proprio"], batch["images"], batch["lang"], batch["lang_mask"]).float()
    target = actions if prediction_type == "sample" else noise
    err = (pred - target).square()
    valid = batch["mask"][..., None].to(err.dtype)
    if "dim_weight" in batch:  # the rdt policy: only the state vector's used slots count
        err = err * batch["dim_weight"].to(err.dtype)
        dims = batch["dim_weight"].sum()
    else:
        dims = err.shape[-1]
    loss = (err * valid).sum() / (valid.sum() * dims).clamp_min(1.0)
    padded = 1.0 - valid
    loss_padded = (err * padded).sum() / (padded.sum() * dims).clamp_min(1.0)
    # Detached tensors, not floats: reading them would stall the GPU every step; the caller reads at log time.
    return loss, {"loss": loss.detach(), "loss_padded": loss_padded.detach()}


@torch.no_grad()
def sample(
    model: DiffusionPolicy,
    obs: ObsEncoding,
    scheduler: DPMSolverMultistepScheduler,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Action chunks (B, H, Da) for encoded observations, by `steps` solver steps from Gaussian noise."""
    b, cfg = obs.state.shape[0], model.cfg
    device = obs.state.device
    x = torch.randn((b, cfg.horizon, cfg.action_dim), generator=generator).to(device)
    scheduler.set_timesteps(steps, device=device)
    for t in scheduler.timesteps:
        out = model.denoise(x, t.expand(b), obs).float()
        x = scheduler.step(out, t, x).prev_sample
    return x


class PolicyRunner:
    """A trained policy behind a numpy interface: one observation in, one chunk of model-unit actions out."""

    def __init__(
        self,
        model: DiffusionPolicy,
        scheduler: DPMSolverMultistepScheduler,
        sampling_steps: int,
        cameras: list[str],
        language_cache: Path | None = None,
        t5_path: str | None = None,
    ):
        self.model = model.eval()
        self.t5_path = t5_path
        self.scheduler = scheduler
        self.sampling_steps = sampling_steps
        self.cameras = cameras
        self.language_cache = language_cache
        self.device = next(model.parameters()).device

    @classmethod
    def load(
        cls, models_dir: Path, weights: str = "ema", device: str = "cpu", sampling_steps: int = 5
    ) -> PolicyRunner:
        """Build from a training output folder; weights 'ema' (the EMA weights) or 'raw' (the last step's).

        The policy's kind (dp / rdt) and size come from config.json; the weights load strictly."""
        from safetensors.torch import load_file

        from libero_dp.checkpoint import build_policy, load_weights

        models_dir = Path(models_dir)
        files = {"ema": "ema.safetensors", "raw": "model.safetensors"}
        if weights not in files:
            raise ValueError(f"weights {weights!r}: expected one of {sorted(files)}")
        config = json.loads((models_dir / "config.json").read_text())
        model = build_policy(config.get("kind", "dp"), config["policy"])
        file = models_dir / files[weights]
        load_weights(model, load_file(file), str(file))
        train = config["train"]
        scheduler = inference_scheduler(train["prediction_type"], train["num_train_timesteps"])
        return cls(
            model.to(device),
            scheduler,
            sampling_steps,
            config["dataset"]["cameras"],
            models_dir / "language.safetensors",
            train.get("t5_path"),
        )

    @property
    def horizon(self) -> int:
        return self.model.cfg.horizon

    @property
    def image_history(self) -> int:
        return self.model.cfg.image_history

    @torch.no_grad()
    def predict_chunk(
        self, frames: dict[str, np.ndarray], proprio: np.ndarray, language: str, seed: int | None = None
    ) -> np.ndarray:
        """frames {camera: (K,S,S,3) uint8 upright, oldest first}, proprio (Dp,) and the result (H, Da) are in
        model units; `seed` fixes the initial noise (None: fresh noise each call)."""
        from libero_dp.language import embed_instructions

        k = self.image_history
        for cam in self.cameras:
            if cam not in frames or frames[cam].shape[0] != k or frames[cam].dtype != np.uint8:
                got = None if cam not in frames else (frames[cam].shape, frames[cam].dtype)
                raise ValueError(f"frames[{cam!r}]: expected ({k}, S, S, 3) uint8, got {got}")
        emb, mask = embed_instructions([language], self.language_cache, False, self.t5_path)[language]
        images = np.stack([frames[c] for c in self.cameras])[None]
        tensors = [
            torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            for x in (np.asarray(proprio, np.float32)[None], images, emb[None], mask[None])
        ]
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        obs = self.model.encode_obs(*tensors)
        chunk = sample(self.model, obs, self.scheduler, self.sampling_steps, generator)
        if hasattr(self.model, "to_data"):  # the rdt policy samples 128-d state vectors
            chunk = self.model.to_data(chunk)
        return chunk[0].float().cpu().numpy()
