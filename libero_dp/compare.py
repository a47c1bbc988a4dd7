"""compare: DVC experiments and MLflow runs side by side -> reports/compare.{md,html,png} and stdout.

Why both sources: `dvc exp show` knows every experiment's params and committed metrics (what would be
reproduced), MLflow knows every stage execution that actually ran (including ones never committed). They
should agree; a row in one and not the other is itself worth seeing.

Not a DVC stage (it reads across experiments): `make compare` runs it (stages/compare.py calls `main`).
Usage: python stages/compare.py [--out-dir reports] [--head-only] [--mlflow-stage eval|report]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libero_dp import report as rp
from libero_dp.fileio import atomic_path
from libero_dp.metrics import spread, wilson
from libero_dp.tracking import EXPERIMENT, flatten, tracking_uri

EVAL_METRICS = "metrics/eval.json"
AXES = ("exec.steps", "exec.stride")  # shown in their own columns, never under "other changed params"


@dataclass
class Row:
    """One configuration's result: exec params, what else changed, overall success and its interval."""

    source: str
    name: str
    rev: str
    steps: int | None
    stride: int | None
    successes: int | None
    n: int | None
    clip_rate: float | None
    params: dict[str, Any] = field(default_factory=dict)
    changed: str = ""
    note: str = ""

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def lo(self) -> float | None:
        return wilson(self.successes, self.n)[0] if self.n else None

    @property
    def hi(self) -> float | None:
        return wilson(self.successes, self.n)[1] if self.n else None


def _int(x: Any) -> int | None:
    try:
        return int(float(x))
    except (TypeError, ValueError):
        return None


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def overall_counts(ev: dict) -> tuple[int | None, int | None, float | None]:
    """(successes, n, clip rate) of eval.json's overall block; successes from the rate when not stored."""
    o = ev.get("overall", ev) if isinstance(ev, dict) else {}
    n = _int(o.get("n"))
    succ = _int(o.get("successes"))
    if succ is None and n and _num(o.get("success_rate")) is not None:
        succ = round(float(o["success_rate"]) * n)
    return succ, n, _num(o.get("mean_clip_rate", o.get("clip_rate")))


def _diff(params: dict[str, Any], ref: dict[str, Any]) -> str:
    keys = sorted(k for k in set(params) | set(ref) if k not in AXES and params.get(k) != ref.get(k))
    return ", ".join(f"{k}={params.get(k, '∅')}" for k in keys)


# ----------------------------------------------------------------------------------------------------- DVC
def exp_show(all_commits: bool = True) -> list[dict]:
    """`dvc exp show --json` (dvc 3.x): a list of commits, each with its experiments nested under it."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", "--force"] + (["-A"] if all_commits else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout or "[]")


def _exp_row(state: dict, kind: str, note: str = "") -> Row | None:
    data = state.get("data")
    if not data:
        return None
    params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    ev = ((data.get("metrics") or {}).get(EVAL_METRICS) or {}).get("data") or {}
    succ, n, clip = overall_counts(ev)
    rev = str(state.get("rev"))
    name = state.get("name") or ("workspace" if rev == "workspace" else rev[:7])
    return Row(
        "dvc",
        name,
        rev,
        _int(params.get("exec.steps")),
        _int(params.get("exec.stride")),
        succ,
        n,
        clip,
        params,
        note=note or kind,
    )


def rows_from_exp_show(data: list[dict]) -> list[Row]:
    """Workspace, baseline commits and every experiment under them; ones without eval results are skipped.

    dvc 3.67 layout: [{rev, name, data: {params: {"params.yaml": {data}}, metrics: {file: {data}}}, error,
    experiments: [{revs: [state, ...], executor: {state}|null, name}] | null}, ...]; metrics keep only
    scalars (wilson95 lists are dropped), so intervals are recomputed from successes and n.
    """
    rows: list[Row] = []
    baselines = [s for s in data if s.get("rev") != "workspace"]
    head = _exp_row(baselines[0], "baseline") if baselines else None
    for state in data:
        kind = "workspace" if state.get("rev") == "workspace" else "baseline"
        row = _exp_row(state, kind)
        if row is not None and row.n:
            row.changed = _diff(row.params, head.params) if head is not None and row is not head else ""
            rows.append(row)
        base_params = row.params if row is not None else {}
        for rng in state.get("experiments") or []:
            status = ((rng.get("executor") or {}).get("state")) or "done"
            for st in rng.get("revs") or []:
                r = _exp_row(st, "experiment", "experiment" if status == "done" else status)
                if r is not None and r.n:
                    r.name = rng.get("name") or r.name
                    r.changed = _diff(r.params, base_params)
                    rows.append(r)
    return rows


def pipeline_ids(data: list[dict]) -> dict[str, str]:
    """MLflow's pipeline_id tag (sha256 of params.yaml, 12 hex) -> DVC experiment name: joins the sources."""
    out: dict[str, list[str]] = {}
    states = [
        s
        for top in data
        for s in [top, *[r for g in top.get("experiments") or [] for r in g.get("revs", [])]]
    ]
    for st in states:
        rev = str(st.get("rev"))
        try:
            if rev == "workspace":
                raw = Path("params.yaml").read_bytes()
            else:
                raw = subprocess.run(
                    ["git", "show", f"{rev}:params.yaml"], capture_output=True, check=True
                ).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        name = st.get("name") or ("workspace" if rev == "workspace" else rev[:7])
        out.setdefault(hashlib.sha256(raw).hexdigest()[:12], []).append(name)
    return {k: " = ".join(dict.fromkeys(v)) for k, v in out.items()}


