"""`tools/libero90_host.sh pack` brings a GPU host's DVC experiments home: fetched from its git bundle, they
are listed by `dvc exp show` beside this checkout's own (issue 16: seeds side by side)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = """stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [train.seed]
    metrics: [m.json: {cache: false}]
"""
TRAIN = """import json, yaml
seed = yaml.safe_load(open("params.yaml"))["train"]["seed"]
json.dump({"success": seed / 10}, open("m.json", "w"))
"""


def _sh(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}: {r.stderr[-2000:]}"
    return r.stdout


def test_pack_bundles_the_hosts_experiments_for_dvc_exp_show(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    work, home, out = tmp_path / "libero90", tmp_path / "home", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "params.yaml").write_text("train:\n  seed: 0\n")
    (work / "dvc.yaml").write_text(STAGE)
    (work / "train.py").write_text(TRAIN)
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "b"],
    ):
        _sh(cmd, work, env)
    _sh(["git", "clone", "-q", str(work), str(home)], tmp_path, env)  # home has the baseline, not the runs
    for seed in (1, 2):  # the host's runs, one per training seed
        _sh(["dvc", "exp", "run", "-q", "-n", f"s{seed}", "-S", f"train.seed={seed}"], work, env)

    _sh(
        ["bash", str(ROOT / "tools" / "libero90_host.sh"), "pack", str(out)], ROOT, {**env, "WORK": str(work)}
    )
    bundle = out / "libero90_exps.bundle"
    assert bundle.is_file() and (out / "libero90_results.tgz").is_file()

    _sh(["git", "fetch", "-q", str(bundle), "refs/exps/*:refs/exps/*"], home, env)
    shown = json.loads(_sh(["dvc", "exp", "show", "--json"], home, env))
    runs = {
        e["name"]: e["data"]["metrics"]["m.json"]["data"]["success"]
        for rev in shown
        for exp in rev.get("experiments") or []
        for e in exp["revs"]
    }
    assert runs == {"s1": 0.1, "s2": 0.2}
