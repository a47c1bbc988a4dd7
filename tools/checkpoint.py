"""Export a trained policy to a self-contained folder, or evaluate such a folder on a CPU.

    python tools/checkpoint.py export --models models --stats data/scaled/stats.json --out checkpoints/NAME
    python tools/checkpoint.py eval checkpoints/NAME --tasks libero_90:0 libero_90:5 --episodes 10
    python tools/checkpoint.py agree metrics/checkpoints/NAME.json benchmarks/results/libero90_s0/eval.json
    python tools/checkpoint.py failures metrics/checkpoints/NAME.json --out reports/checkpoints/NAME

`eval` checks the folder against its manifest (sha256 per file) and the config against the weights and stats,
then runs the eval stage's own `evaluate` (LIBERO's protocol: episode i from official init state i mod 50)
with exec/eval settings from params.yaml, the policy on the CPU, and writes metrics/checkpoints/NAME.json
(per task and overall success with Wilson intervals, where it was measured). Make targets:
`export-checkpoint`, `eval-checkpoint`, `eval-libero90`. `agree` sets such a check beside the claimed run's
metrics/eval.json: per task and pooled over the checked tasks, each rate against the other's Wilson interval.
`failures` renders an `eval --videos K` run as one page: failed episodes grouped by cause, with their videos
(libero_dp.failure_page; make target `failure-videos`).
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libero_dp.config import load_params  # noqa: E402
from libero_dp.export import export_checkpoint, verify  # noqa: E402
from libero_dp.fileio import write_json  # noqa: E402


def cmd_export(a: argparse.Namespace) -> None:
    m = export_checkpoint(a.models, a.stats, a.out, a.weights, a.dtype, a.max_mib)
    mib = m["total_bytes"] / 2**20
    print(f"{a.out}: {m['parameters'] / 1e6:.1f}M parameters, {m['dtype']}, {mib:.1f} MiB")


def _with(params: BaseModel, **changes: object) -> BaseModel:
    """`params` with `changes`, validated as params.yaml is: a bad option is an error naming the field."""
    return type(params).model_validate({**params.model_dump(), **changes})


def eval_dir(ckpt: Path) -> Path:
    """Where `eval` writes a checkpoint's records and videos (and `failures` reads them)."""
    return ROOT / "data" / "eval_checkpoints" / ckpt.name


