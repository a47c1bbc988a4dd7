"""The libero90 preset's figures, from one finished run's metrics: per-stage wall time and share, collect
demos/h and rendered frames/s, train samples/s and MFU, eval episodes/h and env steps/s, the host.

Run on the host after `tools/libero90_host.sh` finished (FLOPs are counted on its GPU with the run's model
config and batch), or anywhere on a brought-back results folder with --flops-per-sample:

    python benchmarks/libero90_preset.py --run /root/libero90 --out preset.json
    python benchmarks/libero90_preset.py --run results/ --flops-per-sample 3.1e9 \
        --merge benchmarks/results/libero90_gpu.json

MFU = samples/s x training FLOPs per sample / (dense bf16 peak x GPUs); FLOPs per sample are counted with
torch.utils.flop_counter on one forward + backward of the real model (benchmarks/train_gpu.py's method).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("collect", "extract", "scale", "windows", "train", "eval", "report")


def _load(run: Path, name: str) -> dict:
    p = run / "metrics" / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def flops_per_sample(run: Path, batch: int = 32) -> float:
    """Training FLOPs (forward + backward) per sample of the run's model, counted on one real-shaped batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_gpu import batch_on

    from libero_dp.policy import DiffusionPolicy, PolicyConfig
    from libero_dp.sampling import diffusion_loss, train_scheduler

    cfg = PolicyConfig(**json.loads((run / "models" / "config.json").read_text())["policy"])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = DiffusionPolicy(cfg).to(dev)
    with FlopCounterMode(display=False) as fc:
        loss, _ = diffusion_loss(model, batch_on(dev, batch, cfg), train_scheduler("sample"), "sample")
        loss.backward()
    return fc.get_total_flops() / batch


def host() -> dict:
    gpus = []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()]
    except FileNotFoundError:
        pass
    return {"cpus": os.cpu_count(), "gpus": gpus, "platform": platform.platform()}


def summarize(run: Path, fps: float | None, host_info: dict) -> dict:
    m = {s: _load(run, s) for s in STAGES if s != "report"}
    walls = {s: m[s].get("stage_wall_s") for s in m}
    # the report stage records no metrics file: its time is from eval's metrics to the report's summary
    ev, rep = run / "metrics" / "eval.json", run / "reports" / "summary.md"
    walls["report"] = None
    if ev.exists() and rep.exists():
        walls["report"] = round(rep.stat().st_mtime - ev.stat().st_mtime, 1)
    total = sum(w for w in walls.values() if w)
    c, t, e = m["collect"], m["train"], m["eval"]
    tasks = c.get("tasks", {}).values()
    frames = sum(x["demos"] * x["mean_episode_length"] for x in tasks)
    render_s = sum(x["demos"] * x["mean_render_s_per_demo"] for x in tasks)
    gpus = len(host_info.get("gpus") or []) or t.get("world_size", 1)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_gpu import peak_flops  # the dense bf16 peaks MFU is measured against there too

    peak = next((p for g in host_info.get("gpus", []) if (p := peak_flops(g))), None)
    sps = t.get("samples_per_s")
    out = {
        "host": host_info,
        "stage_wall_s": walls,
        "stage_share": {s: (w / total if w else None) for s, w in walls.items()},
        "sum_of_stages_s": total,
        "sum_of_stages_min": total / 60,
        "collect": {
            "tasks": len(c.get("tasks", {})),
            "skipped": sorted(c.get("skipped", {})),
            "demos": c.get("num_demos"),
            "workers": None,
            "demos_per_hour": c["num_demos"] / c["wall_s"] * 3600 if c.get("wall_s") else None,
            "frames": frames,
            "rendered_frames_per_s_per_worker": frames / render_s if render_s else None,
            "disk_gb": c.get("disk_bytes", 0) / 1e9,
        },
        "extract": {"frames": m["extract"].get("frames"), "demos": m["extract"].get("demos")},
        "windows": m["windows"].get("splits"),
        "train": {
            "steps": t.get("steps"),
            "params": t.get("params"),
            "world_size": t.get("world_size"),
            "samples_per_s": sps,
            "flops_per_sample": fps,
            "mfu": sps * fps / (peak * gpus) if sps and fps and peak else None,
            "val_mse": t.get("val_mse"),
        },
        "eval": {
            "episodes": e.get("overall", {}).get("n"),
            "success_rate": e.get("overall", {}).get("success_rate"),
            "wilson95": e.get("overall", {}).get("wilson95"),
            **{k: e.get("timing", {}).get(k) for k in ("workers", "episodes_per_hour", "env_steps_per_s")},
        },
    }
    start, rc = run / ".host" / "start", run / ".host" / "rc"
    if start.exists() and rc.exists():  # libero90_host.sh: all of `make libero90`, DVC included
        out["preset_wall_s"] = round(rc.stat().st_mtime - float(start.read_text()), 1)
        out["dvc_and_startup_s"] = round(out["preset_wall_s"] - total, 1)
    out["params_yaml"] = (run / "params.yaml").read_text() if (run / "params.yaml").exists() else ""
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="the preset's copy or brought-back files")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--flops-per-sample", type=float, default=None, help="skip counting (no model here)")
    ap.add_argument("--host", type=Path, default=None, help="host facts JSON (when not run on the host)")
    ap.add_argument("--merge", type=Path, default=None, help="write into this JSON's 'preset' key")
    ap.add_argument("--label", default="preset")
    ap.add_argument("--seed", type=int, default=None, help="merge as seeds.<N> (train.seed)")
    a = ap.parse_args()
    fps = a.flops_per_sample
    if fps is None and (a.run / "models" / "config.json").exists():
        fps = flops_per_sample(a.run)
    info = json.loads(a.host.read_text()) if a.host else host()
    res = summarize(a.run, fps, info)
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    if a.merge:
        doc = json.loads(a.merge.read_text()) if a.merge.exists() else {}
        if a.seed is None:
            doc[a.label] = res
        else:  # one entry per training seed: its mean success and the wall time of its whole run
            ev = _load(a.run, "eval")
            res["mean_success"] = ev["overall"]["mean_task_success_rate"]
            res["episodes_per_task"] = ev["eval"]["episodes_per_task"]
            doc.setdefault("seeds", {})[str(a.seed)] = res
        a.merge.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: res[k] for k in ("stage_wall_s", "sum_of_stages_min", "train", "eval")}, indent=1))


if __name__ == "__main__":
    main()
