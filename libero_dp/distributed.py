"""Processes and ranks of a training run, and what each rank draws: one process, or one per GPU (torchrun).

Why a module of its own: the order of the data and the seeds of every step are functions of (seed, step, rank)
alone, so a run resumed at step k, or run on another number of GPUs with the same global batch, draws what an
uninterrupted run draws. The training loop (libero_dp.train) only asks for them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def relaunch_under_torchrun(script: str) -> None:
    """With LIBERO_DP_TRAIN_GPUS=N (or `all`) and not already under torchrun, replace this process by N DDP
    processes of `script` (torchrun, one per GPU). An environment variable, not a param: the number of GPUs
    changes where training runs, not what it learns (the global batch and its order are the same), so
    `dvc exp run` / `dvc repro` run the same stage command on any host."""
    want = os.environ.get("LIBERO_DP_TRAIN_GPUS", "")
    if not want or "WORLD_SIZE" in os.environ:
        return
    n = torch.cuda.device_count() if want == "all" else int(want)
    if n > 1:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        os.execv(sys.executable, [*run, script])


def setup(device_pref: str) -> tuple[Dist, torch.device]:
    """Single process, or one process per GPU under torchrun (which sets RANK / WORLD_SIZE / LOCAL_RANK)."""
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    cuda = device_pref != "cpu" and torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dd = Dist()
    if world > 1:
        local = int(os.environ["LOCAL_RANK"])
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        dd = Dist(dist.get_rank(), world, local)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dd, torch.device(f"cuda:{dd.local_rank}" if cuda else "cpu")


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


class StreamSampler:
    """Endless batches of indices from a stream of per-epoch permutations, addressable by batch number.

    Epoch e's order is a permutation drawn from (seed, e); rank r of N takes every N-th index of it. Starting
    at batch b yields exactly what batches b, b+1, ... of a run from 0 are, without loading the skipped data.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start_batch: int = 0
    ) -> None:
        if n < world:
            raise ValueError(f"{n} training windows cannot be shared among {world} ranks")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start_batch = rank, world, start_batch
        self.per_rank = n // world

    def _epoch(self, e: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, e]).permutation(self.n)
        return perm[self.rank : self.per_rank * self.world : self.world]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = divmod(self.start_batch * self.batch_size, self.per_rank)
        pending = self._epoch(epoch)[offset:]
        while True:
            while len(pending) < self.batch_size:
                epoch += 1
                pending = np.concatenate([pending, self._epoch(epoch)])
            yield pending[: self.batch_size].tolist()
            pending = pending[self.batch_size :]


def seed_worker(worker_id: int) -> None:
    """Seeds a DataLoader worker's numpy RNG from torch's per-worker seed (from the loader's generator)."""
    np.random.seed(torch.initial_seed() % 2**32)
