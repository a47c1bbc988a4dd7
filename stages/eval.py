"""eval: closed-loop episodes in LIBERO from the official init states -> metrics/eval.json, videos."""

from pathlib import Path

from libero_dp.config import load_params
from libero_dp.evaluate import evaluate
from libero_dp.stage import run_stage

if __name__ == "__main__":
    models, scaled = load_params("train").out_dir, load_params("scale").out_dir
    demos = load_params("extract").source_dir
    run_stage(
        "eval",
        lambda ep, xp: evaluate(
            ep, xp, Path(models), Path(scaled) / "stats.json", Path(demos), Path(ep.out_dir)
        ),
        "metrics/eval.json",
        sections=("exec",),
    )
