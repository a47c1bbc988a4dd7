"""The rdt policy against RDT's public checkpoints' layout, the 128-d state vector, and fine-tuning.

The official names and shapes are written out here from the public code (thu-ml/RoboticsDiffusionTransformer:
RDTRunner's adaptors, RDT under `model.`, timm's Attention/Mlp/RmsNorm inside each block), independently of
libero_dp.rdt, so a renamed or reshaped parameter there fails these tests.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from libero_dp import rdt
from libero_dp.checkpoint import CheckpointMismatch, init_from, load_weights
from libero_dp.config import TrainParams
from libero_dp.sampling import PolicyRunner, inference_scheduler, sample
from libero_dp.statevec import STATE_VEC_LEN, StateVec, libero_slots
from libero_dp.train import train
from libero_dp.units import Transform

# configs/base.yaml + the released model cards: RDT-1B hidden 2048 depth 28, RDT-170M hidden 1024 depth 14,
# 32 heads; chunk 64; 128-d state; T5-XXL 4096-d tokens up to 1024; SigLIP 1152-d, 2 frames x 3 cameras x 729.
OFFICIAL_SIZES = {"rdt170m": (1024, 14, 32), "rdt1b": (2048, 28, 32)}


def official_shapes(hidden: int, depth: int, heads: int) -> dict[str, tuple[int, ...]]:
    h, hd, horizon, state, img_len = hidden, hidden // heads, 64, 128, 2 * 3 * 729
    out: dict[str, tuple[int, ...]] = {
        "model.x_pos_embed": (1, horizon + 3, h),
        "model.lang_cond_pos_embed": (1, 1024, h),
        "model.img_cond_pos_embed": (1, img_len, h),
    }
    for emb in ("t_embedder", "freq_embedder"):
        out |= {f"model.{emb}.mlp.0.weight": (h, 256), f"model.{emb}.mlp.0.bias": (h,)}
        out |= {f"model.{emb}.mlp.2.weight": (h, h), f"model.{emb}.mlp.2.bias": (h,)}
    for i in range(depth):
        b = f"model.blocks.{i}"
        out |= {f"{b}.norm1.weight": (h,), f"{b}.norm2.weight": (h,), f"{b}.norm3.weight": (h,)}
        out |= {f"{b}.attn.qkv.weight": (3 * h, h), f"{b}.attn.qkv.bias": (3 * h,)}
        out |= {f"{b}.attn.q_norm.weight": (hd,), f"{b}.attn.k_norm.weight": (hd,)}
        out |= {f"{b}.attn.proj.weight": (h, h), f"{b}.attn.proj.bias": (h,)}
        out |= {f"{b}.cross_attn.q.weight": (h, h), f"{b}.cross_attn.q.bias": (h,)}
        out |= {f"{b}.cross_attn.kv.weight": (2 * h, h), f"{b}.cross_attn.kv.bias": (2 * h,)}
        out |= {f"{b}.cross_attn.q_norm.weight": (hd,), f"{b}.cross_attn.k_norm.weight": (hd,)}
        out |= {f"{b}.cross_attn.proj.weight": (h, h), f"{b}.cross_attn.proj.bias": (h,)}
        out |= {f"{b}.ffn.fc1.weight": (h, h), f"{b}.ffn.fc1.bias": (h,)}
        out |= {f"{b}.ffn.fc2.weight": (h, h), f"{b}.ffn.fc2.bias": (h,)}
    out |= {"model.final_layer.norm_final.weight": (h,)}
    out |= {"model.final_layer.ffn_final.fc1.weight": (h, h), "model.final_layer.ffn_final.fc1.bias": (h,)}
    out |= {
        "model.final_layer.ffn_final.fc2.weight": (state, h),
        "model.final_layer.ffn_final.fc2.bias": (state,),
    }
    # adaptors: mlp2x_gelu for language (4096) and images (1152), mlp3x_gelu for state + mask (2 x 128)
    for name, din, n in (
        ("lang_adaptor", 4096, 2),
        ("img_adaptor", 1152, 2),
        ("state_adaptor", 2 * state, 3),
    ):
        for j in range(n):
            out |= {f"{name}.{2 * j}.weight": (h, din if j == 0 else h), f"{name}.{2 * j}.bias": (h,)}
    return out


def random_state_dict(shapes: dict[str, tuple[int, ...]], device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if device == "meta":
        return {k: torch.empty(s, device="meta", dtype=torch.bfloat16) for k, s in shapes.items()}
    return {k: (0.02 * torch.randn(s, generator=g)).to(torch.bfloat16) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def rdt170m() -> tuple[rdt.RDTPolicy, dict[str, torch.Tensor]]:
    """RDT-170M with a random official-layout state dict (bf16, as released) loaded strictly."""
    torch.manual_seed(0)
    model = rdt.RDTPolicy(rdt.preset("rdt170m")).eval()
    state = random_state_dict(official_shapes(*OFFICIAL_SIZES["rdt170m"]))
    kept = load_weights(model, state, "random rdt-170m")
    assert kept and all(k.startswith("vision.") for k in kept)  # only the project's own image encoder
    return model, state


def test_official_170m_loads_strictly(rdt170m: tuple[rdt.RDTPolicy, dict[str, torch.Tensor]]) -> None:
    model, state = rdt170m
    assert sorted(model.official_keys()) == sorted(state)
    own = model.state_dict()
    assert all(torch.equal(own[k], v.float()) for k, v in state.items())
    n = sum(v.numel() for v in state.values())
    assert 160e6 < n < 175e6, n  # "RDT-170M"


def test_official_1b_shapes_on_meta() -> None:
    with torch.device("meta"):
        model = rdt.RDTPolicy(rdt.preset("rdt1b"))
    shapes = official_shapes(*OFFICIAL_SIZES["rdt1b"])
    assert {k: tuple(model.state_dict()[k].shape) for k in model.official_keys()} == shapes
    load_weights(model, random_state_dict(shapes, "meta"), "meta rdt-1b")  # strict: no error
    n = sum(int(np.prod(s)) for s in shapes.values())
    assert 1.1e9 < n < 1.3e9, n  # "RDT-1B"


def test_forward_official_token_layout_170m(rdt170m: tuple[rdt.RDTPolicy, dict[str, torch.Tensor]]) -> None:
    """[timestep, ctrl_freq, state, 64 actions] against T5 tokens (even blocks) and SigLIP tokens (odd)."""
    model, _ = rdt170m
    b, lang_len = 2, 17
    g = torch.Generator().manual_seed(1)
    state = model.statevec.lift(torch.randn(b, 10, generator=g))
    lang = torch.randn(b, lang_len, 4096, generator=g)
    lang_mask = torch.ones(b, lang_len, dtype=torch.bool)
    lang_mask[1, 9:] = False
    img = torch.randn(b, 2 * 3 * 729, 1152, generator=g)
    seen: list[tuple[int, int]] = []
    hooks = [
        blk.cross_attn.register_forward_hook(lambda m, args, out, i=i: seen.append((i, args[1].shape[1])))
        for i, blk in enumerate(model.model.blocks)
    ]
    x_tokens: list[int] = []
    hooks.append(model.model.blocks[0].register_forward_hook(lambda m, a, o: x_tokens.append(a[0].shape[1])))
    with torch.no_grad():
        obs = model.encode_tokens(state, lang, lang_mask, img)
        out = model.denoise(torch.randn(b, 64, STATE_VEC_LEN, generator=g), torch.tensor([10, 900]), obs)
    for h in hooks:
        h.remove()
    assert out.shape == (b, 64, 128) and torch.isfinite(out).all()
    assert x_tokens == [1 + 1 + 1 + 64]
    assert seen == [(i, lang_len if i % 2 == 0 else 4374) for i in range(14)]
    assert out.std() > 0  # random weights: a non-trivial output


def test_mismatched_keys_and_shapes_are_named(tmp_path: Path) -> None:
    shapes = official_shapes(*OFFICIAL_SIZES["rdt170m"])
    state = random_state_dict(shapes, "meta")
    state["model.blocks.3.cross_attn.kvv.weight"] = state.pop("model.blocks.3.cross_attn.kv.weight")
    state["model.x_pos_embed"] = torch.empty(1, 35, 1024, device="meta")  # a 32-action chunk
    with torch.device("meta"):
        model = rdt.RDTPolicy(rdt.preset("rdt170m"))
    with pytest.raises(CheckpointMismatch) as e:
        load_weights(model, state, "ckpt.safetensors")
    msg = str(e.value)
    assert msg.startswith("ckpt.safetensors:")
    assert "missing key: model.blocks.3.cross_attn.kv.weight (expected shape [2048, 1024])" in msg
    assert "unexpected key: model.blocks.3.cross_attn.kvv.weight" in msg
    assert "shape mismatch: model.x_pos_embed: expected [1, 67, 1024], found [1, 35, 1024]" in msg
    assert msg.count("\n") == 3  # exactly the three differences


def _tiny(**kw: object) -> rdt.RDTPolicy:
    return rdt.RDTPolicy(rdt.preset("tiny", horizon=16, **kw))


def test_init_from_prefers_ema_and_reads_each_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ema_src, raw_src = _tiny(), _tiny()
    official = {k: v for k, v in ema_src.state_dict().items() if not k.startswith("vision.")}
    folder = tmp_path / "checkpoint-1000"  # RDT's trainer: ema/model.safetensors beside the raw weights
    (folder / "ema").mkdir(parents=True)
    save_file(official, str(folder / "ema" / "model.safetensors"))
    raw = {k: v for k, v in raw_src.state_dict().items() if not k.startswith("vision.")}
    torch.save(raw, folder / "pytorch_model.bin")
    ds = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": raw, "global_steps": 1}, ds)  # DeepSpeed's file

    def loaded(path: Path, prefer: str = "ema") -> dict[str, torch.Tensor]:
        m = _tiny()
        info = init_from(m, path, prefer)  # type: ignore[arg-type]
        assert info["file"] is not None
        return m.state_dict()

    key = "model.blocks.1.cross_attn.kv.weight"
    assert torch.equal(loaded(folder)[key], official[key])
    assert torch.equal(loaded(folder, "raw")[key], raw[key])
    assert torch.equal(loaded(ds)[key], raw[key])
    empty = tmp_path / "pretrained"
    empty.mkdir()
    (empty / "README.md").write_text("nothing here")
    assert init_from(_tiny(), empty)["file"] is None  # the default folder: from scratch
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        init_from(_tiny(), tmp_path / "typo")


def test_state_vector_round_trip_and_mask() -> None:
    """LIBERO actions -> model units -> 128-d -> back: exact in the vector step; unused slots 0 and masked."""
    rng = np.random.default_rng(0)
    raw = np.concatenate(
        [rng.uniform(-1, 1, (200, 6)) * [1, 1, 1, 0.5, 0.5, 0.5], rng.choice([-1.0, 1.0], (200, 1))], 1
    )
    t = Transform(pos_unit="cm", rot_repr="rot6d", norm="minmax")
    t.fit(raw, rng.normal(size=(50, 3)), rng.normal(size=(50, 3)) * 0.3, rng.uniform(0, 0.04, (50, 2)))
    slots = libero_slots(t.action_names)
    assert slots == (30, 31, 32, 33, 34, 35, 36, 37, 38, 10)  # eef_pos_x..z, eef_angle_0..5, gripper_open
    assert libero_slots(t.proprio_names) == slots
    sv = StateVec(slots)
    model_units = t.actions_to_model(raw)
    vec = sv.lift(model_units)
    assert vec.shape == (200, 128)
    assert np.array_equal(sv.lower(vec), model_units)  # bit-exact
    unused = np.ones(128, bool)
    unused[list(slots)] = False
    assert not vec[:, unused].any()
    assert sv.mask.sum() == 10 and not sv.mask[unused].any()
    np.testing.assert_allclose(t.actions_from_model(sv.lower(vec)), raw, atol=1e-6)
    # torch path, and the policy's output masking: garbage in unused slots never reaches an action
    policy = _tiny()
    out = torch.from_numpy(vec).float() + torch.from_numpy(unused.astype(np.float32)) * 7.0
    assert torch.equal(policy.to_data(out), torch.from_numpy(model_units))
    with pytest.raises(ValueError, match="rot_repr=rot6d"):
        libero_slots(Transform(rot_repr="axis_angle").action_names)


def test_control_frequency_is_an_input() -> None:
    torch.manual_seed(0)
    a = _tiny()
    for p in a.model.final_layer.parameters():  # zero-initialised: make the output depend on the input
        torch.nn.init.normal_(p, std=0.5)
    b = rdt.RDTPolicy(rdt.preset("tiny", horizon=16, ctrl_freq=5))
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 16, 128, generator=g), torch.tensor([50]), torch.randn(1, 10, generator=g))
    imgs = torch.randint(0, 255, (1, 2, 2, 48, 48, 3), dtype=torch.uint8, generator=g)
    lang, mask = torch.randn(1, 32, 384, generator=g), torch.ones(1, 32, dtype=torch.bool)
    with torch.no_grad():
        assert not torch.allclose(a(*args, imgs, lang, mask), b(*args, imgs, lang, mask))


def _losses(metrics_dir: Path) -> list[float]:
    with open(metrics_dir / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


@pytest.fixture(scope="module")
def rdt_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro` of a temporary repo copy with train.policy=rdt (tiny, CPU, no encoder files on disk): real
    demos from the simulator, trained and evaluated; the fine-tuning test reuses its windows."""
    import subprocess

    from test_dvc import TINY, _copy_repo, _dvc, _ran, _set_params

    root = tmp_path_factory.mktemp("rdt_repo")
    _copy_repo(root)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    params = {**TINY, "train": {**TINY["train"], "policy": "rdt", "preset": "tiny"}}
    params["collect"] = {**TINY["collect"], "demos_per_task": 2, "expert_check_episodes": 0}
    params["scale"] = {"val_fraction": 0.5}
    _set_params(root, params)
    assert {"collect", "train", "eval", "report"} <= _ran(_dvc(root, "repro"))
    return root


