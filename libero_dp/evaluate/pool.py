"""Fanning episodes out: a Ray session (local, or an existing cluster) and a pool of `EpisodeWorker` actors.

An exception inside an episode is that episode's error (the worker returns it as a record); an actor that
dies (segfault, OOM kill) is replaced and its episode retried once, then recorded as an error; an episode
that runs past `eval.episode_timeout_s` is recorded as a `timeout` error and its actor replaced.
"""

from __future__ import annotations

import os
import time
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
    env it already holds); a dead actor is replaced and its episode retried once.

    Episode wall-clock limit (`episode_timeout_s`): an episode still running after that long (a stuck MuJoCo
    step, a policy that never returns) cannot be interrupted inside its process, so its actor is killed
    (`ray.kill`), the episode recorded as a `timeout` error, and a fresh actor takes the next episode. The
    clock of an episode starts when its actor is ready for it: a fresh actor's start-up (imports, policy) and
    the construction of the task's env (`EpisodeWorker.prepare`) are not counted, unless they themselves run
    past the limit.
    """

    def __init__(
        self, ray: Any, cfg: WorkerConfig, workers: int, episode_timeout_s: float | None = None
    ) -> None:
        self.ray, self.cfg, self.timeout = ray, cfg, episode_timeout_s
        self.remote_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EpisodeWorker)
        self.actors = [self._new() for _ in range(workers)]
        self.tasks_held: list[list[str]] = [[] for _ in range(workers)]  # mirrors each actor's env LRU

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
        started: dict[Any, float] = {}  # episode ref -> when its clock started
        waiting: dict[Any, Any] = {}  # prepare ref (env construction) -> the episode ref queued behind it

        def submit(i: int) -> None:
            if not queue:
                return
            pick = next((j for j, (s, _) in enumerate(queue) if s.task.key in self.tasks_held[i]), 0)
            spec, attempt = queue[pick]
            del queue[pick]
            prepare = None
            if spec.task.key not in self.tasks_held[i]:  # the actor builds the env first, off the clock
                prepare = self.actors[i].prepare.remote(spec.task)
            held = [k for k in self.tasks_held[i] if k != spec.task.key] + [spec.task.key]
            self.tasks_held[i] = held[-MAX_ENVS_PER_WORKER:]
            ref = self.actors[i].run.remote(spec)
            inflight[ref], started[ref] = (i, spec, attempt), time.monotonic()
            if prepare is not None:  # an actor runs its calls in order: prepare, then this episode
                waiting[prepare] = ref

        def wait_s() -> float | None:
            if self.timeout is None:
                return None
            return max(0.0, min(started[r] for r in inflight) + self.timeout - time.monotonic())

        for i in range(len(self.actors)):
            submit(i)
        while inflight:
            if self.timeout is not None:  # before waiting: results of other actors must not delay this
                self._time_out(inflight, started, on_done, submit)
                if not inflight:
                    break
            ready, _ = self.ray.wait([*inflight, *waiting], num_returns=1, timeout=wait_s())
            if not ready:  # the oldest episode ran out of time: recorded at the top of the loop
                continue
            ref = ready[0]
            if (
                ref in waiting
            ):  # the actor is ready (policy loaded, env built): the episode's clock starts now
                ep_ref = waiting.pop(ref)
                if ep_ref in started:
                    started[ep_ref] = time.monotonic()
                continue
            i, spec, attempt = inflight.pop(ref)
            started.pop(ref)
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

    def _time_out(
        self,
        inflight: dict[Any, tuple[int, EpisodeSpec, int]],
        started: dict[Any, float],
        on_done: Callable[[EpisodeSpec, dict, dict], None],
        submit: Callable[[int], None],
    ) -> None:
        """Record every episode past the limit as a `timeout` error; kill its actor and start a fresh one."""
        assert self.timeout is not None
        now = time.monotonic()
        for ref in [r for r in inflight if now - started[r] >= self.timeout]:
            i, spec, attempt = inflight.pop(ref)
            wall = now - started.pop(ref)
            self.replace(i)
            rec = error_record(
                spec,
                self.cfg.policy,
                f"timeout: no result after {wall:.0f} s (eval.episode_timeout_s={self.timeout:g}); "
                "the episode's actor was killed",
                failure="timeout",
            )
            rec.update(wall_s=wall, timed_out=True, attempts=attempt)
            on_done(spec, rec, {})
            submit(i)

    def map_videos(self, jobs: list[tuple[Any, ...]]) -> list[bytes | Exception]:
        """Render videos on the actors, round robin; a failure is returned, not raised."""
        refs = [self.actors[n % len(self.actors)].render_video.remote(*job) for n, job in enumerate(jobs)]
        out: list[bytes | Exception] = []
        for r in refs:
            try:
                out.append(self.ray.get(r, timeout=self.timeout))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out
