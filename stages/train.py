"""train: the RDT-style diffusion policy on the training windows -> models/ (safetensors + config).

Runs the same on 1 CPU, 1 GPU or N GPUs: `torchrun --nproc_per_node=N stages/train.py`.
"""

from pathlib import Path

from libero_dp.config import load_params
from libero_dp.train import train

if __name__ == "__main__":
    p = load_params("train")
    train(p, Path(load_params("windows").out_dir), Path(p.out_dir))