def fixed_loss(model: torch.nn.Module, windows: Path, n: int = 32) -> float:
    """The training loss of the first n windows with fixed noise and timesteps: comparable across weights."""
    from libero_dp.language import language_table
    from libero_dp.sampling import diffusion_loss, train_scheduler
    from libero_dp.train import _to_device
    from libero_dp.windows import WindowDataset

    ds = WindowDataset(windows, "train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(0, len(ds), max(1, len(ds) // n))][:n])
    emb, mask = language_table(ds.languages)
    b = _to_device(batch, torch.device("cpu"), (torch.from_numpy(emb), torch.from_numpy(mask)), model)
    sched = train_scheduler("sample")
    with torch.no_grad():
        losses = [
            diffusion_loss(model, b, sched, "sample", torch.Generator().manual_seed(s))[0] for s in range(4)
        ]
    return float(torch.stack(losses).mean())


RUN = dict(policy="rdt", preset="tiny", batch_size=8, lr=1e-3, warmup_steps=5, num_workers=0, log_every=10)


@pytest.mark.sim
@pytest.mark.slow
def test_finetune_on_real_demos(rdt_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train a few steps on real demo windows, then fine-tune from that checkpoint (train.init_from): the
    fixed-noise loss falls, the fine-tune starts from the trained weights, PolicyRunner runs the result."""
    from libero_dp.checkpoint import build_policy

    monkeypatch.chdir(rdt_repo)  # the windows' meta.json names data/ paths relative to the repo
    windows = rdt_repo / "data" / "windows"
    first = tmp_path / "a" / "models"
    m1 = train(TrainParams(**RUN, steps=40, val_every=40, ckpt_every=40), windows, first)
    assert m1["policy"] == "rdt" and m1["init_from"] is None
    config = json.loads((first / "config.json").read_text())
    assert config["kind"] == "rdt" and config["policy"]["slots"] == [30, 31, 32, 33, 34, 35, 36, 37, 38, 10]
    torch.manual_seed(0)  # train()'s init
    init = build_policy("rdt", config["policy"])
    trained = PolicyRunner.load(first).model
    loss_init, loss_trained = fixed_loss(init, windows), fixed_loss(trained, windows)
    assert loss_trained < 0.6 * loss_init, (loss_init, loss_trained)

    second = tmp_path / "b" / "models"
    params = TrainParams(**RUN, steps=20, val_every=20, ckpt_every=20, init_from=str(first), seed=1)
    m2 = train(params, windows, second)
    assert m2["init_from"] == str(first / "ema.safetensors")  # the EMA weights, preferred
    scratch, tuned = _losses(first.parent / "metrics"), _losses(second.parent / "metrics")
    assert tuned[0] < 0.75 * scratch[0], (scratch, tuned)  # starts where the first run got to
    assert fixed_loss(PolicyRunner.load(second).model, windows) < 0.6 * loss_init

    runner = PolicyRunner.load(second, device="cpu")
    frames = {cam: np.zeros((2, 64, 64, 3), np.uint8) for cam in runner.cameras}
    language = config["dataset"]["languages"][0]
    chunk = runner.predict_chunk(frames, np.zeros(10, np.float32), language, seed=0)
    assert chunk.shape == (16, 10) and np.isfinite(chunk).all()


def test_sample_returns_state_vectors() -> None:
    policy = _tiny().eval()
    g = torch.Generator().manual_seed(0)
    obs = policy.encode_obs(
        torch.randn(2, 10, generator=g),
        torch.randint(0, 255, (2, 2, 2, 48, 48, 3), dtype=torch.uint8, generator=g),
        torch.randn(2, 32, 384, generator=g),
        torch.ones(2, 32, dtype=torch.bool),
    )
    chunk = sample(policy, obs, inference_scheduler("sample"), 5, torch.Generator().manual_seed(0))
    assert chunk.shape == (2, 16, 128) and policy.to_data(chunk).shape == (2, 16, 10)


@pytest.mark.sim
@pytest.mark.slow
def test_dvc_repro_rdt_tiny_end_to_end(rdt_repo: Path) -> None:
    """The rdt policy through the whole DVC pipeline on CPU, evaluated; then a checkpoint dropped into
    pretrained/ (train.init_from's default) reruns training from it."""
    import shutil

    from test_dvc import _dvc, _ran

    root = rdt_repo
    config = json.loads((root / "models" / "config.json").read_text())
    assert config["kind"] == "rdt" and config["policy"]["vision"] == "resnet18gn"
    trained = json.loads((root / "metrics" / "train.json").read_text())
    assert trained["policy"] == "rdt" and trained["init_from"] is None and np.isfinite(trained["loss"])
    evaluated = json.loads((root / "metrics" / "eval.json").read_text())["overall"]
    assert evaluated["n"] == 1 and evaluated["errors"] == 0, evaluated  # an episode ran with the rdt policy
    assert evaluated["mean_inference_ms"] > 0
    assert _ran(_dvc(root, "repro")) == set()  # up to date, pretrained/ (README only) included

    shutil.copy(root / "models" / "ema.safetensors", root / "pretrained" / "ema.safetensors")
    assert "train" in _ran(_dvc(root, "repro"))  # the init_from dependency changed
    again = json.loads((root / "metrics" / "train.json").read_text())
    assert again["init_from"] == "pretrained/ema.safetensors"


def test_encoder_paths_fail_clearly(tmp_path: Path) -> None:
    """SigLIP/T5 load lazily from local folders only; a wrong folder is an error naming it."""
    from libero_dp.language import embed_instructions

    bogus = tmp_path / "not-siglip"
    bogus.mkdir()
    policy = rdt.RDTPolicy(rdt.preset("rdt170m", vision="siglip", siglip_path=str(bogus), depth=2))
    assert not any(k.startswith(("vision.", "siglip.")) for k in policy.state_dict())  # frozen, not saved
    with pytest.raises(FileNotFoundError, match="not-siglip"):
        policy.image_tokens(torch.zeros(1, 2, 2, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(FileNotFoundError, match="not-t5"):
        embed_instructions(["open the drawer"], t5_path=str(tmp_path / "not-t5"))
    with pytest.raises(ValueError, match="729 tokens of 1152"):
        rdt.preset("tiny", vision="siglip", siglip_path=str(bogus))
