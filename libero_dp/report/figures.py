"""The report's figures (matplotlib, rendered to base64 PNGs so the page embeds them)."""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from typing import Any

import numpy as np

from libero_dp.report.tables import _K_INIT, _K_PATH, FAILURE_LABELS, UNITS, RateRow, failure_label, rget


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_b64(fig: Any, dpi: int = 90) -> str:
    """Render and close a figure; base64 PNG for a data: URI."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _short(name: str, n: int = 48) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def fig_success(rows: list[RateRow], title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.28 * len(rows) + 1.0)))
    y = np.arange(len(rows))[::-1]
    rates = np.array([r.rate for r in rows])
    lo = np.array([r.interval[0] for r in rows])
    hi = np.array([r.interval[1] for r in rows])
    ax.barh(y, rates, color="#4c78a8", height=0.6)
    err = np.maximum(0.0, [rates - lo, hi - rates])  # Wilson bounds meet the rate at 0 and 1 up to fp noise
    ax.errorbar(rates, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_yticks(y, [_short(r.name) for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("success rate (bars: Wilson 95% interval)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return png_b64(fig)


def fig_training(log: list[dict[str, float]]) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))

    def series(col: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [
            (r["step"], r[col])
            for r in log
            if math.isfinite(r.get("step", math.nan)) and math.isfinite(r.get(col, math.nan))
        ]
        return (
            (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
            if pts
            else (np.zeros(0), np.zeros(0))
        )

    ax = axes[0]
    for col, style in (("loss", "-"), ("val_mse", "o-")):
        x, yv = series(col)
        if len(x):
            ax.plot(x, yv, style, label="train loss" if col == "loss" else "validation MSE (raw units)", ms=4)
    if any(len(series(c)[0]) and (series(c)[1] > 0).all() for c in ("loss", "val_mse")):
        ax.set_yscale("log")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    for ax, col, title in (
        (axes[1], "lr", "learning rate"),
        (axes[2], "samples_per_s", "throughput (samples/s)"),
    ):
        x, yv = series(col)
        if len(x):
            ax.plot(x, yv, color="C2" if col == "lr" else "C3")
        else:
            ax.text(0.5, 0.5, f"no {col} logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return png_b64(fig)


def _absmax(stats: dict[str, dict]) -> tuple[list[str], np.ndarray]:
    names = list(stats)
    return names, np.array([max(abs(stats[n]["min"]), abs(stats[n]["max"])) for n in names])


def fig_action_magnitude(scale_m: dict) -> str:
    """max |a| per dimension at each step of the transform, log scale, so a 20x imbalance is visible."""
    plt = _plt()
    stages = [
        ("actions_raw", "raw LIBERO action (OSC units)"),
        ("actions_physical", f"physical ({scale_m.get('pos_unit')}, {scale_m.get('rot_repr')})"),
        ("actions_model", f"model input ({scale_m.get('norm')})"),
    ]
    stages = [(k, t) for k, t in stages if isinstance(scale_m.get(k), dict)]
    fig, axes = plt.subplots(1, len(stages) + 1, figsize=(5 * (len(stages) + 1), 3.8))
    for ax, (key, title) in zip(axes, stages, strict=False):
        names, mags = _absmax(scale_m[key])
        colors = [
            "#e45756" if n in ("x", "y", "z") else "#9d755d" if n == "gripper" else "#4c78a8" for n in names
        ]
        ax.bar(range(len(names)), np.maximum(mags, 1e-12), color=colors)
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("max |value| (training split)")
        ax.grid(axis="y", alpha=0.3)
    ax = axes[-1]
    by_unit = scale_m.get("pos_rot_ratio_by_unit") or {}
    units = [u for u in UNITS if u in by_unit] + [u for u in by_unit if u not in UNITS]
    chosen = str(scale_m.get("pos_unit"))
    vals = [float(by_unit[u]) for u in units]
    ax.bar(units, vals, color=["#f58518" if u == chosen else "#bab0ac" for u in units])
    ax.axhline(1.0, color="black", lw=1, ls="--")
    ax.axhspan(0.2, 5, color="#54a24b", alpha=0.12, label="comparable (0.2-5)")
    ax.set_yscale("log")
    ax.set_title(f"max|pos| / max|rot| by position unit (chosen: {chosen})", fontsize=10)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return png_b64(fig)


def fig_histograms(hist: dict) -> str | None:
    """Per-dimension distributions before (raw, physical) and after (model) scaling."""
    plt = _plt()
    rows = [(k, [n for n in hist if n.startswith(k + "/")]) for k in ("raw", "physical", "model")]
    rows = [(k, sorted(v, key=lambda s: int(s.split("/")[1]))) for k, v in rows if v]
    if not rows:
        return None
    ncol = max(len(v) for _, v in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.9 * ncol, 1.7 * len(rows)), squeeze=False)
    names = {
        "raw": hist.get("raw_names") or [],
        "physical": hist.get("action_names") or [],
        "model": hist.get("action_names") or [],
    }
    for i, (kind, keys) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            if j >= len(keys):
                ax.axis("off")
                continue
            h = hist[keys[j]]
            edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
            ax.stairs(counts, edges, fill=True, color="#4c78a8" if kind == "model" else "#72b7b2")
            dim = int(keys[j].split("/")[1])
            nm = names[kind][dim] if dim < len(names[kind]) else str(dim)
            ax.set_title(f"{kind} {nm}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
    fig.tight_layout()
    return png_b64(fig, dpi=80)


def pick_path_episodes(records: list[dict], n: int) -> list[dict]:
    """Alternate successes and failures (with a recorded eef path), spread over tasks, so both behaviours
    and more than one scene are shown."""
    with_path = [r for r in records if _path(r) is not None]
    pools = [[r for r in with_path if r.get("success")], [r for r in with_path if not r.get("success")]]
    out: list[dict] = []
    shown: Counter[str] = Counter()
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                best = min(range(len(pool)), key=lambda i: shown[str(pool[i].get("task"))])
                rec = pool.pop(best)
                shown[str(rec.get("task"))] += 1
                out.append(rec)
    return out


def _path(rec: dict) -> np.ndarray | None:
    p = rget(rec, _K_PATH)
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a[:, :3] if a.ndim == 2 and a.shape[1] >= 3 and len(a) else None


def nearest_demo(path: np.ndarray, demos: list[np.ndarray]) -> np.ndarray | None:
    """The demo whose start is closest to the episode's start: the most comparable reference."""
    if not demos:
        return None
    return min(demos, key=lambda d: float(np.linalg.norm(d[0] - path[0])))


