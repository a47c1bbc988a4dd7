"""The rdt policy (libero_dp.rdt) on GPUs: training samples/s and MFU, and chunk latency with CUDA graphs.

train: the exact loss of libero_dp.train (128-d state vectors, loss on LIBERO's slots) with AdamW, grad clip,
bf16 autocast, the transformer blocks compiled one by one (regional torch.compile: one compile serves all
blocks), DDP under torchrun (batch is per GPU). Inputs are the project's (uint8 frames through the project's
image encoder, MiniLM-sized language tokens) or, with --inputs tokens, RDT's own layout: precomputed SigLIP
tokens (2 frames x 3 cameras x 729 x 1152) and T5 tokens (4096-d), as a fine-tune with frozen encoders sees
them. FLOPs of one forward+backward are counted by torch.utils.flop_counter; MFU = FLOPs/s / (989 TFLOP/s
dense bf16 x GPUs).

latency: one chunk (64 x 128, 5 DPM-Solver++ steps, batch 1, bf16 autocast) = encode the observation +
5 denoising steps; eager with diffusers' scheduler (as PolicyRunner today), then the whole chunk captured as
one CUDA graph (libero_dp.fastsample), with eager and with compiled blocks inside.

    python benchmarks/rdt_gpu.py latency --presets rdt170m rdt1b
    python benchmarks/rdt_gpu.py train --preset rdt1b --batch 128 --compile
    torchrun --nproc_per_node=2 benchmarks/rdt_gpu.py train --preset rdt1b --batch 128 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.flop_counter import FlopCounterMode

from libero_dp import rdt
from libero_dp.fastsample import GraphedChunk, sample_planned, solver_plan
from libero_dp.policy import count_params
from libero_dp.sampling import diffusion_loss, inference_scheduler, sample, train_scheduler

PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16, FLOP/s (the figure benchmarks/train_gpu.py uses)
LANG_LEN = 32


class TokenInputs(torch.nn.Module):
    """RDT's own inputs (state vector, T5 and SigLIP tokens) behind diffusion_loss's call signature."""

    def __init__(self, policy: rdt.RDTPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, noisy, t, state, img_tokens, lang, lang_mask):  # noqa: ANN001, ANN201
        obs = self.policy.encode_tokens(state, lang, lang_mask, img_tokens)
        return self.policy.denoise(noisy, t, obs)


def inputs(policy: rdt.RDTPolicy, b: int, device: torch.device, tokens: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    cfg = policy.cfg
    out = {
        "actions": policy.statevec.lift(torch.randn(b, cfg.horizon, len(cfg.slots), generator=g)),
        "mask": torch.ones(b, cfg.horizon, dtype=torch.bool),
        "lang_mask": torch.ones(b, LANG_LEN, dtype=torch.bool),
    }
    if tokens:
        out["proprio"] = policy.statevec.lift(torch.randn(b, len(cfg.slots), generator=g))
        out["images"] = torch.randn(b, cfg.img_cond_len, cfg.img_token_dim, generator=g)
        out["lang"] = torch.randn(b, LANG_LEN, cfg.lang_token_dim, generator=g)
    else:
        shape = (b, cfg.num_cameras, cfg.img_history, 128, 128, 3)
        out["proprio"] = torch.randn(b, len(cfg.slots), generator=g)
        out["images"] = torch.randint(0, 255, shape, dtype=torch.uint8, generator=g)
        out["lang"] = torch.randn(b, LANG_LEN, cfg.lang_dim, generator=g)
    out = {k: v.to(device) for k, v in out.items()}
    out["dim_weight"] = policy.slot_mask
    return out


def compile_blocks(policy: rdt.RDTPolicy, encoder: bool = False) -> None:
    """Regional compilation: each transformer block (one compile serves them all); with `encoder`, the
    project's image encoder and the final layer too."""
    for block in policy.model.blocks:
        block.compile()
    if encoder:
        if hasattr(policy, "vision"):
            policy.vision.compile()
        policy.model.final_layer.compile()


