"""`eval.ray_address`: the same evaluation on a Ray cluster started separately (`ray start --head`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from libero_dp import evaluate as ev
from libero_dp.config import EvalParams, ExecParams

pytestmark = pytest.mark.sim


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def test_eval_on_a_separately_started_ray_head(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "RAY_ADDRESS": ""}
    start = [_ray_cli(), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    address = f"127.0.0.1:{port}"
    try:
        ep = EvalParams(
            policy="expert",
            tasks=["libero_90:0"],
            episodes_per_task=2,
            workers=2,
            ray_address=address,
            videos_success=0,
            videos_failure=0,
        )
        out = tmp_path / "eval"
        m = ev.evaluate(
            ep,
            ExecParams(),
            tmp_path / "m",
            tmp_path / "s.json",
            tmp_path / "d",
            out,
            tmp_path / "c",
            progress=False,
        )
        ray_info = m["timing"]["ray"]
        assert ray_info["local"] is False and ray_info["address"].endswith(f":{port}")
        assert ray_info["cluster_cpus"] == 2.0 and len(set(ray_info["actor_pids"])) == 2
        recs = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        assert [r["init_index"] for r in recs] == [0, 1]
        assert all(r["success"] and r["error"] is None for r in recs)
        assert m["overall"]["success_rate"] == 1.0
        # the cluster outlives the evaluation (we connected to it, we did not own it)
        # (same auth mode as the connection: evaluate applied `ray start`'s token rule to this process)
        status_env = {**os.environ, "RAY_ADDRESS": ""}
        status = subprocess.run(
            [_ray_cli(), "status", f"--address={address}"], capture_output=True, env=status_env
        )
        assert status.returncode == 0, status.stderr
    finally:
        subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, env=env, timeout=120)
