"""A checkpoint is checked before any episode runs: its config against its weights, its normalisation stats
against the data dims it was trained with (issue: a claimed rate must be checkable, a wrong file must not
cost an evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from libero_dp import evaluate as ev
from libero_dp import policy as dp
from libero_dp.checkpoint import CheckpointMismatch, check_checkpoint
from libero_dp.config import EvalParams, ExecParams
from libero_dp.units import Transform


def _stats(path: Path, rot_repr: str = "rot6d") -> Path:
    rng = np.random.default_rng(0)
    t = Transform("cm", rot_repr)
    t.fit(
        rng.uniform(-1, 1, (50, 7)), rng.normal(size=(50, 3)), rng.normal(size=(50, 4)), rng.random((50, 2))
    )
    t.save(path)
    return path


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A tiny policy as train.py writes it: config.json, ema.safetensors; stats.json beside it."""
    cfg = dp.preset("tiny", action_dim=10, proprio_dim=10, horizon=8)
    model = dp.DiffusionPolicy(cfg)
    d = tmp_path / "models"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "ema.safetensors"))
    ds = {
        "action_dim": 10,
        "proprio_dim": 10,
        "task_names": ["KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet"],
    }
    config = {"kind": "dp", "policy": cfg.to_dict(), "dataset": ds, "train": {"prediction_type": "sample"}}
    (d / "config.json").write_text(json.dumps(config))
    _stats(tmp_path / "stats.json")
    return d


def test_a_matching_checkpoint_passes(ckpt: Path) -> None:
    assert check_checkpoint(ckpt, "ema", ckpt.parent / "stats.json")["policy"]["hidden"] == 96


def test_config_that_does_not_match_the_weights(ckpt: Path) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["policy"]["hidden"] = 128  # a config from another run beside these weights
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatch) as e:
        check_checkpoint(ckpt, "ema", ckpt.parent / "stats.json")
    msg = str(e.value)
    assert str(ckpt / "ema.safetensors") in msg and "shape mismatch" in msg and "expected [128" in msg
    assert str(ckpt / "config.json") in msg and "field 'policy'" in msg


def test_missing_or_unfitting_stats_and_missing_files(ckpt: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.json: missing; the normalisation stats"):
        check_checkpoint(ckpt, "ema", ckpt.parent / "nowhere.json")
    axis = _stats(ckpt.parent / "axis.json", "axis_angle")  # 7-d actions for a 10-d policy
    with pytest.raises(ValueError, match=r"axis.json: 7-d actions .* field 'dataset.action_dim' = 10"):
        check_checkpoint(ckpt, "ema", axis)
    with pytest.raises(FileNotFoundError, match=r"model.safetensors: missing; eval.weights=raw"):
        check_checkpoint(ckpt, "raw", ckpt.parent / "stats.json")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json: not valid JSON"):
        check_checkpoint(ckpt, "ema", ckpt.parent / "stats.json")
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config.json: missing"):
        check_checkpoint(ckpt, "ema", ckpt.parent / "stats.json")


def test_evaluate_fails_before_any_episode(ckpt: Path, tmp_path: Path) -> None:
    """The eval stage's entry checks the checkpoint before it builds specs, starts Ray or writes anything."""
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["policy"]["depth"] = 2
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out, cache = tmp_path / "eval", tmp_path / "cache"
    params = EvalParams(tasks=["libero_90:0"], episodes_per_task=1, workers=1)
    with pytest.raises(CheckpointMismatch, match="unexpected key"):
        ev.evaluate(params, ExecParams(), ckpt, tmp_path / "stats.json", tmp_path, out, cache, progress=False)
    assert not out.exists() and not cache.exists()


def test_export_is_self_contained_bf16_and_verified(ckpt: Path, tmp_path: Path) -> None:
    """export: bf16 weights that load into the fp32 policy, config/stats/manifest beside them; a changed file
    fails verification; over the size limit is an error that writes nothing."""
    import torch
    from safetensors.torch import load_file

    from libero_dp.checkpoint import build_policy, load_weights
    from libero_dp.export import export_checkpoint, verify

    out = tmp_path / "export"
    m = export_checkpoint(ckpt, tmp_path / "stats.json", out)
    assert sorted(m["files"]) == ["config.json", "ema.safetensors", "stats.json"] and m["dtype"] == "bf16"
    w = load_file(str(out / "ema.safetensors"))
    assert {v.dtype for v in w.values()} == {torch.bfloat16}
    assert (out / "ema.safetensors").stat().st_size < 0.6 * (ckpt / "ema.safetensors").stat().st_size
    cfg = check_checkpoint(out, "ema", out / "stats.json")
    assert cfg["dataset"]["task_names"] and cfg["export"] == {"weights": "ema", "dtype": "bf16"}
    model = build_policy("dp", cfg["policy"])
    load_weights(model, w, "export")
    ref = load_file(str(ckpt / "ema.safetensors"))
    for k, v in model.state_dict().items():  # bf16 rounding only: relative error <= 2**-8
        assert torch.allclose(v, ref[k], rtol=2**-8, atol=1e-6), k
    assert verify(out)["total_bytes"] == m["total_bytes"]
    (out / "stats.json").write_text((out / "stats.json").read_text().replace("cm", "mm", 1))
    with pytest.raises(ValueError, match=r"stats.json: sha256 differs from .*manifest.json"):
        verify(out)
    small = tmp_path / "small"
    with pytest.raises(ValueError, match=r"over the limit of 0.1 MiB"):
        export_checkpoint(ckpt, tmp_path / "stats.json", small, max_mib=0.1)
    assert not small.exists()
