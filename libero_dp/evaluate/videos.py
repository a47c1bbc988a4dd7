"""Episode videos: the first K successes and failures per task, re-rendered on the actors from the stored sim
states after the episodes (never during them), cached beside the records as MP4s."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from libero_dp.config import EvalParams
from libero_dp.evaluate.cache import record_path
from libero_dp.evaluate.pool import Pool
from libero_dp.evaluate.protocol import EpisodeSpec
from libero_dp.fileio import atomic_path


def video_choices(ep: EvalParams, specs: list[EpisodeSpec], records: dict[str, dict]) -> list[EpisodeSpec]:
    """First `videos_success` successes and `videos_failure` failures (errors excluded) per task, and the
    first `videos_failure` of every failure cause the per-task picks leave without one (the report shows
    each cause's videos)."""
    out: list[EpisodeSpec] = []
    counts: dict[tuple[str, bool], int] = {}
    causes: dict[str, list[EpisodeSpec]] = {}
    for s in specs:
        r = records.get(s.key)
        if r is None or r.get("error") or s.grounding_from is not None:
            continue
        kind = (s.label, bool(r["success"]))
        limit = ep.videos_success if r["success"] else ep.videos_failure
        if counts.get(kind, 0) < limit:
            counts[kind] = counts.get(kind, 0) + 1
            out.append(s)
        elif not r["success"]:
            causes.setdefault(str(r.get("failure")), []).append(s)
    shown = {str(records[s.key].get("failure")) for s in out if not records[s.key]["success"]}
    for cause, ss in causes.items():
        if cause not in shown:
            out += ss[: ep.videos_failure]
    return out


def video_name(spec: EpisodeSpec, rec: dict) -> str:
    name = spec.label.replace("/", "__")
    return f"{name}_s{spec.seed}_e{spec.index:03d}_{'success' if rec['success'] else 'failure'}.mp4"


def videos_missing(ep: EvalParams, specs: list[EpisodeSpec], records: dict, cache: Path) -> bool:
    chosen = video_choices(ep, specs, records)
    return any(
        not record_path(cache, s).with_suffix(".mp4").exists()
        and record_path(cache, s).with_suffix(".npz").exists()
        for s in chosen
    )


def make_videos(
    ep: EvalParams, specs: list[EpisodeSpec], records: dict, cache: Path, pool: Pool | None
) -> dict[str, bytes]:
    """Cached MP4s for the chosen episodes; render the missing ones on the actors from stored states."""
    chosen = video_choices(ep, specs, records)
    todo = [
        s
        for s in chosen
        if not record_path(cache, s).with_suffix(".mp4").exists()
        and record_path(cache, s).with_suffix(".npz").exists()
    ]
    if todo and pool is not None:
        jobs = []
        for s in todo:
            with np.load(record_path(cache, s).with_suffix(".npz")) as z:
                states = z["states"]
            jobs.append(
                (
                    s.task,
                    records[s.key]["reset_seed"],
                    states,
                    records[s.key].get("placement_hash"),
                    ep.video_every,
                )
            )
        for s, res in zip(todo, pool.map_videos(jobs), strict=True):
            if isinstance(res, Exception):
                print(f"[eval] video for {s.key} failed: {type(res).__name__}: {str(res)[:300]}")
                continue
            with atomic_path(record_path(cache, s).with_suffix(".mp4"), ".mp4") as tmp:
                tmp.write_bytes(res)
    out = {}
    for s in chosen:
        p = record_path(cache, s).with_suffix(".mp4")
        if p.exists():
            out[video_name(s, records[s.key])] = p.read_bytes()
    return out
