"""The shared shape of a stage script: load its params section, run, write metrics, log to MLflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libero_dp.config import load_params
from libero_dp.fileio import write_json
from libero_dp.tracking import stage_run


def run_stage(
    name: str,
    body: Callable[[Any], dict],
    metrics_path: str | Path | None = None,
    sections: tuple[str, ...] = (),
) -> dict:
    """Run `body(params)` for section `name` (plus extra `sections`, passed as a tuple) and record it."""
    params = load_params(name)
    extra = tuple(load_params(s) for s in sections)
    logged = {name: params.model_dump(), **{s: e.model_dump() for s, e in zip(sections, extra, strict=True)}}
    with stage_run(name, logged) as run:
        t0 = time.perf_counter()
        metrics = body(params, *extra) if extra else body(params)
        # wall time of the whole stage as run (the README's per-stage table is read from these)
        metrics["stage_wall_s"] = round(time.perf_counter() - t0, 1)
        if metrics_path is not None:
            write_json(metrics_path, metrics)
        run.log_metrics(metrics)
    return metrics
