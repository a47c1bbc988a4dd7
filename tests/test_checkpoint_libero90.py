"""The committed libero_90 policy (checkpoints/libero90) is intact and self-consistent, and the rule that
sets its CPU check beside the GPU run's claimed rates says what it should (issue 16: anyone can check a
claimed rate without a GPU)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from libero_dp.checkpoint import check_checkpoint
from libero_dp.export import verify

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "libero90"


def _tool():
    spec = importlib.util.spec_from_file_location("checkpoint_tool", ROOT / "tools" / "checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_libero90_checkpoint_matches_its_manifest_and_config() -> None:
    manifest = verify(CKPT)  # every file's sha256 as exported on the GPU host
    assert manifest["dtype"] == "bf16" and manifest["total_bytes"] <= 64 * 2**20
    config = check_checkpoint(CKPT, "ema", CKPT / "stats.json")  # weights' names/shapes vs the config
    tasks = config["dataset"]["task_names"]
    assert len(tasks) == 90 and len(set(tasks)) == 90
    claimed = json.loads((ROOT / "benchmarks" / "results" / "libero90_s0" / "eval.json").read_text())
    assert set(claimed["tasks"]) == set(tasks)  # the claimed run evaluated exactly the trained tasks


def _run(rates: dict[str, tuple[int, int]]) -> dict:
    return {"tasks": {t: {"successes": s, "n": n} for t, (s, n) in rates.items()}}


def test_agreement_within_wilson_intervals() -> None:
    agreement = _tool().agreement
    same = agreement(_run({"a": (5, 10), "b": (8, 10)}), _run({"a": (2, 5), "b": (4, 5)}))
    assert same["all_agree"] and same["pooled"]["check"]["n"] == 20 and same["pooled"]["claim"]["n"] == 10
    # 10/10 on the CPU against 0/10 claimed is outside both intervals: a disagreement, also when pooled
    off = agreement(_run({"a": (10, 10), "b": (5, 10)}), _run({"a": (0, 10), "b": (5, 10)}))
    assert not off["tasks"]["a"]["agree"] and off["tasks"]["b"]["agree"] and not off["all_agree"]
    with pytest.raises(ValueError, match="lacks the checked tasks"):
        agreement(_run({"c": (1, 2)}), _run({"a": (1, 2)}))


@pytest.mark.parametrize(("option", "field"), [("--max-steps", "max_steps"), ("--exec-steps", "steps")])
def test_a_bad_eval_option_is_an_error_naming_the_field(option: str, field: str) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "checkpoint.py"), "eval", str(CKPT), option, "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and "validation error" in r.stderr and f"\n{field}\n" in r.stderr
    assert "eval learned" not in r.stderr  # failed before any episode
