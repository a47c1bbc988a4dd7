"""The expert table's wall time adds up every invocation that ran its episodes (a resumed table)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _table_module():
    spec = importlib.util.spec_from_file_location("expert_table", ROOT / "benchmarks" / "expert_table.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_wall_time_sums_resumed_runs(tmp_path: Path) -> None:
    """Run A was killed after 30 episodes in 300 s, run B ran 20 more in 150 s, and a last pass finds all 50
    cached (0.5 s): the table took 450.5 s, not the last pass's 0.5 s. Run C's ledger covers 10 episodes of
    which 5 belong to this table (another task selection shared the cache): it adds half its time."""
    table = _table_module()
    ledger = tmp_path / "runs"
    ledger.mkdir()
    (ledger / "A.json").write_text(json.dumps({"run": "A", "episodes": 30, "wall_s": 300.0}))
    (ledger / "B.json").write_text(json.dumps({"run": "B", "episodes": 20, "wall_s": 150.0}))
    records = [{"run": "A"}] * 30 + [{"run": "B"}] * 20
    out = table.table_wall_s(records, ledger, run_id="LAST", this_run_s=0.5)
    assert out == {"wall_s": 450.5, "runs": 3, "episodes_without_run": 0}

    (ledger / "C.json").write_text(json.dumps({"run": "C", "episodes": 10, "wall_s": 100.0}))
    old = [{"init": 0}]  # a record cached before the ledger existed: counted, not guessed
    out = table.table_wall_s(records + [{"run": "C"}] * 5 + old, ledger, run_id="LAST", this_run_s=0.5)
    assert out == {"wall_s": 500.5, "runs": 4, "episodes_without_run": 1}


def test_merge_tables_recomputes_the_summaries(tmp_path: Path) -> None:
    """Per-suite tables (a host session may be cut short between suites) merge into one table whose suite,
    family and overall summaries are recomputed from the tasks."""
    table = _table_module()

    def task(suite: str, fam: str, k: int) -> dict:
        return {
            "suite": suite,
            "family": fam,
            "n": 10,
            "successes": k,
            "success_rate": k / 10,
            "failure_causes": {"grasp_missed": 10 - k} if k < 10 else {},
        }

    a = {"protocol": "p", "wall_s": 10.0, "workers": 8, "tasks": {"s_a/x": task("s_a", "f1", 10)}}
    b = {
        "protocol": "p",
        "wall_s": 5.0,
        "workers": 16,
        "tasks": {"s_b/x": task("s_b", "f1", 7), "s_b/y": task("s_b", "f2", 9)},
    }
    for name, t in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(t))
    m = table.merge([tmp_path / "a.json", tmp_path / "b.json"])
    assert m["tasks_total"] == 3 and m["tasks_at_90pct"] == 2 and list(m["below_90pct"]) == ["s_b/x"]
    assert m["overall"]["episodes"] == 30 and abs(m["overall"]["success_rate"] - 26 / 30) < 1e-12
    assert m["per_suite"]["s_b"]["tasks"] == 2 and m["per_suite"]["s_b"]["success_rate"] == 0.8
    assert m["per_family"]["f1"]["failure_causes"] == {"grasp_missed": 3}
    assert m["wall_s"] == 15.0 and m["workers"] == 16