def cmd_eval(a: argparse.Namespace) -> None:
    from libero_dp.evaluate import evaluate

    ckpt = Path(a.checkpoint)
    manifest = verify(ckpt)
    ep = _with(
        load_params("eval"),
        policy="learned",
        tasks=a.tasks or "from_data",
        episodes_per_task=a.episodes,
        workers=a.workers,
        videos_success=0,
        videos_failure=a.videos,
        weights="ema",
        grounding_inits=a.grounding_inits,
        **({"max_steps": a.max_steps} if a.max_steps is not None else {}),
    )
    # --exec-steps: the execution-length lesson on a fixed checkpoint (only this changes between runs)
    xp = _with(load_params("exec"), **({"steps": a.exec_steps} if a.exec_steps is not None else {}))
    out = Path(a.out or ROOT / "metrics" / "checkpoints" / f"{ckpt.name}.json")
    m = evaluate(ep, xp, ckpt, ckpt / "stats.json", ckpt, eval_dir(ckpt))
    m["checkpoint"] = {"path": str(ckpt), "manifest": manifest}
    m["measured_on"] = (
        f"{platform.node()} ({platform.processor() or platform.machine()}, policy on CPU), "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    write_json(out, m)
    for name, t in m["tasks"].items():
        lo, hi = t["wilson95"]
        print(f"{name}: {t['successes']}/{t['n']} = {t['success_rate']:.1%} [{lo:.1%}, {hi:.1%}]")
    if m.get("grounding"):
        g = m["grounding"]["overall"]
        print(f"grounding: {g['followed']}/{g['n']} followed, {g['ignored']} ignored, {g['neither']} neither")
    o = m["overall"]
    print(f"overall {o['successes']}/{o['n']} = {o['success_rate']:.1%} -> {out}")


def agreement(check: dict, claim: dict) -> dict:
    """Per task and pooled: the two rates, their Wilson 95% intervals, and whether each rate lies inside the
    other's interval (the two agree within sampling error at these episode counts)."""
    from libero_dp.metrics import rate_summary

    def row(a: dict, b: dict) -> dict:
        ra, rb = rate_summary(a["successes"], a["n"]), rate_summary(b["successes"], b["n"])
        inside = (
            rb["wilson95"][0] <= ra["success_rate"] <= rb["wilson95"][1]
            and ra["wilson95"][0] <= rb["success_rate"] <= ra["wilson95"][1]
        )
        return {"check": ra, "claim": rb, "agree": inside}

    missing = sorted(set(check["tasks"]) - set(claim["tasks"]))
    if missing:
        raise ValueError(f"claimed run's eval.json field 'tasks' lacks the checked tasks {missing}")
    tasks = {t: row(check["tasks"][t], claim["tasks"][t]) for t in check["tasks"]}

    def summed(d: dict) -> dict:
        return {k: sum(d["tasks"][t][k] for t in tasks) for k in ("successes", "n")}

    pooled = row(summed(check), summed(claim))
    return {
        "tasks": tasks,
        "pooled": pooled,
        "all_agree": pooled["agree"] and all(r["agree"] for r in tasks.values()),
    }


def cmd_agree(a: argparse.Namespace) -> None:
    import json

    res = agreement(json.loads(a.check.read_text()), json.loads(a.claim.read_text()))
    res.update(check_file=str(a.check), claim_file=str(a.claim))
    for name, r in [*res["tasks"].items(), ("pooled", res["pooled"])]:
        c, g = r["check"], r["claim"]
        lo_c, hi_c = c["wilson95"]
        lo_g, hi_g = g["wilson95"]
        print(
            f"{name}: check {c['successes']}/{c['n']} [{lo_c:.1%}, {hi_c:.1%}] vs claim "
            f"{g['successes']}/{g['n']} [{lo_g:.1%}, {hi_g:.1%}]: {'agree' if r['agree'] else 'DISAGREE'}"
        )
    if a.out:
        write_json(a.out, res)
    print("all agree" if res["all_agree"] else "not all agree")


def cmd_failures(a: argparse.Namespace) -> None:
    import json

    from libero_dp.failure_page import build

    m = json.loads(a.metrics.read_text())
    ckpt = Path(m.get("checkpoint", {}).get("path", a.metrics.stem))
    res = build(a.metrics, a.eval_dir or eval_dir(ckpt), a.out, a.title or f"{ckpt.name}: failures by cause")
    for label, n in res["counts"].items():
        vids = res["videos"].get(label, [])
        print(f"{label}: {n} episode(s), {len(vids)} video(s)")
    print(f"-> {a.out}/index.html, {a.out}/summary.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="models/ + stats -> a self-contained checkpoint folder")
    e.add_argument("--models", type=Path, default=Path("models"))
    e.add_argument("--stats", type=Path, default=Path("data/scaled/stats.json"))
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--weights", choices=["ema", "raw"], default="ema")
    e.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    e.add_argument("--max-mib", type=float, default=64.0)
    e.set_defaults(fn=cmd_export)
    v = sub.add_parser("eval", help="evaluate a checkpoint folder on the CPU (LIBERO's protocol)")
    v.add_argument("checkpoint", type=Path)
    v.add_argument("--tasks", nargs="*", default=None, help="task selections (default: its training tasks)")
    v.add_argument("--episodes", type=int, default=10, help="per task: official init states 0..n-1")
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--max-steps", type=int, default=None, help="default: eval.max_steps")
    v.add_argument("--exec-steps", type=int, default=None, help="default: exec.steps")
    v.add_argument("--videos", type=int, default=0, help="failure videos per task")
    v.add_argument("--grounding-inits", type=int, default=0, help="language grounding (eval.grounding_inits)")
    v.add_argument("--out", type=Path, default=None, help="default metrics/checkpoints/NAME.json")
    v.set_defaults(fn=cmd_eval)
    g = sub.add_parser("agree", help="a checkpoint's CPU check beside the claimed run's per-task rates")
    g.add_argument("check", type=Path, help="metrics/checkpoints/NAME.json from `eval`")
    g.add_argument("claim", type=Path, help="the claimed run's metrics/eval.json")
    g.add_argument("--out", type=Path, default=None)
    g.set_defaults(fn=cmd_agree)
    f = sub.add_parser("failures", help="an `eval --videos K` run as one page: failures by cause with videos")
    f.add_argument("metrics", type=Path, help="metrics/checkpoints/NAME.json from `eval`")
    f.add_argument(
        "--eval-dir", type=Path, default=None, help="default data/eval_checkpoints/<checkpoint name>"
    )
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--title", default=None)
    f.set_defaults(fn=cmd_failures)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
