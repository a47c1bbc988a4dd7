"""Training throughput and model FLOPs utilisation of the policy (e.g. rdt170m) on GPUs, 1 or N with torchrun.

The exact training step of libero_dp.train (DiffusionPolicy + diffusion_loss, AdamW, grad clipping, bf16
autocast, optional torch.compile, DDP) on synthetic batches already on the GPU, so the number is the model's
compute rate, not the loader's (benchmarks/loader.py measures that). FLOPs per step are counted with
torch.utils.flop_counter on one forward+backward; MFU = FLOPs/s / (peak dense bf16 x GPUs).

    python benchmarks/train_gpu.py --preset rdt170m --batch 64
    torchrun --nproc_per_node=2 benchmarks/train_gpu.py --preset rdt170m --batch 64   # batch is per GPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.flop_counter import FlopCounterMode

from libero_dp.policy import DiffusionPolicy, count_params, preset
from libero_dp.sampling import diffusion_loss, train_scheduler

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak, FLOP/s


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def batch_on(device: torch.device, b: int, cfg, lang_len: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = cfg.image_size if cfg.image_size >= 128 else 128  # data is stored at 128 px; the model resizes
    return {
        "actions": torch.randn(b, cfg.horizon, cfg.action_dim, generator=g).to(device),
        "mask": torch.ones(b, cfg.horizon, dtype=torch.bool).to(device),
        "proprio": torch.randn(b, cfg.proprio_dim, generator=g).to(device),
        "images": torch.randint(
            0, 255, (b, cfg.num_cameras, cfg.image_history, s, s, 3), dtype=torch.uint8, generator=g
        ).to(device),
        "lang": torch.randn(b, lang_len, cfg.lang_dim, generator=g).to(device),
        "lang_mask": torch.ones(b, lang_len, dtype=torch.bool).to(device),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="rdt170m")
    ap.add_argument("--batch", type=int, default=64, help="per GPU")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/train_gpu.json")
    a = ap.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    torch.manual_seed(0)
    cfg = preset(a.preset, horizon=64, action_dim=10, proprio_dim=10)
    model = DiffusionPolicy(cfg).to(device)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local] if cuda else None)
    if a.compile:
        net = torch.compile(net)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    sched = train_scheduler("sample")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and not a.no_bf16 else nullcontext()
    batch = batch_on(device, a.batch, cfg)

    def step() -> torch.Tensor:
        with autocast:
            loss, _ = diffusion_loss(net, batch, sched, "sample")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    # FLOPs of one forward+backward of the uncompiled model (what MFU counts: the model's arithmetic)
    with FlopCounterMode(display=False) as fc:
        with autocast:
            loss, _ = diffusion_loss(model, batch, sched, "sample")
        loss.backward()
    opt.zero_grad(set_to_none=True)
    flops_per_step = fc.get_total_flops()

    for _ in range(a.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    if rank == 0:
        name = torch.cuda.get_device_name(device) if cuda else "cpu"
        peak = peak_flops(name)
        res = {
            "device": name,
            "gpus": world,
            "preset": a.preset,
            "params": count_params(model),
            "batch_per_gpu": a.batch,
            "global_batch": a.batch * world,
            "bf16": not a.no_bf16,
            "compile": a.compile,
            "step_s": dt,
            "samples_per_s": a.batch * world / dt,
            "model_tflops_per_step_per_gpu": flops_per_step / 1e12,
            "achieved_tflops_per_gpu": flops_per_step / dt / 1e12,
            "mfu": (flops_per_step / dt / peak) if peak else None,
            "peak_bf16_tflops": peak / 1e12 if peak else None,
            "max_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
            "torch": torch.__version__,
        }
        out = Path(a.out)
        runs = json.loads(out.read_text()) if out.exists() else []
        runs.append(res)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(runs, indent=2) + "\n")
        print(json.dumps(res, indent=2))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