# -------------------------------------------------------------------------------------------------- MLflow
def rows_from_mlflow(uri: str, stage: str = "eval", names: dict[str, str] | None = None) -> list[Row]:
    """Finished runs of one stage; the latest per pipeline_id (identical params), with how many there were."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []  # do not create an empty store just to read it
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string=f"tags.stage = '{stage}'", order_by=["start_time DESC"]
    )
    if df is None or len(df) == 0:
        return []
    prefix = "metrics.eval." if stage == "report" else "metrics."
    current = {k: str(v)[:500] for k, v in flatten(_yaml("params.yaml")).items()}
    seen: dict[str, Row] = {}
    counts: dict[str, int] = {}
    for _, r in df.iterrows():
        if r.get("status") != "FINISHED":
            continue
        pid = str(r.get("tags.pipeline_id") or r["run_id"])
        counts[pid] = counts.get(pid, 0) + 1
        if pid in seen:
            continue
        n = _int(r.get(f"{prefix}overall.n"))
        if not n:
            continue
        succ = _int(r.get(f"{prefix}overall.successes"))
        if succ is None and _num(r.get(f"{prefix}overall.success_rate")) is not None:
            succ = round(float(r[f"{prefix}overall.success_rate"]) * n)
        clip = _num(r.get(f"{prefix}overall.mean_clip_rate", r.get(f"{prefix}overall.clip_rate")))
        params = {
            k.removeprefix("params."): v
            for k, v in r.items()
            if k.startswith("params.") and isinstance(v, str)
        }
        name = (names or {}).get(pid) or str(r.get("tags.mlflow.runName") or r["run_id"][:8])
        row = Row(
            "mlflow",
            name,
            str(r["run_id"]),
            _int(params.get("exec.steps")),
            _int(params.get("exec.stride")),
            succ,
            n,
            clip,
            params,
            note=f"pipeline {pid}, git {r.get('tags.git_rev', '?')}",
        )
        shared = params.keys() & current.keys()  # runs log defaults that params.yaml may not spell out
        row.changed = _diff({k: params[k] for k in shared}, {k: current[k] for k in shared})
        seen[pid] = row
    for pid, row in seen.items():
        row.note += f", {counts[pid]} run(s)"
    return list(seen.values())


def _yaml(path: str) -> dict:
    import yaml

    p = Path(path)
    return (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}


# -------------------------------------------------------------------------------------------------- output
HEADERS = [
    "experiment",
    "rev / run",
    "exec.steps",
    "exec.stride",
    "other changed params",
    "success",
    "Wilson 95%",
    "clip rate",
    "note",
]


def cells(r: Row) -> list[str]:
    rate = "–" if r.rate is None else f"{r.rate:.1%} ({r.successes}/{r.n})"
    ci = "–" if r.lo is None else f"[{r.lo:.1%}, {r.hi:.1%}]"
    rev = r.rev if r.rev == "workspace" else r.rev[:8]
    return [
        r.name,
        rev,
        str(r.steps if r.steps is not None else "–"),
        str(r.stride if r.stride is not None else "–"),
        r.changed or "–",
        rate,
        ci,
        "–" if r.clip_rate is None else f"{r.clip_rate:.2%}",
        r.note,
    ]


def plot(rows_by_source: dict[str, list[Row]]) -> str:
    """Success vs exec.steps (log2 x) with Wilson error bars; stride != 1 as its own (hollow) marker."""
    plt = rp._plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    shift = {"dvc": 0.96, "mlflow": 1.04}  # side by side, not on top of each other
    colors = {"dvc": "#4c78a8", "mlflow": "#f58518"}
    steps_seen: set[int] = set()
    for src, rows in rows_by_source.items():
        c = colors.get(src, "gray")
        pts = [r for r in rows if r.steps and r.rate is not None]
        for stride in sorted({r.stride or 1 for r in pts}):
            sel = [r for r in pts if (r.stride or 1) == stride]
            x = [r.steps * shift.get(src, 1.0) for r in sel]
            y = [r.rate for r in sel]
            err = [[max(0.0, r.rate - r.lo) for r in sel], [max(0.0, r.hi - r.rate) for r in sel]]  # fp noise
            ax.errorbar(
                x,
                y,
                yerr=err,
                fmt="o" if stride == 1 else "s",
                ms=7 if stride == 1 else 8,
                capsize=4,
                color=c,
                mfc=c if stride == 1 else "white",
                ls="none",
                label=f"{src}, stride {stride}",
            )
            steps_seen |= {r.steps for r in sel}
            labels: dict[tuple[float, float], list[str]] = {}
            for r, xi in zip(sel, x, strict=True):  # one label per point, naming every run drawn there
                labels.setdefault((xi, r.rate), []).append(r.name)
            for (xi, yi), names in labels.items():
                ax.annotate(
                    rp._short(", ".join(dict.fromkeys(names)), 40),
                    (xi, yi),
                    fontsize=7,
                    color=c,
                    textcoords="offset points",
                    xytext=(6, 3 if src == "dvc" else -9),
                )
    ax.set_xscale("log", base=2)
    if steps_seen:
        ax.set_xticks(sorted(steps_seen), [str(v) for v in sorted(steps_seen)])
        ax.minorticks_off()
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("exec.steps (actions executed per chunk before re-planning)")
    ax.set_ylabel("success rate (Wilson 95% interval)")
    ax.set_title("success vs executed chunk length")
    ax.grid(alpha=0.3)
    if steps_seen:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no runs with eval results", ha="center", va="center", transform=ax.transAxes)
    return rp.png_b64(fig, dpi=100)


SEED = "train.seed"
SEED_HEADERS = ["runs (seed: success)", "seeds", "mean", "std", "min", "max", "changed params (vs HEAD)"]


def seed_groups(rows: list[Row]) -> list[list[str]]:
    """Experiments that differ only in train.seed, one line each: every seed's rate, mean and spread."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if r.source == "dvc" and r.rate is not None and r.note != "workspace" and SEED in r.params:
            key = json.dumps({k: v for k, v in r.params.items() if k != SEED}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        by_seed = {r.params[SEED]: r for r in rs}  # one run a seed (the latest listed)
        if len(by_seed) < 2:
            continue
        s = spread([r.rate for r in by_seed.values() if r.rate is not None])
        out.append(
            [
                ", ".join(f"{r.name} (seed {seed}: {r.rate:.1%})" for seed, r in sorted(by_seed.items())),
                str(s["runs"]),
                f"{s['mean']:.1%}",
                f"{100 * s['std']:.1f} pts",
                f"{s['min']:.1%}",
                f"{s['max']:.1%}",
                rs[0].changed or "–",
            ]
        )
    return out


def write_outputs(
    out_dir: Path,
    dvc_rows: list[Row],
    mlflow_rows: list[Row],
    notes: list[str] | None = None,
    stage_label: str = "eval",
) -> str:
    """compare.md, compare.html (self-contained) and compare.png under out_dir; returns the Markdown."""
    import base64

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = notes or []
    b64 = plot({"dvc": dvc_rows, "mlflow": mlflow_rows})
    sections = [
        (
            "DVC experiments (`dvc exp show`)",
            dvc_rows,
            "Workspace, baseline commits and their experiments. Other changed params: vs the experiment's "
            "baseline commit (baselines and the workspace: against HEAD).",
        ),
        (
            f"MLflow `{stage_label}` runs ({tracking_uri()})",
            mlflow_rows,
            "Latest finished run per params.yaml hash (the runs' pipeline_id tag), named after the DVC "
            "experiment(s) with the same params.yaml where there is one. Other changed params: against the "
            "workspace params.yaml.",
        ),
    ]
    md = ["# Run comparison", "", *(f"> {n}" for n in notes), ""]
    for title, rows, expl in sections:
        md += [
            f"## {title}",
            "",
            expl,
            "",
            rp.md_table(HEADERS, [cells(r) for r in rows]) if rows else "_none with eval results_",
            "",
        ]
    seeds = seed_groups(dvc_rows)
    if seeds:
        md += [
            "## Training seeds",
            "",
            "Experiments whose params differ only in train.seed: the spread of overall success across seeds.",
            "",
            rp.md_table(SEED_HEADERS, seeds),
            "",
        ]
    md += ["![success vs exec.steps](compare.png)", ""]
    text = "\n".join(md)
    side = "".join(
        f'<div style="flex:1 1 0;min-width:0;overflow-x:auto"><h2>{html.escape(title.replace("`", ""))}</h2>'
        f"<p>{html.escape(expl)}</p>"
        f"{rp.html_table(HEADERS, [cells(r) for r in rows]) if rows else '<p><i>none</i></p>'}</div>"
        for title, rows, expl in sections
    )
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Run comparison</title>'
        f"<style>{rp.CSS} body{{max-width:1800px}}</style></head><body><h1>Run comparison</h1>"
        + "".join(f'<p class="warn">{html.escape(n)}</p>' for n in notes)
        + f'<div style="display:flex;gap:24px;flex-wrap:wrap">{side}</div>'
        + (f"<h2>Training seeds</h2>{rp.html_table(SEED_HEADERS, seeds)}" if seeds else "")
        + f'<img alt="success vs exec.steps" src="data:image/png;base64,{b64}"></body></html>\n'
    )
    for name, content in (
        ("compare.md", text.encode()),
        ("compare.html", page.encode()),
        ("compare.png", base64.b64decode(b64)),
    ):
        with atomic_path(out_dir / name, Path(name).suffix) as tmp:
            tmp.write_bytes(content)
            tmp.chmod(0o644)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="reports", type=Path)
    ap.add_argument(
        "--head-only", action="store_true", help="experiments of HEAD only (default: of all commits)"
    )
    ap.add_argument("--mlflow-stage", default="eval", choices=["eval", "report"])
    args = ap.parse_args(argv)
    notes: list[str] = []
    try:
        data = exp_show(all_commits=not args.head_only)
        dvc_rows = rows_from_exp_show(data)
        names = pipeline_ids(data)
    except (RuntimeError, OSError, json.JSONDecodeError) as e:
        notes.append(f"DVC experiments unavailable: {e}")
        dvc_rows, names = [], {}
    try:
        ml_rows = rows_from_mlflow(tracking_uri(), args.mlflow_stage, names)
    except Exception as e:  # noqa: BLE001 - any store problem becomes a note; the DVC side is still useful
        notes.append(f"MLflow runs unavailable ({tracking_uri()}): {type(e).__name__}: {e}")
        ml_rows = []
    text = write_outputs(args.out_dir, dvc_rows, ml_rows, notes, args.mlflow_stage)
    print(text.replace("![success vs exec.steps](compare.png)", f"plot: {args.out_dir / 'compare.png'}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
