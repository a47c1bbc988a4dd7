"""report: a self-contained HTML page + Markdown summary of the run; the pipeline's MLflow summary run."""

from pathlib import Path

from libero_dp.config import SECTIONS, load_params
from libero_dp.report import build_report, flatten_metrics, load_inputs
from libero_dp.tracking import stage_run

TASKS_CSV = Path("metrics/eval_tasks.csv")

if __name__ == "__main__":
    p = load_params("report")
    inputs = load_inputs(
        scaled_dir=Path(load_params("scale").out_dir),
        eval_dir=Path(load_params("eval").out_dir),
        extracted_dir=Path(load_params("extract").out_dir),
    )
    all_params = {s: load_params(s).model_dump() for s in SECTIONS}
    with stage_run("report", all_params) as run:
        report, files = build_report(Path(p.out_dir), inputs, p.paths_episodes, TASKS_CSV)
        run.log_metrics(flatten_metrics(inputs.metrics))
        run.set_tags({"overall_success": f"{report.overall.rate:.4f}", "warnings": str(len(report.warnings))})
        for f in files:
            run.log_artifact(f)
    for w in report.warnings:
        print(f"report: warning: {w}")
    print(
        f"report: {files[0]} ({report.images} figures), overall success {report.overall.rate:.1%} "
        f"({report.overall.successes}/{report.overall.n})"
    )
