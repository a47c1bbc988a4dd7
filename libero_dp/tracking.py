"""MLflow tracking on a local embedded store (sqlite file in the repo), no server needed.

Every stage logs one run tagged with its stage name and the pipeline's params hash; the report stage logs
the pipeline run that gathers all metrics and the report as artifacts, so runs compare side by side.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "libero_dp"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def pipeline_id(params_file: str | Path = "params.yaml") -> str:
    """Identifies one configuration of the whole pipeline (all params), shared by its stages' runs."""
    p = Path(params_file)
    return hashlib.sha256(p.read_bytes()).hexdigest()[:12] if p.exists() else "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class _Run:
    def __init__(self, mlflow: Any) -> None:
        self._mlflow = mlflow

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        # MLflow rejects names outside [A-Za-z0-9_-. /:] (a task or pair label could hold one): replaced
        clean = {
            re.sub(r"[^\w\-. /:]", "_", k): float(v)
            for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
        }
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path) -> None:
        self._mlflow.log_artifact(str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)


@contextmanager
def stage_run(stage: str, params: dict[str, Any]) -> Iterator[_Run]:
    """One MLflow run for one stage execution, with its params and tags (stage, pipeline id, git rev)."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"{stage}-{pipeline_id()}"):
        mlflow.set_tags({"stage": stage, "pipeline_id": pipeline_id(), "git_rev": git_rev()})
        flat = {k: str(v)[:500] for k, v in flatten(params).items()}
        if flat:
            mlflow.log_params(flat)
        yield _Run(mlflow)


def git_rev() -> str:
    import subprocess

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
