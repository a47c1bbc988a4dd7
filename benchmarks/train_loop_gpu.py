"""Where a libero_90 training step's time goes on a GPU: the window loader, the model, or the loop.

The seed-0 libero_90 run trained the `small` policy at ~2,840 samples/s per H200 (MFU 2.4%), far below what
22.7M parameters should allow. This script separates the candidates on one GPU, each with the training code
itself (libero_dp.train's StreamSampler, _to_device, diffusion_loss, fused AdamW, grad clipping, EMA):

  loader   DataLoader over memory-mapped windows of the run's layout (2 cameras x 2 frames x 128 px,
           horizon 64), pinned, per-rank batch B, for several worker counts; no GPU work
  compute  the optimisation step on one batch already on the GPU: eager, torch.compile, and compile with
           the vision backbone in channels-last memory (same arithmetic, other layout)
  loop     both together: loader workers feeding the compiled step, as `train` runs it
  profile  the eager step under torch.profiler: CUDA time by op family (conv, GroupNorm, attention, ...)

Synthetic windows (random pixels: the loader's and the model's cost do not depend on the content) are built
with benchmarks/loader.py's `synthetic_windows`. Results are written after each part, so a run cut short
keeps what it measured.

    python benchmarks/train_loop_gpu.py --batch 256 --out benchmarks/results/train_loop_gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from loader import synthetic_windows  # noqa: E402

from libero_dp.config import TrainParams  # noqa: E402
from libero_dp.distributed import StreamSampler  # noqa: E402
from libero_dp.policy import DiffusionPolicy, ImageEncoder, count_params  # noqa: E402
from libero_dp.sampling import diffusion_loss, train_scheduler  # noqa: E402
from libero_dp.train import _optimizer, _to_device, ema_update, policy_config  # noqa: E402
from libero_dp.windows import WindowDataset  # noqa: E402

FAMILIES = (
    ("conv", ("conv", "cudnn", "implicit_gemm", "wgrad", "dgrad", "fprop")),
    ("group_norm", ("group_norm", "groupnorm", "GroupNorm")),
    ("attention", ("attention", "flash", "fmha", "sdpa")),
    ("gemm", ("gemm", "matmul", "addmm", "cutlass", "sm90_xmma", "nvjet")),
    ("optimizer_ema", ("adam", "foreach", "lerp")),
    ("copy_cast", ("copy", "to_copy", "cast", "Memcpy", "convert")),
)


def channels_last_forward(self: ImageEncoder, images: torch.Tensor) -> torch.Tensor:
    """ImageEncoder.forward with the frames left in NHWC memory (no `.contiguous()` to NCHW)."""
    b, ncam, k, s = images.shape[:4]
    x = images.reshape(b * ncam * k, s, s, 3).permute(0, 3, 1, 2).float()
    x = self.backbone((x / 127.5 - 1.0).contiguous(memory_format=torch.channels_last))
    x = torch.nn.functional.adaptive_avg_pool2d(x, self.grid) if x.shape[-1] > self.grid else x
    x = self.proj(x.flatten(2).transpose(1, 2)) + self.pos
    x = x.reshape(b, ncam, k, -1, x.shape[-1]) + self.camera + self.history
    return x.reshape(b, -1, x.shape[-1])


def lang_table(tasks: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(tasks, 16, 384, generator=g).to(dev), torch.ones(tasks, 16, dtype=torch.bool).to(dev)


def loader_rate(ds: WindowDataset, batch: int, workers: int, batches: int) -> float:
    dl = DataLoader(
        ds,
        batch_sampler=StreamSampler(len(ds), batch, 0),
        num_workers=workers,
        pin_memory=True,
        persistent_workers=workers > 0,
    )
    it = iter(dl)
    for _ in range(max(2, workers)):  # start-up: workers fork and fill their first batch
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


class Step:
    """The training step of libero_dp.train on one device; `net` may be compiled."""

    def __init__(self, cfg, dev: torch.device, compile_: bool, channels_last: bool) -> None:
        torch.manual_seed(0)
        self.model = DiffusionPolicy(cfg).to(dev)
        if channels_last:
            enc = self.model.images
            enc.backbone.to(memory_format=torch.channels_last)
            enc.forward = channels_last_forward.__get__(enc)
        self.ema = DiffusionPolicy(cfg).to(dev).requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())

        class P:  # the two fields _optimizer reads
            lr, weight_decay = 3e-4, 1e-2

        self.opt = _optimizer(self.model, P)
        self.net = torch.compile(self.model) if compile_ else self.model
        self.sched = train_scheduler("sample")
        self.n, self.dev = 0, dev

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        self.n += 1
        with torch.autocast(self.dev.type, dtype=torch.bfloat16):
            loss, _ = diffusion_loss(
                self.net, batch, self.sched, "sample", torch.Generator().manual_seed(self.n)
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        ema_update(self.ema, self.model, 0.995, self.n)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, steps: int) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def families(prof: torch.profiler.profile) -> dict[str, float]:
    """Self CUDA time (ms, summed over the profiled steps) by op family."""
    out: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        t = getattr(ev, "self_device_time_total", 0.0) / 1e3
        if t <= 0:
            continue
        name = ev.key
        fam = next((f for f, keys in FAMILIES if any(k.lower() in name.lower() for k in keys)), "other")
        out[fam] += t
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256, help="per-GPU batch (the seed-0 run: 512 over 2 GPUs)")
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 4, 8, 12])
    ap.add_argument("--loop-workers", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--variants", nargs="*", default=["eager", "compile", "compile_cl"])
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the script itself")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    res: dict = {
        "what": "the small policy's training step on one GPU, split into loader / compute / loop (synthetic "
        "windows of the libero_90 run's layout)",
        "device": torch.cuda.get_device_name() if cuda else platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "batch_per_gpu": a.batch,
    }

    def save() -> None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = WindowDataset(synthetic_windows(Path(tmp), frames=a.frames))
        res["windows"] = {"frames": a.frames, "train_windows": len(ds), "build_s": time.perf_counter() - t0}
        cfg = policy_config(TrainParams(preset="small"), ds)  # as `train` builds it from the data
        res["params"] = count_params(DiffusionPolicy(cfg))
        lang = lang_table(1, dev)

        res["loader_samples_per_s"] = {}
        for w in a.workers:
            res["loader_samples_per_s"][str(w)] = loader_rate(ds, a.batch, w, 8 if w == 0 else 40)
            print(f"loader workers={w}: {res['loader_samples_per_s'][str(w)]:.0f} samples/s", flush=True)
            save()

        dl = DataLoader(ds, batch_sampler=StreamSampler(len(ds), a.batch, 0))
        fixed = _to_device(next(iter(dl)), dev, lang)
        res["compute"] = {}
        variants = {"eager": (False, False), "compile": (True, False), "compile_cl": (True, True)}
        built: dict[str, Step] = {}
        for name in a.variants:
            comp, cl = variants[name]
            step = Step(cfg, dev, comp, cl)
            built[name] = step
            t0 = time.perf_counter()
            for _ in range(3):
                step(fixed)
            sync()
            warm = time.perf_counter() - t0
            s = timed(lambda step=step: step(fixed), a.steps)
            res["compute"][name] = {
                "step_s": s,
                "samples_per_s": a.batch / s,
                "warmup_s": warm,
                "max_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
            }
            print(f"compute {name}: {a.batch / s:.0f} samples/s (warm-up {warm:.0f} s)", flush=True)
            save()
            if name == "eager":
                acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
                with torch.profiler.profile(activities=acts) as prof:
                    for _ in range(5):
                        step(fixed)
                    sync()
                fam = families(prof)
                res["profile_eager_ms_per_step"] = {
                    k: v / 5 for k, v in sorted(fam.items(), key=lambda x: -x[1])
                }
                res["profile_top"] = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15)
                print(res["profile_top"], flush=True)
                save()

        # the loop: loader workers feed the compiled step, as libero_dp.train does
        loop_step = built.get("compile", step)
        dl = DataLoader(
            ds,
            batch_sampler=StreamSampler(len(ds), a.batch, 1),
            num_workers=a.loop_workers,
            pin_memory=cuda,
        )
        it = iter(dl)
        for _ in range(a.loop_workers):
            loop_step(_to_device(next(it), dev, lang))
        wait = 0.0

        def one() -> None:
            nonlocal wait
            t = time.perf_counter()
            b = next(it)
            wait += time.perf_counter() - t
            loop_step(_to_device(b, dev, lang))

        n = 3 * a.steps
        s = timed(one, n)
        res["loop"] = {
            "workers": a.loop_workers,
            "step_s": s,
            "samples_per_s": a.batch / s,
            "loader_wait_share": wait / (s * n),
        }
        print(f"loop: {a.batch / s:.0f} samples/s, waiting on the loader {wait / (s * n):.0%}", flush=True)
        save()
    with contextlib.suppress(Exception):
        res["nvidia_smi"] = os.popen("nvidia-smi --query-gpu=name,utilization.gpu --format=csv").read()
    save()


if __name__ == "__main__":
    main()