def host() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "host": platform.node(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpus_visible": torch.cuda.device_count(),
        "torch": torch.__version__,
    }


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_bench(a: argparse.Namespace) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()  # the CPU runs it too, as a smoke test (tiny preset)
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    torch.manual_seed(0)
    tokens = a.inputs == "tokens"
    policy = rdt.RDTPolicy(rdt.preset(a.preset, horizon=64)).to(device)
    model: torch.nn.Module = TokenInputs(policy) if tokens else policy
    batch = inputs(policy, a.batch, device, tokens)
    sched = train_scheduler("sample")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)

    with FlopCounterMode(display=False) as fc:  # one uncompiled forward+backward: the model's arithmetic
        with autocast:
            loss, _ = diffusion_loss(model, batch, sched, "sample")
        loss.backward()
    opt.zero_grad(set_to_none=True)
    flops = fc.get_total_flops()

    if a.compile:
        compile_blocks(policy, a.compile_encoder)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local] if cuda else None)

    def step() -> None:
        with autocast:
            loss, _ = diffusion_loss(net, batch, sched, "sample")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    t0 = time.perf_counter()
    for _ in range(a.warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / a.steps
    if rank == 0:
        res = {
            **host(),
            "bench": "train",
            "policy": "rdt",
            "preset": a.preset,
            "inputs": a.inputs,
            "params": count_params(policy),
            "gpus": world,
            "batch_per_gpu": a.batch,
            "global_batch": a.batch * world,
            "bf16": cuda,
            "compile": ("blocks+encoder" if a.compile_encoder else "blocks") if a.compile else False,
            "warmup_s": warm_s,
            "step_s": dt,
            "samples_per_s": a.batch * world / dt,
            "model_tflops_per_step_per_gpu": flops / 1e12,
            "achieved_tflops_per_gpu": flops / dt / 1e12,
            "mfu": flops / dt / PEAK_BF16,
            "max_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        }
        write(a.out, [res])
    if world > 1:
        dist.destroy_process_group()


def timed(fn: Any, repeats: int, setup: float) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    med, p90 = times[len(times) // 2], times[int(0.9 * len(times))]
    return {"setup_s": setup, "ms_median": 1e3 * med, "ms_p90": 1e3 * p90}


def latency_one(name: str, a: argparse.Namespace) -> list[dict]:
    """Every latency variant of one size; a variant that fails is recorded with its error."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    policy = rdt.RDTPolicy(rdt.preset(name, horizon=64)).to(device).eval()
    plan = solver_plan(inference_scheduler("sample"), a.sampling_steps)
    ac = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)  # graph capture needs no cache
    own = inputs(policy, 1, device, tokens=False)
    tok = inputs(policy, 1, device, tokens=True)
    noise = torch.randn(1, 64, 128, device=device)
    own_in = [own["proprio"], own["images"], own["lang"], own["lang_mask"], noise]
    tok_in = [tok["proprio"], tok["images"], tok["lang"], tok["lang_mask"], noise]

    def eager() -> torch.Tensor:
        with torch.no_grad(), ac:
            obs = policy.encode_obs(own["proprio"], own["images"], own["lang"], own["lang_mask"])
            return sample(policy, obs, inference_scheduler("sample"), a.sampling_steps)

    def chunk(proprio, images, lang, lang_mask, noise):  # noqa: ANN001, ANN202
        with ac:
            obs = policy.encode_obs(proprio, images, lang, lang_mask)
            return sample_planned(policy.denoise, obs, noise, plan)

    def chunk_tokens(state, img, lang, lang_mask, noise):  # noqa: ANN001, ANN202
        with ac:
            obs = policy.encode_tokens(state, lang, lang_mask, img)
            return sample_planned(policy.denoise, obs, noise, plan)

    variants = ["eager_diffusers", "graph", "graph_tokens"]
    if a.compile:
        variants += ["graph_compiled", "graph_tokens_compiled"]
    rows = []
    for vname in variants:
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn_eager = chunk_tokens if "tokens" in vname else chunk
        args = tok_in if "tokens" in vname else own_in
        try:
            if vname == "eager_diffusers":
                for _ in range(3):
                    eager()
                res = timed(eager, a.repeats, setup=time.perf_counter() - t0)
            else:
                if vname == "graph_compiled":
                    compile_blocks(policy)
                graphed = GraphedChunk(fn_eager, args)
                res = timed(lambda g=graphed, x=args: g(*x), a.repeats, setup=time.perf_counter() - t0)
                with torch.no_grad():  # the replay computes what the uncaptured function does
                    res["max_abs_diff_vs_uncaptured"] = float((graphed(*args) - fn_eager(*args)).abs().max())
            res["max_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        except Exception as e:  # noqa: BLE001 - a failed variant is a result, not a crash
            res = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        row = {**host(), "bench": "chunk_latency", "policy": "rdt", "preset": name, "variant": vname,
               "params": count_params(policy), "sampling_steps": a.sampling_steps, "chunk": [64, 128],
               "batch": 1, "bf16": True, **res}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def latency_bench(a: argparse.Namespace) -> None:
    rows = []
    for name in a.presets:
        rows += latency_one(name, a)
        torch.cuda.empty_cache()
    write(a.out, rows)


def write(path: str, rows: list[dict]) -> None:
    out = Path(path)
    runs = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs + rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("--preset", default="rdt170m")
    t.add_argument("--batch", type=int, default=64, help="per GPU")
    t.add_argument("--inputs", choices=["own", "tokens"], default="own")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--compile", action="store_true")
    t.add_argument("--compile-encoder", action="store_true", help="also the image encoder and final layer")
    t.add_argument("--out", default="benchmarks/results/rdt_gpu.json")
    lat = sub.add_parser("latency")
    lat.add_argument("--presets", nargs="+", default=["rdt170m", "rdt1b"])
    lat.add_argument("--sampling-steps", type=int, default=5)
    lat.add_argument("--repeats", type=int, default=30)
    lat.add_argument("--compile", action="store_true")
    lat.add_argument("--out", default="benchmarks/results/rdt_gpu.json")
    a = ap.parse_args()
    train_bench(a) if a.mode == "train" else latency_bench(a)


if __name__ == "__main__":
    main()
