"""The shared shape of a stage script: load its params section, run, write metrics, log to MLflow."""

from __future__ import annotations

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
        metrics = body(params, *extra) if extra else body(params)
        if metrics_path is not None:
            write_json(metrics_path, metrics)
        run.log_metrics(metrics)
    return metrics
