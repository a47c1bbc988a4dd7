"""Chunk sampling as one CUDA graph: DPM-Solver++ with its step coefficients precomputed, so the whole chunk
(observation encoding + every denoising step) replays with one launch instead of hundreds.

Why: at batch 1 a chunk is launch-bound (the GPU idles between hundreds of small kernels, and diffusers'
scheduler does Python and host work per step). Each solver step is linear in the current sample and the last
two model outputs, x' = a x + b m_i + c m_(i-1), with scalars fixed by the schedule; the scalars are read off
diffusers' own scheduler (a probe with unit inputs), so the result is the scheduler's to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from libero_dp.policy import ObsEncoding


@dataclass(frozen=True)
class SolverPlan:
    """Timesteps and per-step coefficients (a, b, c) of x' = a x + b m_i + c m_(i-1)."""

    timesteps: list[int]
    coeffs: list[tuple[float, float, float]]


def solver_plan(scheduler: object, steps: int) -> SolverPlan:
    """Probe a diffusers multistep scheduler (x0-prediction, e.g. DPM-Solver++) for its linear step rule.

    Lanes of one batched call carry unit inputs (x, m_i, m_(i-1)) = e_1, e_2, e_3, so the three output lanes
    are the coefficients. Valid for solvers that are linear in those inputs (no thresholding, no noise).
    """
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = [int(t) for t in scheduler.timesteps]
    coeffs = []
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    m = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    prev = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    for i, t in enumerate(scheduler.timesteps):
        if i > 0:
            scheduler.model_outputs[-1] = prev  # what step() keeps as the previous model output
        out = scheduler.step(m, t, x).prev_sample
        coeffs.append(tuple(float(v) for v in out))
    return SolverPlan(timesteps, coeffs)


def sample_planned(
    denoise: Callable[[torch.Tensor, torch.Tensor, ObsEncoding], torch.Tensor],
    obs: ObsEncoding,
    noise: torch.Tensor,
    plan: SolverPlan,
) -> torch.Tensor:
    """The solver loop with fixed coefficients: no host work or sync, so it can be captured in a graph."""
    b = noise.shape[0]
    x, prev = noise, None
    for t, (a, cm, cp) in zip(plan.timesteps, plan.coeffs, strict=True):
        m = denoise(x, torch.full((b,), t, device=x.device, dtype=torch.long), obs).float()
        x = a * x + cm * m if prev is None or cp == 0.0 else a * x + cm * m + cp * prev
        prev = m
    return x


class GraphedChunk:
    """Encode + sample one chunk, captured once as a CUDA graph and replayed per call.

    `fn(*inputs, noise)` must be a pure function of its tensors; inputs are copied into static buffers.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], example: list[torch.Tensor], warmup: int = 3):
        self.static = [t.clone() for t in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):  # lazy init, autotuning and allocations happen outside the capture
                fn(*self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.out = fn(*self.static)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for s, x in zip(self.static, inputs, strict=True):
            s.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.out
