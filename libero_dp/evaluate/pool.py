"""Fanning episodes out: a Ray session (local, or an existing cluster) and a pool of `EpisodeWorker` actors.

An exception inside an episode is that episode's error (the worker returns it as a record); an actor that
dies (segfault, OOM kill) is replaced and its episode retried once, then recorded as an error.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from libero_dp.evaluate.episode import error_record
from libero_dp.evaluate.protocol import EpisodeSpec
from libero_dp.evaluate.worker import MAX_ENVS_PER_WORKER, EpisodeWorker, WorkerConfig

MAX_ATTEMPTS = 2  # an episode whose actor died is retried once


@contextmanager
def ray_session(workers: int, address: str | None = None) -> Iterator[Any]:
    """Local Ray with `workers` CPUs (quiet), or connect to `address`; shut down only what we started."""
    import logging

    import ray

    if ray.is_initialized():  # someone else owns the session (a notebook, a caller): use it, leave it up
        yield ray
        return
    kw: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address:
        # `ray start` turns token auth on when a token exists (and RAY_AUTH_MODE is unset), but
        # ray.init(address=...) does not infer it (Ray 2.60): apply the same rule with Ray's own helper
        try:
            from ray._private.authentication import authentication_token_setup as auth

            auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        except (ImportError, AttributeError):  # other Ray versions: RAY_AUTH_MODE decides
            pass
        ray.init(address=address, **kw)
    else:
        # RAY_ADDRESS in the environment would make a local init connect elsewhere; we asked for local
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=128 * 1024**2, **kw)
    try:
        yield ray
    finally:
        ray.shutdown()


class Pool:
    """`workers` actors with dynamic scheduling (an idle actor takes the next episode, preferring a task whose
    env it already holds); a dead actor is replaced and its episode retried once."""

    def __init__(self, ray: Any, cfg: WorkerConfig, workers: int) -> None:
        self.ray, self.cfg = ray, cfg
        self.remote_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EpisodeWorker)
        self.actors = [self._new() for _ in range(workers)]
        self.tasks_held: list[list[str]] = [[] for _ in range(workers)]

    def _new(self) -> Any:
        return self.remote_cls.remote(self.cfg)

    def replace(self, i: int) -> None:
        try:
            self.ray.kill(self.actors[i], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors[i] = self._new()
        self.tasks_held[i] = []

    def setup(self) -> list[dict[str, Any]]:
        return self.ray.get([a.setup.remote() for a in self.actors])

    def run_all(self, specs: list[EpisodeSpec], on_done: Callable[[EpisodeSpec, dict, dict], None]) -> None:
        from ray.exceptions import RayActorError, RayError

        queue: deque[tuple[EpisodeSpec, int]] = deque((s, 1) for s in specs)
        inflight: dict[Any, tuple[int, EpisodeSpec, int]] = {}

        def submit(i: int) -> None:
            if not queue:
                return
            pick = next((j for j, (s, _) in enumerate(queue) if s.task.key in self.tasks_held[i]), 0)
            spec, attempt = queue[pick]
            del queue[pick]
            if spec.task.key not in self.tasks_held[i]:
                self.tasks_held[i] = (self.tasks_held[i] + [spec.task.key])[-MAX_ENVS_PER_WORKER:]
            inflight[self.actors[i].run.remote(spec)] = (i, spec, attempt)

        for i in range(len(self.actors)):
            submit(i)
        while inflight:
            ready, _ = self.ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            i, spec, attempt = inflight.pop(ref)
            try:
                rec, arrays = self.ray.get(ref)
            except RayActorError as e:  # the process died (segfault, OOM kill, os._exit)
                self.replace(i)
                if attempt < MAX_ATTEMPTS:
                    queue.appendleft((spec, attempt + 1))
                    submit(i)
                    continue
                rec, arrays = (
                    error_record(
                        spec,
                        self.cfg.policy,
                        f"worker died ({attempt} attempts): {type(e).__name__}: {str(e)[:300]}",
                    ),
                    {},
                )
                rec["actor_died"] = True
            except RayError as e:
                rec, arrays = error_record(spec, self.cfg.policy, f"{type(e).__name__}: {str(e)[:600]}"), {}
            rec["attempts"] = attempt
            on_done(spec, rec, arrays)
            submit(i)

    def map_videos(self, jobs: list[tuple[Any, ...]]) -> list[bytes | Exception]:
        """Render videos on the actors, round robin; a failure is returned, not raised."""
        refs = [self.actors[n % len(self.actors)].render_video.remote(*job) for n, job in enumerate(jobs)]
        out: list[bytes | Exception] = []
        for r in refs:
            try:
                out.append(self.ray.get(r))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out
