"""Training on synthetic windows: data order, loss masking, overfitting, exact resume, loadable outputs."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic import SyntheticWindows, make_synthetic

import libero_dp.distributed as distributed
import libero_dp.train as train_mod
from libero_dp import language
from libero_dp.config import TrainParams
from libero_dp.distributed import StreamSampler
from libero_dp.policy import PRESETS
from libero_dp.sampling import PolicyRunner, diffusion_loss, train_scheduler
from libero_dp.train import train, warmup_cosine

#: "tiny" shrunk further so that a few hundred CPU steps take seconds
TEST_PRESET = dict(hidden=64, depth=2, heads=4, mlp_ratio=2.0, image_size=32, vision_width=8)
RUN = dict(
    steps=8, batch_size=4, lr=1e-3, warmup_steps=2, num_workers=0, log_every=1, val_every=3, ckpt_every=3
)


@pytest.fixture(scope="module")
def patched() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "WindowDataset", SyntheticWindows)
        mp.setitem(PRESETS, "tiny", TEST_PRESET)
        yield mp


@pytest.fixture(scope="module")
def finished_run(patched: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("run")
    make_synthetic(root / "windows", demos=2)
    return root, train(TrainParams(**RUN), root / "windows", root / "models")


class SimulatedKill(Exception):
    pass


def _log(root: Path) -> list[dict]:
    with open(root / "metrics" / "train_log.csv") as f:
        return [{k: v for k, v in row.items() if k != "samples_per_s"} for row in csv.DictReader(f)]


def test_stream_sampler_resumes_and_shards() -> None:
    def take(sampler: StreamSampler, k: int) -> list[list[int]]:
        it = iter(sampler)
        return [next(it) for _ in range(k)]

    full = take(StreamSampler(10, 4, seed=3), 9)  # batches straddle epoch boundaries
    assert take(StreamSampler(10, 4, seed=3, start_batch=5), 4) == full[5:]
    assert sorted(sum(full[:5], [])[:10]) == list(range(10))  # each epoch is a permutation
    r0, r1 = (take(StreamSampler(10, 5, seed=3, rank=r, world=2), 1)[0] for r in (0, 1))
    assert not set(r0) & set(r1) and len(r0 + r1) == 10


def test_warmup_cosine() -> None:
    f = warmup_cosine(4, 20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(20) == 0.0 and f(12) == pytest.approx(0.5)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def test_loss_is_masked_mean_over_valid_steps() -> None:
    """Padded steps carry no weight: for a model predicting 0 the loss is the mean square of valid targets."""

    class Zero(torch.nn.Module):
        def forward(self, noisy: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(noisy)

    actions = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    batch = {
        "actions": actions,
        "mask": mask,
        "proprio": torch.zeros(2, 1),
        "images": torch.zeros(2),
        "lang": torch.zeros(2),
        "lang_mask": torch.zeros(2),
    }
    loss, info = diffusion_loss(Zero(), batch, train_scheduler("sample"), "sample")
    assert loss.item() == pytest.approx(actions[mask].square().mean().item(), rel=1e-6)
    assert info["loss_padded"].item() == pytest.approx(actions[~mask].square().mean().item(), rel=1e-6)
    batch["actions"] = torch.where(mask[..., None], actions, 100.0)
    again, _ = diffusion_loss(Zero(), batch, train_scheduler("sample"), "sample")
    assert again.item() == pytest.approx(loss.item())


def test_overfits_a_single_demo(patched: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_synthetic(tmp_path / "windows", demos=1, length=12, val=False)
    params = TrainParams(
        steps=600, batch_size=24, lr=3e-3, warmup_steps=20, num_workers=0, log_every=50, ckpt_every=600
    )
    metrics = train(params, tmp_path / "windows", tmp_path / "models")
    assert metrics["loss"] < 1e-3, _log(tmp_path)


def test_outputs(finished_run: tuple[Path, dict]) -> None:
    root, metrics = finished_run
    models = root / "models"
    files = ("model.safetensors", "ema.safetensors", "config.json", "train_state.pt", "language.safetensors")
    for name in files:
        assert (models / name).is_file(), name
    assert not list(models.glob(".*.tmp"))
    config = json.loads((models / "config.json").read_text())
    assert config["step"] == RUN["steps"] and config["policy"]["hidden"] == TEST_PRESET["hidden"]
    assert set(load_file(models / "ema.safetensors")) == set(load_file(models / "model.safetensors"))
    log = _log(root)
    assert [int(r["step"]) for r in log] == list(range(1, RUN["steps"] + 1))
    assert [r["step"] for r in log if r["val_mse"]] == ["3", "6", "8"]
    saved = json.loads((root / "metrics" / "train.json").read_text())
    assert saved["steps"] == RUN["steps"] and saved["val_mse"] == metrics["val_mse"] > 0
    assert set(saved["val_mse_dim"]) == {"x", "y", "z", "rx", "ry", "rz", "gripper"}


def test_resume_continues_the_same_curve(
    finished_run: tuple[Path, dict], patched: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Killed in step 5 (last checkpoint: step 3), then rerun: the same log and weights as without a stop."""
    baseline, _ = finished_run
    make_synthetic(tmp_path / "windows", demos=2)
    reads = {"n": 0}

    class Crashing(SyntheticWindows):
        def __getitem__(self, i: int) -> dict[str, np.ndarray]:
            if self.split == "train":
                reads["n"] += 1
                if reads["n"] > 4 * RUN["batch_size"]:
                    raise SimulatedKill
            return super().__getitem__(i)

    patched.setattr(train_mod, "WindowDataset", Crashing)
    with pytest.raises(SimulatedKill):
        train(TrainParams(**RUN), tmp_path / "windows", tmp_path / "models")
    assert torch.load(tmp_path / "models" / "train_state.pt", weights_only=True)["step"] == 3
    patched.setattr(train_mod, "WindowDataset", SyntheticWindows)
    train(TrainParams(**RUN), tmp_path / "windows", tmp_path / "models")

    assert _log(tmp_path) == _log(baseline)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(tmp_path / "models" / name), load_file(baseline / "models" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_changed_params_start_afresh(
    finished_run: tuple[Path, dict], patched: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    make_synthetic(tmp_path / "windows", demos=2)
    train(TrainParams(**{**RUN, "steps": 3}), tmp_path / "windows", tmp_path / "models")
    train(TrainParams(**{**RUN, "steps": 4, "lr": 2e-3}), tmp_path / "windows", tmp_path / "models")
    assert [int(r["step"]) for r in _log(tmp_path)] == [1, 2, 3, 4]
    assert torch.load(tmp_path / "models" / "train_state.pt", weights_only=True)["step"] == 4


def test_policy_runner(finished_run: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = finished_run
    # The instruction must come from the run's language cache: MiniLM is not available here.
    monkeypatch.setattr(language, "_memory", {})
    monkeypatch.setattr(language, "_model", lambda: pytest.fail("MiniLM loaded despite the cache"))
    runner = PolicyRunner.load(root / "models", weights="ema", sampling_steps=3)
    assert (runner.horizon, runner.image_history) == (8, 2)
    ds = SyntheticWindows(root / "windows", "val")
    item = ds[0]
    frames = {"agentview_rgb": item["images"][0], "eye_in_hand_rgb": item["images"][1]}
    chunk = runner.predict_chunk(frames, item["proprio"], ds.languages[0], seed=1)
    assert chunk.shape == (8, ds.action_dim) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    text = ds.languages[0]
    np.testing.assert_array_equal(chunk, runner.predict_chunk(frames, item["proprio"], text, seed=1))
    assert not np.array_equal(chunk, runner.predict_chunk(frames, item["proprio"], text, seed=2))
    raw = PolicyRunner.load(root / "models", weights="raw", sampling_steps=3)
    assert not np.array_equal(chunk, raw.predict_chunk(frames, item["proprio"], text, seed=1))
    with pytest.raises(ValueError, match="eye_in_hand_rgb"):
        runner.predict_chunk({"agentview_rgb": frames["agentview_rgb"]}, item["proprio"], ds.languages[0])
    with pytest.raises(ValueError, match="weights"):
        PolicyRunner.load(root / "models", weights="best")


@pytest.mark.sim
def test_overfits_one_real_demo(tiny_windows: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On real simulator data (one expert demo of the drawer task, both cameras), the loss goes below 1e-3."""
    from libero_dp.windows import WindowDataset

    monkeypatch.setattr(train_mod, "WindowDataset", WindowDataset)  # the real loader, not the synthetic one
    monkeypatch.setitem(PRESETS, "tiny", TEST_PRESET)
    episodes = json.loads((tiny_windows / "meta.json").read_text())
    # one whole demo: 10 wait steps + ~78 expert steps to the goal + the push's pressing and rest steps
    assert episodes["horizon"] == 16 and len(WindowDataset(tiny_windows, "train")) > 80
    assert len(json.loads(Path(episodes["scaled_dir"], "split.json").read_text())["train"]) == 1
    params = TrainParams(
        steps=1500,
        batch_size=32,
        lr=3e-3,
        warmup_steps=30,
        num_workers=0,
        log_every=100,
        val_every=100_000,
        ckpt_every=100_000,
    )
    metrics = train(params, tiny_windows, tmp_path / "models")
    assert metrics["loss"] < 1e-3, _log(tmp_path)


def test_relaunch_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    """LIBERO_DP_TRAIN_GPUS=N replaces the stage process by N torchrun ranks; unset, 1, or already under
    torchrun: the process trains itself."""
    calls: list[list[str]] = []
    monkeypatch.setattr(distributed.os, "execv", lambda exe, argv: calls.append(argv))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LIBERO_DP_TRAIN_GPUS", raising=False)
    distributed.relaunch_under_torchrun("stages/train.py")
    monkeypatch.setenv("LIBERO_DP_TRAIN_GPUS", "1")
    distributed.relaunch_under_torchrun("stages/train.py")
    assert calls == []
    monkeypatch.setenv("LIBERO_DP_TRAIN_GPUS", "2")
    distributed.relaunch_under_torchrun("stages/train.py")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert calls == [[*run, "stages/train.py"]]
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.relaunch_under_torchrun("stages/train.py")
    assert len(calls) == 1
