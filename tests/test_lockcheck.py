"""Committed results come from the committed code: dvc.lock matches every stage's code, params and metrics.

Runs DVC for real: on the repository itself (what CI sees in a fresh clone, where data outputs are absent),
and on a clone of HEAD where a stage's code and then a param are edited without rerunning the stage.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from libero_dp import lockcheck

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


def test_lock_matches_the_committed_code() -> None:
    problems = lockcheck.check(REPO, DVC)
    assert problems == [], "dvc.lock is stale (rerun `dvc repro`, commit):\n" + "\n".join(map(str, problems))


def test_every_imported_module_is_a_declared_dependency() -> None:
    # otherwise a module could change the results without DVC (or the check above) noticing
    assert lockcheck.undeclared_code(REPO) == {}
    found = lockcheck.package_imports(REPO / "stages" / "train.py", REPO)
    assert REPO / "libero_dp" / "policy.py" in found  # imported through libero_dp.train


@pytest.fixture()
def clone(tmp_path: Path) -> Path:
    dst = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(dst)], check=True)
    return dst


def _stages(problems: list[lockcheck.Stale]) -> set[str]:
    return {p.stage for p in problems}


def test_check_fails_when_a_dependency_is_edited_without_rerunning(clone: Path) -> None:
    # a fresh clone has no data outputs: that alone is not a failure
    assert lockcheck.check(clone, DVC) == []
    assert lockcheck.main(["--root", str(clone), "--dvc", DVC]) == 0

    code = clone / "libero_dp" / "scale.py"
    code.write_text(code.read_text() + "\n# an edit that `dvc repro` would have to rerun scale for\n")
    problems = lockcheck.check(clone, DVC)
    assert _stages(problems) == {"scale"}
    assert any(p.path == "libero_dp/scale.py" and p.status == "modified" for p in problems)
    assert lockcheck.main(["--root", str(clone), "--dvc", DVC]) == 1

    subprocess.run(["git", "checkout", "--", "libero_dp/scale.py"], cwd=clone, check=True)
    assert lockcheck.check(clone, DVC) == []

    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["exec"]["steps"] = 8  # read by eval (and shown by report)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = lockcheck.check(clone, DVC)
    assert _stages(problems) == {"eval", "report"}
    assert all(p.what == "param" and p.path == "params.yaml:exec" for p in problems)


def test_check_fails_when_a_committed_metric_is_edited(clone: Path) -> None:
    metric = clone / "metrics" / "eval.json"
    metric.write_text(metric.read_text().replace('"successes": ', '"successes": 1', 1))
    problems = lockcheck.check(clone, DVC)
    assert any(p.stage == "eval" and p.path == "metrics/eval.json" and p.what == "output" for p in problems)