def fig_paths(episodes: list[dict], demo_paths: dict[str, list[np.ndarray]]) -> str | None:
    plt = _plt()
    if not episodes:
        return None
    fig, axes = plt.subplots(len(episodes), 3, figsize=(13, 3.6 * len(episodes)), squeeze=False)
    for i, rec in enumerate(episodes):
        ex = _path(rec)
        demo = nearest_demo(ex, demo_paths.get(str(rec.get("task")), []))
        status = "success" if rec.get("success") else f"failure: {failure_label(rec)}"
        for j, (a, b, lbl) in enumerate(((0, 1, "xy"), (0, 2, "xz"), (1, 2, "yz"))):
            ax = axes[i][j]
            if demo is not None:
                ax.plot(demo[:, a], demo[:, b], color="#54a24b", lw=1.5, label="demo (nearest start)")
            ax.plot(
                ex[:, a],
                ex[:, b],
                color="#e45756" if not rec.get("success") else "#4c78a8",
                lw=1.5,
                label="executed",
            )
            ax.plot(ex[0, a], ex[0, b], "ko", ms=4, label="start")
            ax.plot(ex[-1, a], ex[-1, b], "kx", ms=6, label="end")
            ax.set_xlabel(f"{lbl[0]} (m)")
            ax.set_ylabel(f"{lbl[1]} (m)")
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_title(
                    f"{_short(str(rec.get('task')), 40)} init {rget(rec, _K_INIT, '?')} "
                    f"seed {rec.get('seed', '?')}\n{status}",
                    fontsize=9,
                    loc="left",
                )
                ax.legend(fontsize=7)
    fig.tight_layout()
    return png_b64(fig, dpi=80)


def fig_failures(records: list[dict]) -> str | None:
    plt = _plt()
    failed = [r for r in records if not r.get("success")]
    if not failed:
        return None
    tasks = sorted({str(r.get("task")) for r in failed})
    labels = list(FAILURE_LABELS) + sorted({failure_label(r) for r in failed} - set(FAILURE_LABELS))
    counts = {
        lab: [sum(1 for r in failed if r.get("task") == t and failure_label(r) == lab) for t in tasks]
        for lab in labels
    }
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.28 * len(tasks) + 1.2)))
    left = np.zeros(len(tasks))
    y = np.arange(len(tasks))[::-1]
    for k, lab in enumerate(labels):
        c = np.array(counts[lab], dtype=float)
        if c.sum():
            ax.barh(y, c, left=left, label=lab, color=f"C{k}", height=0.6)
            left += c
    ax.set_yticks(y, [_short(t) for t in tasks], fontsize=8)
    ax.set_xlabel("failed episodes")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("failures by label")
    return png_b64(fig)
