"""The language-grounding table: within one scene, B's instruction from A's init state; which goal held.

Read from metrics/eval.json `grounding` (evaluate/grounding.py). Followed = B's goal held at the end; ignored
= only A's goal held (the policy did what the scene was set up for, not what it was told); neither.
"""

from __future__ import annotations

from typing import Any

HEADERS = ["scene", "followed", "Wilson 95%", "ignored", "neither", "episodes"]
PAIR_HEADERS = ["from A's init (A)", "told B", "followed", "ignored", "neither"]


def _row(name: str, r: dict[str, Any]) -> list[str]:
    lo, hi = r["wilson95"]
    return [
        name,
        f"{100 * r['success_rate']:.1f}%",
        f"[{100 * lo:.1f}, {100 * hi:.1f}]",
        str(r["ignored"]),
        str(r["neither"]),
        str(r["n"]),
    ]


def grounding_table(ev: dict[str, Any]) -> dict[str, Any] | None:
    """Rows for the report (overall and per scene, then per pair), or None when no grounding episode ran."""
    g = ev.get("grounding")
    if not g or not g.get("overall"):
        return None
    pair_rows = []
    for r in g["per_pair"]:
        pair_rows.append(
            [r["from"], r["to"], f"{r['followed']}/{r['n']}", str(r["ignored"]), str(r["neither"])]
        )
    return {
        "headers": HEADERS,
        "rows": [*(_row(s, r) for s, r in g["per_scene"].items()), _row("all scenes", g["overall"])],
        "pair_headers": PAIR_HEADERS,
        "pair_rows": pair_rows,
        "pairs": g["pairs"],
        "skipped": ", ".join(f"{n} ({why})" for why, n in g.get("skipped", {}).items()) or "none",
    }
