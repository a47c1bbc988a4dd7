"""Inference latency per action chunk: encode the observation once, then DPM-Solver++ denoising steps.

The same path PolicyRunner.predict_chunk takes (encode_obs + sampling.sample), batch 1, random weights of
the chosen preset (latency does not depend on the weights). CPU default: tiny; GPU: rdt170m in bf16.

    python benchmarks/sampling_latency.py --preset tiny --device cpu
    python benchmarks/sampling_latency.py --preset rdt170m --device cuda --bf16
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from libero_dp.policy import DiffusionPolicy, count_params, preset
from libero_dp.sampling import inference_scheduler, sample


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--steps", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/sampling_latency.json")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    cfg = preset(a.preset, horizon=64, action_dim=10, proprio_dim=10)
    model = DiffusionPolicy(cfg).to(device).eval()
    sched = inference_scheduler("sample")
    g = torch.Generator().manual_seed(0)
    obs_in = (
        torch.randn(1, 10, generator=g).to(device),
        torch.randint(0, 255, (1, 2, cfg.image_history, 128, 128, 3), dtype=torch.uint8, generator=g).to(
            device
        ),
        torch.randn(1, 16, cfg.lang_dim, generator=g).to(device),
        torch.ones(1, 16, dtype=torch.bool).to(device),
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if a.bf16 else nullcontext()
    results = []
    for steps in a.steps:
        times = []
        for i in range(a.repeats + 3):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad(), autocast:
                obs = model.encode_obs(*obs_in)
                chunk = sample(model, obs, sched, steps, torch.Generator().manual_seed(i))
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        times.sort()
        results.append(
            {
                "preset": a.preset,
                "params": count_params(model),
                "device": a.device,
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "bf16": a.bf16,
                "sampling_steps": steps,
                "chunk": list(chunk.shape[1:]),
                "ms_median": 1e3 * times[len(times) // 2],
                "ms_p90": 1e3 * times[int(len(times) * 0.9)],
                "torch_threads": torch.get_num_threads(),
            }
        )
        print(json.dumps(results[-1]))
    out = Path(a.out)
    runs = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs + results, indent=2) + "\n")


if __name__ == "__main__":
    main()
