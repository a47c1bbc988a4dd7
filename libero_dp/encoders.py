"""RDT's own encoders, used when their files are on disk: SigLIP (so400m, patch 14, 384) image tokens and
T5-v1.1-XXL language tokens, loaded by `transformers` from local folders only (nothing is downloaded).

Both are frozen and kept out of the policy's state dict (they are not fine-tuned and are far larger than
the policy). Without them the project's own encoders stay the default (policy.ImageEncoder, MiniLM).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

SIGLIP_PATCHES = 729  # 27 x 27 patches of 14 px at 384 px
SIGLIP_DIM = 1152
T5_DIM = 4096


def _transformers(what: str, path: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"{what} path {path!r} is set but the `transformers` package is not installed; install the "
            "pinned requirements.txt, or unset the path to use the project's own encoder"
        ) from None
    return transformers


def _check_dir(what: str, path: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what} path {p}: expected a local model folder holding config.json")
    return p


@lru_cache(maxsize=2)
def _siglip(path: str) -> tuple[Any, dict]:
    tf = _transformers("SigLIP", path)
    p = _check_dir("SigLIP", path)
    model = tf.SiglipVisionModel.from_pretrained(p, local_files_only=True).eval().requires_grad_(False)
    proc = tf.SiglipImageProcessor.from_pretrained(p, local_files_only=True)
    size = proc.size.get("height", 384) if isinstance(proc.size, dict) else int(proc.size)
    return model, {"size": size, "mean": list(proc.image_mean), "std": list(proc.image_std)}


class SiglipTokens:
    """uint8 frames (B, ncam, K, S, S, 3) -> (B, K * slots * 729, 1152), history-major as RDT orders them.

    Camera slots the data has no camera for are filled with the processor's mean-colour image, as RDT pads
    missing views. Not an nn.Module on purpose: the weights stay out of the policy's state dict and copies.
    """

    def __init__(self, path: str, slots: int) -> None:
        self.path, self.slots = str(path), slots
        self._background: dict[tuple, torch.Tensor] = {}

    def __deepcopy__(self, memo: dict) -> SiglipTokens:
        return self  # frozen and shared: the EMA copy of a policy must not duplicate 400M weights

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, S, S, 3) uint8 -> (N, 729, 1152)."""
        model, prep = _siglip(self.path)
        model.to(frames.device)
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=prep["size"], mode="bicubic", antialias=True, align_corners=False)
        mean = torch.tensor(prep["mean"], device=x.device)[:, None, None]
        std = torch.tensor(prep["std"], device=x.device)[:, None, None]
        with torch.no_grad():
            return model(pixel_values=((x - mean) / std).to(model.dtype)).last_hidden_state

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, ncam, k, s = images.shape[:4]
        tokens = self._encode(images.reshape(-1, s, s, 3)).reshape(b, ncam, k, SIGLIP_PATCHES, -1)
        if ncam < self.slots:
            key = (images.device, s)
            if key not in self._background:
                _, prep = _siglip(self.path)
                colour = torch.tensor([round(255 * m) for m in prep["mean"]], dtype=torch.uint8)
                frame = colour.expand(1, s, s, 3).to(images.device)
                self._background[key] = self._encode(frame)[0]
            pad = self._background[key].expand(b, self.slots - ncam, k, -1, -1)
            tokens = torch.cat([tokens, pad.to(tokens.dtype)], dim=1)
        return tokens.transpose(1, 2).reshape(b, k * self.slots * SIGLIP_PATCHES, -1).float()


@lru_cache(maxsize=1)
def _t5(path: str) -> tuple[Any, Any]:
    tf = _transformers("T5", path)
    p = _check_dir("T5", path)
    tokenizer = tf.AutoTokenizer.from_pretrained(p, local_files_only=True)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = tf.T5EncoderModel.from_pretrained(p, local_files_only=True, dtype=dtype).eval()
    if torch.cuda.is_available():
        model.cuda()
    return tokenizer, model


def t5_tokens(path: str, text: str) -> torch.Tensor:
    """One instruction -> its T5 encoder states (n_tokens, 4096), float32 on the CPU (as RDT, unpadded)."""
    tokenizer, model = _t5(str(path))
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids.to(model.device)).last_hidden_state[0]
    return out.float().cpu()
