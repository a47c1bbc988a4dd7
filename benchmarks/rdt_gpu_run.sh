#!/usr/bin/env bash
# Every figure of benchmarks/results/rdt_gpu.json in one command on a host with 2 GPUs: phase 1 runs one
# process per GPU side by side (GPU 0: RDT-1B training; GPU 1: chunk latency, then RDT-170M training),
# phase 2 trains RDT-1B with DDP over both. Each run has a time limit, so a slow one costs only itself.
#   OUT=/tmp/rdt bash benchmarks/rdt_gpu_run.sh
set -u
OUT=${OUT:-/tmp/rdt_gpu}
mkdir -p "$OUT"
B="python3 benchmarks/rdt_gpu.py"
(
  CUDA_VISIBLE_DEVICES=0 timeout 130 $B train --preset rdt1b --batch 256 --compile --out "$OUT/train_gpu0.json"
  CUDA_VISIBLE_DEVICES=0 timeout 70 $B train --preset rdt1b --batch 32 --inputs tokens --compile \
    --out "$OUT/train_gpu0.json"
) >"$OUT/gpu0.log" 2>&1 &
(
  CUDA_VISIBLE_DEVICES=1 timeout 140 $B latency --presets rdt170m rdt1b --compile --repeats 20 \
    --out "$OUT/latency.json"
  CUDA_VISIBLE_DEVICES=1 timeout 60 $B train --preset rdt170m --batch 256 --compile --out "$OUT/train_gpu1.json"
) >"$OUT/gpu1.log" 2>&1 &
wait
timeout 110 python3 -m torch.distributed.run --nproc_per_node=2 benchmarks/rdt_gpu.py train --preset rdt1b --batch 256 --compile \
  --out "$OUT/train_ddp.json" >"$OUT/ddp.log" 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv >>"$OUT/ddp.log" 2>&1
