"""The Robotics Diffusion Transformer (RDT) with the public checkpoints' parameter names, in one file.

Written from the structure of thu-ml/RoboticsDiffusionTransformer (models/rdt/model.py, blocks.py,
rdt_runner.py) so that an official RDT-170M or RDT-1B state dict loads strictly: the runner's adaptors
(`lang_adaptor`, `img_adaptor`, `state_adaptor`) and the diffusion transformer under `model.` with
`t_embedder`, `freq_embedder`, the position embeddings `x_pos_embed`, `lang_cond_pos_embed`,
`img_cond_pos_embed` (trainable parameters, initialised sin-cos), `blocks.N.{norm1, attn, norm2, cross_attn,
norm3, ffn}` and `final_layer`.

Token sequence: [diffusion timestep, control frequency, state, H noisy actions], all in the 128-d unified
state vector (values + a 0/1 slot mask, through `state_adaptor`). Block i cross-attends to the language
tokens when i is even and to the image tokens when i is odd. Without SigLIP on disk the project's own image
encoder (`vision.*`, not in an official checkpoint) makes the image tokens, and MiniLM's the language ones;
both go through the adaptors like SigLIP's and T5's would (narrower language tokens are zero-padded).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from libero_dp.policy import ImageEncoder, ObsEncoding, PolicyConfig
from libero_dp.statevec import LIBERO_CONTROL_HZ, RIGHT_EEF_ANGLE, RIGHT_EEF_POS, RIGHT_GRIPPER_OPEN, StateVec

RDTVision = Literal["resnet18gn", "efficientnet_lite0", "siglip"]
LIBERO_SLOTS = (*RIGHT_EEF_POS, *RIGHT_EEF_ANGLE, RIGHT_GRIPPER_OPEN)  # x y z, r6_0..5, gripper


@dataclass(frozen=True)
class RDTConfig:
    hidden: int = 1024
    depth: int = 14
    heads: int = 32
    horizon: int = 64  # action chunk (RDT: 64)
    state_dim: int = 128  # the unified state/action vector
    lang_token_dim: int = 4096  # T5-v1.1-XXL
    img_token_dim: int = 1152  # SigLIP so400m
    max_lang_len: int = 1024
    img_history: int = 2
    img_cameras: int = 3  # camera slots: exterior, right wrist, left wrist
    img_patches: int = 729  # tokens per frame (SigLIP: 27 x 27)
    lang_adaptor: str = "mlp2x_gelu"
    img_adaptor: str = "mlp2x_gelu"
    state_adaptor: str = "mlp3x_gelu"
    ctrl_freq: int = LIBERO_CONTROL_HZ
    # the data: which slots the scale stage's dims fill, how many cameras, which encoders make the tokens
    slots: tuple[int, ...] = LIBERO_SLOTS
    num_cameras: int = 2
    lang_dim: int = 384  # width of the language tokens fed in (MiniLM 384, T5 4096)
    vision: RDTVision = "resnet18gn"
    image_size: int = 128
    vision_width: int = 32
    siglip_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", tuple(self.slots))  # JSON gives a list
        if self.hidden % self.heads:
            raise ValueError(f"rdt hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.num_cameras > self.img_cameras:
            raise ValueError(f"{self.num_cameras} cameras do not fit {self.img_cameras} camera slots")
        if self.lang_dim > self.lang_token_dim:
            raise ValueError(
                f"language tokens of width {self.lang_dim} exceed lang_token_dim {self.lang_token_dim}"
            )
        if self.vision == "siglip" and not self.siglip_path:
            raise ValueError("rdt vision 'siglip' needs siglip_path (a local SigLIP so400m folder)")
        if self.vision == "siglip" and (self.img_token_dim, self.img_patches) != (1152, 729):
            raise ValueError(
                f"SigLIP so400m-patch14-384 gives 729 tokens of 1152 per frame; this rdt size expects "
                f"{self.img_patches} of {self.img_token_dim} (use preset rdt170m or rdt1b)"
            )

    @property
    def action_dim(self) -> int:
        """Width of what the model denoises (sampling draws noise of this shape): the state vector."""
        return self.state_dim

    @property
    def image_history(self) -> int:
        return self.img_history

    @property
    def img_cond_len(self) -> int:
        return self.img_history * self.img_cameras * self.img_patches

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RDTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"rdt policy config: unknown keys {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**d)


OFFICIAL = dict(lang_token_dim=4096, img_token_dim=1152, max_lang_len=1024, img_cameras=3, img_patches=729)
PRESETS: dict[str, dict] = {
    # CPU-sized, for tests and the default-data pipeline: MiniLM tokens directly, 48 px frames (2x2 tokens).
    "tiny": dict(hidden=64, depth=4, heads=4, lang_token_dim=384, img_token_dim=64, max_lang_len=32,
                 img_cameras=2, img_patches=4, image_size=48, vision_width=8),
    "rdt170m": dict(hidden=1024, depth=14, heads=32, **OFFICIAL),  # RDT-170M ("RDT(small)")
    "rdt1b": dict(hidden=2048, depth=28, heads=32, **OFFICIAL),  # RDT-1B (configs/base.yaml)
}  # fmt: skip


def preset(name: str, **overrides: object) -> RDTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown rdt preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(RDTConfig(**PRESETS[name]), **overrides)


# ----------------------------------------------------------------------------------------------------------
# Sin-cos initialisation of the position embeddings (RDT keeps them trainable)


def sincos(dim: int, pos: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim): sines in the first half, cosines in the second (MAE's layout)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.asarray(pos, np.float64).reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sequence_pos_embed(dim: int, lengths: list[int]) -> np.ndarray:
    """[timestep, ctrl_freq, state, actions]: which modality in the first half, position within it in the
    second, so every token knows both."""
    rows = [
        np.concatenate([np.repeat(sincos(dim // 2, np.array([m])), n, 0), sincos(dim // 2, np.arange(n))], 1)
        for m, n in enumerate(lengths)
    ]
    return np.concatenate(rows, 0)


def grid_pos_embed(dim: int, sizes: list[int], embedded: list[bool]) -> np.ndarray:
    """A flattened grid (row-major over `sizes`); each embedded axis of size > 1 gets an equal share of the
    dims, the rest stay at position 0 (RDT leaves SigLIP's patch axis to SigLIP's own embedding)."""
    axes = [i for i, (n, e) in enumerate(zip(sizes, embedded, strict=True)) if e and n > 1]
    out = np.zeros((*sizes, dim))
    if not axes:
        return (out + sincos(dim, np.zeros(1))).reshape(-1, dim)
    share = dim // len(axes) // 2 * 2
    for j, ax in enumerate(axes):
        shape = [1] * len(sizes) + [share]
        shape[ax] = sizes[ax]
        out[..., j * share : (j + 1) * share] += sincos(share, np.arange(sizes[ax])).reshape(shape)
    return out.reshape(-1, dim)


# ----------------------------------------------------------------------------------------------------------
# Blocks (names as timm's Attention / Mlp and RDT's CrossAttention, so the state dict matches)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, N, D) attends to c (B, L, D); mask (B, L) True where c may be attended."""
        b, n, d = x.shape
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(c).reshape(b, c.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)  # RDT's FFN is as wide as the hidden size
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(dim, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RDTBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.RMSNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm3 = nn.RMSNorm(dim, eps=1e-6)
        self.ffn = Mlp(dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), c, mask)
        return x + self.ffn(self.norm3(x))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm_final = nn.RMSNorm(dim, eps=1e-6)
        self.ffn_final = Mlp(dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_final(self.norm_final(x))


class TimestepEmbedder(nn.Module):
    """A scalar (diffusion step, or control frequency in Hz) -> 256 sinusoids (cos, sin) -> MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class RDT(nn.Module):
    """The diffusion transformer (the runner's `model.`)."""

    def __init__(self, cfg: RDTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.t_embedder = TimestepEmbedder(d)
        self.freq_embedder = TimestepEmbedder(d)
        self.x_pos_embed = nn.Parameter(torch.zeros(1, cfg.horizon + 3, d))
        self.lang_cond_pos_embed = nn.Parameter(torch.zeros(1, cfg.max_lang_len, d))
        self.img_cond_pos_embed = nn.Parameter(torch.zeros(1, cfg.img_cond_len, d))
        self.blocks = nn.ModuleList(RDTBlock(d, cfg.heads) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(d, cfg.state_dim)

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg, d = self.cfg, self.cfg.hidden
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        x_pos = sequence_pos_embed(d, [1, 1, 1, cfg.horizon])
        lang_pos = grid_pos_embed(d, [cfg.max_lang_len], [False])
        img_pos = grid_pos_embed(d, [cfg.img_history, cfg.img_cameras, cfg.img_patches], [True, True, False])
        for p, v in (
            (self.x_pos_embed, x_pos),
            (self.lang_cond_pos_embed, lang_pos),
            (self.img_cond_pos_embed, img_pos),
        ):
            p.copy_(torch.from_numpy(v).float()[None])
        for emb in (self.t_embedder, self.freq_embedder):
            nn.init.normal_(emb.mlp[0].weight, std=0.02)
            nn.init.normal_(emb.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final_layer.ffn_final.fc2.weight)  # the untrained model predicts zero
        nn.init.zeros_(self.final_layer.ffn_final.fc2.bias)

    def forward(
        self,
        x: torch.Tensor,
        freq: torch.Tensor,
        t: torch.Tensor,
        lang: torch.Tensor,
        img: torch.Tensor,
        lang_mask: torch.Tensor | None = None,
        img_pos_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, 1 + H, D) state + action tokens; freq, t (B,); lang (B, L, D); img (B, N, D) -> (B, H, 128).

        img_pos_index (N,) picks each image token's row of the (history, camera, patch) grid of
        img_cond_pos_embed; None when the tokens fill the whole grid in order, as SigLIP's do.
        """
        b = x.shape[0]
        cond = torch.stack([self.t_embedder(t.expand(b)), self.freq_embedder(freq.expand(b))], dim=1)
        x = torch.cat([cond.to(x.dtype), x], dim=1) + self.x_pos_embed
        lang = lang + self.lang_cond_pos_embed[:, : lang.shape[1]]
        img_pos = (
            self.img_cond_pos_embed if img_pos_index is None else self.img_cond_pos_embed[:, img_pos_index]
        )
        img = img + img_pos
        for i, block in enumerate(self.blocks):
            x = block(x, lang, lang_mask) if i % 2 == 0 else block(x, img, None)
        return self.final_layer(x)[:, -self.cfg.horizon :]


def adaptor(kind: str, din: int, dout: int) -> nn.Module:
    """RDT's condition adaptors: 'linear' or 'mlp<N>x_gelu' (N linears with tanh-GELU between)."""
    if kind == "linear":
        return nn.Linear(din, dout)
    if kind.startswith("mlp") and kind.endswith("x_gelu") and kind[3:-6].isdigit():
        layers: list[nn.Module] = [nn.Linear(din, dout)]
        for _ in range(int(kind[3:-6]) - 1):
            layers += [nn.GELU(approximate="tanh"), nn.Linear(dout, dout)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown adaptor {kind!r}; expected 'linear' or 'mlp<N>x_gelu'")


# ----------------------------------------------------------------------------------------------------------
# The policy: RDT's runner (adaptors + model) plus the image encoder, with the project's policy interface


class RDTPolicy(nn.Module):
    """encode_obs / denoise / forward as DiffusionPolicy, but actions are (B, H, 128) state vectors."""

    def __init__(self, cfg: RDTConfig):
        super().__init__()
        self.cfg = cfg
        self.model = RDT(cfg)
        self.lang_adaptor = adaptor(cfg.lang_adaptor, cfg.lang_token_dim, cfg.hidden)
        self.img_adaptor = adaptor(cfg.img_adaptor, cfg.img_token_dim, cfg.hidden)
        self.state_adaptor = adaptor(cfg.state_adaptor, 2 * cfg.state_dim, cfg.hidden)  # values + mask
        self.statevec = StateVec(cfg.slots, cfg.state_dim)
        self.register_buffer("slot_mask", torch.from_numpy(self.statevec.mask), persistent=False)
        if cfg.vision == "siglip":
            from libero_dp.encoders import SiglipTokens

            self.siglip = SiglipTokens(cfg.siglip_path, cfg.img_cameras)  # frozen, outside the state dict
            per_frame, index = cfg.img_patches, None
        else:
            pcfg = replace(PolicyConfig(), hidden=cfg.img_token_dim, num_cameras=cfg.num_cameras,
                           image_history=cfg.img_history, image_size=cfg.image_size, vision=cfg.vision,
                           vision_width=cfg.vision_width)  # fmt: skip
            self.vision = ImageEncoder(pcfg)
            per_frame = self.vision.tokens_per_frame
            if per_frame > cfg.img_patches:
                raise ValueError(f"{per_frame} image tokens per frame exceed img_patches={cfg.img_patches}")
            # tokens come in RDT's (history, camera, patch) order; with fewer cameras or tokens per frame than
            # the grid has, each takes its own row of the grid's position embedding
            k, c, p = np.meshgrid(
                np.arange(cfg.img_history), np.arange(cfg.num_cameras), np.arange(per_frame), indexing="ij"
            )
            index = torch.from_numpy(((k * cfg.img_cameras + c) * cfg.img_patches + p).reshape(-1))
        self.register_buffer("img_pos_index", index, persistent=False)
        self.model.init_weights()
        if cfg.vision != "siglip":
            for p_ in (self.vision.pos, self.vision.camera, self.vision.history):
                nn.init.normal_(p_, std=0.02)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, ncam, K, S, S, 3) -> (B, N, img_token_dim), ordered (history, camera, token) as RDT."""
        if self.cfg.vision == "siglip":
            return self.siglip(images)
        b, ncam, k = images.shape[:3]
        tokens = self.vision(images)  # (camera, history, token) order
        d = tokens.shape[-1]
        return tokens.reshape(b, ncam, k, -1, d).transpose(1, 2).reshape(b, -1, d)

    def encode_obs(
        self, proprio: torch.Tensor, images: torch.Tensor, lang: torch.Tensor, lang_mask: torch.Tensor
    ) -> ObsEncoding:
        """proprio (B, Dp) in model units (lifted to the 128-d vector here), images uint8 (B, ncam, K, S, S,
        3), lang (B, L, lang_dim) with lang_mask (B, L)."""
        mask = self.slot_mask.to(proprio.dtype).expand(proprio.shape[0], 1, -1)
        state = torch.cat([self.statevec.lift(proprio)[:, None], mask], dim=-1)
        if lang.shape[-1] < self.cfg.lang_token_dim:
            lang = F.pad(lang, (0, self.cfg.lang_token_dim - lang.shape[-1]))
        return ObsEncoding(
            state=self.state_adaptor(state),
            image=self.img_adaptor(self.image_tokens(images)),
            lang=self.lang_adaptor(lang),
            lang_mask=lang_mask,
        )

    def encode_tokens(
        self,
        state: torch.Tensor,
        lang_tokens: torch.Tensor,
        lang_mask: torch.Tensor,
        img_tokens: torch.Tensor,
    ) -> ObsEncoding:
        """RDT's own inputs: state (B, 128) in the unified vector, T5 tokens (B, L, lang_token_dim), SigLIP
        tokens (B, img_cond_len, img_token_dim) ordered (history, camera, patch), as the runner takes them."""
        mask = self.slot_mask.to(state.dtype).expand(state.shape[0], 1, -1)
        return ObsEncoding(
            state=self.state_adaptor(torch.cat([state[:, None], mask], dim=-1)),
            image=self.img_adaptor(img_tokens),
            lang=self.lang_adaptor(lang_tokens),
            lang_mask=lang_mask,
        )

    def denoise(self, noisy_actions: torch.Tensor, timesteps: torch.Tensor, obs: ObsEncoding) -> torch.Tensor:
        """noisy_actions (B, H, 128), timesteps (B,) -> the model output (B, H, 128)."""
        b, h, _ = noisy_actions.shape
        mask = self.slot_mask.to(noisy_actions.dtype).expand(b, h, -1)
        actions = self.state_adaptor(torch.cat([noisy_actions, mask], dim=-1))
        x = torch.cat([obs.state.to(actions.dtype), actions], dim=1)
        freq = torch.full((1,), self.cfg.ctrl_freq, device=x.device)
        full_grid = obs.image.shape[1] == self.cfg.img_cond_len  # the tokens fill the grid in order
        index = None if full_grid else self.img_pos_index
        return self.model(x, freq, timesteps, obs.lang, obs.image, obs.lang_mask, index)

    def forward(
        self,
        noisy_actions: torch.Tensor,
        timesteps: torch.Tensor,
        proprio: torch.Tensor,
        images: torch.Tensor,
        lang: torch.Tensor,
        lang_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.denoise(noisy_actions, timesteps, self.encode_obs(proprio, images, lang, lang_mask))

    def to_data(self, chunk: torch.Tensor) -> torch.Tensor:
        """(..., 128) sampled actions -> (..., Da) in the scale stage's model units (unused slots dropped)."""
        return self.statevec.lower(chunk * self.slot_mask.to(chunk.dtype))

    def official_keys(self) -> list[str]:
        """State-dict keys an official RDT checkpoint holds: everything but the project's image encoder."""
        return [k for k in self.state_dict() if not k.startswith("vision.")]
