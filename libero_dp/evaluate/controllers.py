"""Controllers turn observations into raw 7-D actions: the scripted expert, a recorded demo, or a chunking
policy (execute part of each predicted chunk, then re-plan; or ACT-style temporal ensembling).

A controller also tells the rollout when it will next read images (`steps_until_replan`), so that images are
rendered only at the steps a policy reads (rendering dominates an episode's cost).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from libero_dp import sim
from libero_dp.config import ExecParams


class Runner(Protocol):
    """What evaluation needs from a policy (sampling.PolicyRunner, or a stand-in in tests)."""

    horizon: int
    image_history: int

    def predict_chunk(
        self, frames: dict[str, np.ndarray], proprio: np.ndarray, language: str, seed: int | None = None
    ) -> np.ndarray: ...


class Controller:
    """Turns observations into raw (unclipped) 7-D actions; base class = no images, acts every step."""

    uses_images = False
    image_history = 1
    max_steps: int | None = None

    def __init__(self) -> None:
        self.chunks = 0
        self.inference_s: list[float] = []
        self.model_values = 0
        self.model_out_of_range = 0

    def begin(self, env: Any, obs: dict) -> None:
        """Called after reset and wait steps, before the first action."""

    def steps_until_replan(self) -> int:
        """Steps from now until the policy next reads images (0 = at this step)."""
        return 0

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        raise NotImplementedError


class ExpertController(Controller):
    """The scripted privileged-state expert, acting every step (reference policy).

    With `read_every` > 0 it also reads the images a policy re-planning every `read_every` steps with
    `history` frames would read (and ignores them), so that its evaluation costs what a policy's would.
    """

    def __init__(self, task: sim.TaskSpec, read_every: int = 0, history: int = 2) -> None:
        from libero_dp.expert import make_expert

        super().__init__()
        self.expert = make_expert(task)
        self.read_every = read_every
        self.uses_images = read_every > 0
        self.image_history = history
        self._t = 0

    def begin(self, env: Any, obs: dict) -> None:
        self.expert.reset(env)
        self._t = 0

    def steps_until_replan(self) -> int:
        return (-self._t) % self.read_every if self.read_every else 0

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        if self.read_every and t % self.read_every == 0:
            frames()  # what a policy would read here (raises if the on-demand schedule missed a frame)
            self.chunks += 1
        self._t = t + 1
        return np.asarray(self.expert.act(env, obs), dtype=np.float64)


class ReplayController(Controller):
    """Recorded demo actions, open loop (reference policy: must succeed)."""

    def __init__(self, actions: np.ndarray) -> None:
        super().__init__()
        self.actions = np.asarray(actions, dtype=np.float64)
        self.max_steps = len(self.actions)

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        return self.actions[t]


def executed_indices(horizon: int, steps: int, stride: int) -> list[int]:
    """Chunk indices run before re-planning: chunk[0:steps:stride] (steps 64, stride 8 -> 0, 8, .., 56)."""
    if not 1 <= steps <= horizon:
        raise ValueError(f"exec.steps={steps}: expected 1..H where H={horizon} is the policy's chunk length")
    if stride < 1:
        raise ValueError(f"exec.stride={stride}: expected >= 1")
    return list(range(0, steps, stride))


class ChunkController(Controller):
    """A chunking policy: execute chunk[0:steps:stride], then re-plan; or ACT-style temporal ensembling.

    Temporal ensemble: re-plan every step; the action for step t averages, in model units, every stored
    prediction made at r <= t that covers t (t - r < len(executed)), entry executed[t - r] of that chunk, with
    ACT's weights w_i = exp(-k * i), i = 0 for the OLDEST prediction (ACT weights older predictions more, to
    smooth; k sets how fast newer ones are taken in), then converts the average to raw units.
    """

    uses_images = True

    def __init__(self, runner: Runner, transform: Any, xp: ExecParams, language: str, seed_base: int) -> None:
        super().__init__()
        self.runner, self.transform, self.xp = runner, transform, xp
        self.language, self.seed_base = language, seed_base
        self.image_history = int(runner.image_history)
        self.idx = executed_indices(int(runner.horizon), xp.steps, xp.stride)
        self.queue: deque[np.ndarray] = deque()
        self.history: deque[tuple[int, np.ndarray]] = deque(maxlen=len(self.idx))

    def steps_until_replan(self) -> int:
        return 0 if self.xp.temporal_ensemble else len(self.queue)

    def _predict(self, obs: dict, frames: dict[str, np.ndarray]) -> np.ndarray:
        prop = sim.proprio_from_obs(obs)
        proprio = self.transform.proprio_to_model(prop["ee_pos"], prop["ee_ori"], prop["gripper_states"])
        seed = (self.seed_base * 1000 + self.chunks) % 2**31  # reproducible noise per (episode, chunk)
        t0 = time.perf_counter()
        chunk = self.runner.predict_chunk(frames, proprio, self.language, seed=seed)
        chunk = np.asarray(chunk, dtype=np.float64)
        self.inference_s.append(time.perf_counter() - t0)
        self.chunks += 1
        if chunk.ndim != 2 or chunk.shape[0] < self.idx[-1] + 1:
            need = self.idx[-1] + 1
            raise ValueError(f"policy returned a chunk of shape {chunk.shape}; expected (H>={need}, Da)")
        self.model_values += chunk.size
        self.model_out_of_range += int(np.sum(np.abs(chunk) > 1.0))
        return chunk

    def act(self, t: int, env: Any, obs: dict, frames: Callable[[], dict[str, np.ndarray]]) -> np.ndarray:
        if self.xp.temporal_ensemble:
            self.history.append((t, self._predict(obs, frames())))
            rows, weights = [], []
            for r, chunk in self.history:  # oldest first
                age = t - r
                if age < len(self.idx):
                    rows.append(chunk[self.idx[age]])
                    weights.append(math.exp(-self.xp.ensemble_k * len(weights)))
            w = np.asarray(weights)[:, None]
            model = np.sum(np.stack(rows) * w, axis=0) / w.sum()
            return self.transform.actions_from_model(model)
        if not self.queue:
            chunk = self._predict(obs, frames())
            self.queue.extend(self.transform.actions_from_model(chunk[self.idx]))
        return self.queue.popleft()
