"""train: the RDT-style diffusion policy on the training windows -> models/ (safetensors + config).

Runs the same on 1 CPU, 1 GPU or N GPUs: `torchrun --nproc_per_node=N stages/train.py`, or
LIBERO_DP_TRAIN_GPUS=N|all (what `make libero90` sets), which relaunches this script under torchrun.
"""

from pathlib import Path

from libero_dp.config import load_params
from libero_dp.distributed import relaunch_under_torchrun
from libero_dp.train import train

if __name__ == "__main__":
    relaunch_under_torchrun(__file__)
    p = load_params("train")
    train(p, Path(load_params("windows").out_dir), Path(p.out_dir))
