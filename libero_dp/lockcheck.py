"""Committed results come from the committed code: dvc.lock must match every stage's code, params and metrics.

Why: `metrics/*.json` and the README's figures are what `dvc repro` produced when dvc.lock was written. If a
stage's code or params changed afterwards, `dvc repro` would rerun it, and the committed figures describe code
that no longer exists. This check asks DVC (`dvc status --json`) which stages would rerun and fails for any
stage whose dependencies, params, command or committed (git-tracked) outputs differ from dvc.lock.

What is not a failure: data that a fresh clone does not have. Outputs kept in the DVC cache (data/, models/)
are absent until pulled or rebuilt, so a dependency or output that is `deleted` / `not in cache` and not
tracked by git is expected and ignored.

    python -m libero_dp.lockcheck            # exit 0: lock matches; exit 1: lists each stale stage and why
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

MISSING = {"deleted", "not in cache"}  # a data output that this clone does not hold


@dataclass(frozen=True)
class Stale:
    """One reason a stage would rerun."""

    stage: str
    what: str  # "dependency", "param", "output", "command", ...
    path: str
    status: str

    def __str__(self) -> str:
        if self.status.startswith("not a dependency"):
            return f"stage '{self.stage}': {self.what} {self.path} is {self.status}"
        return f"stage '{self.stage}': {self.what} {self.path} is {self.status} since dvc.lock was written"


def _git_tracked(root: Path) -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _tracked(path: str, tracked: set[str]) -> bool:
    """A file tracked by git, or a folder holding tracked files (code folders such as libero_dp/expert)."""
    p = path.rstrip("/")
    return p in tracked or any(t.startswith(p + "/") for t in tracked)


def dvc_status(root: Path, dvc: str = "dvc") -> dict:
    """`dvc status --json` of the repo at `root` (every stage of dvc.yaml)."""
    r = subprocess.run([dvc, "status", "--json"], cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"`dvc status --json` failed in {root}:\n{r.stderr.strip() or r.stdout.strip()}")
    text = r.stdout.strip()
    start = text.find("{")  # DVC may print warnings before the JSON document
    return json.loads(text[start:]) if start >= 0 else {}


def stale_stages(status: dict, tracked: set[str]) -> list[Stale]:
    """Every reason, per stage, that `dvc repro` would rerun it, less the data a fresh clone lacks."""
    found: list[Stale] = []
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):  # "changed checksum", "always changed", "changed command"
                found.append(Stale(stage, "stage", "dvc.yaml", entry))
                continue
            for kind, items in entry.items():
                what = {"changed deps": "dependency", "changed outs": "output"}.get(kind, kind)
                if not isinstance(items, dict):
                    found.append(Stale(stage, what, "", str(items)))
                    continue
                for path, state in items.items():
                    if isinstance(state, dict):  # params file: {key: "modified" | "new" | "deleted"}
                        for key, st in state.items():
                            found.append(Stale(stage, "param", f"{path}:{key}", st))
                        continue
                    if state in MISSING and not _tracked(path, tracked):
                        continue  # data the clone does not hold: expected
                    found.append(Stale(stage, what, path, state))
    return found


def package_imports(script: Path, root: Path, package: str = "libero_dp") -> set[Path]:
    """Every module of `package` that `script` imports, directly or through other modules."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] != package:
                    continue
                parts = name.split(".")
                # a module imported by name pulls in its package's __init__ files too
                candidates = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
                candidates.append(root.joinpath(*parts).with_suffix(".py"))
                for f in candidates:
                    if f.is_file() and f not in seen:
                        seen.add(f)
                        todo.append(f)
    return seen


def undeclared_code(root: Path) -> dict[str, list[str]]:
    """Per stage, the package modules its script imports that dvc.yaml does not list as dependencies.

    Why: DVC reruns a stage only when a listed dependency changes; a module the script imports but the stage
    does not list could change the results without `dvc repro` noticing, and this check could not see it.
    """
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    missing: dict[str, list[str]] = {}
    for stage, st in spec["stages"].items():
        scripts = [w for w in str(st["cmd"]).split() if w.endswith(".py")]
        deps = [str(d).rstrip("/") for d in st.get("deps", [])]
        for script in scripts:
            for f in sorted(package_imports(root / script, root)):
                rel = f.relative_to(root).as_posix()
                if not any(rel == d or rel.startswith(d + "/") for d in deps):
                    missing.setdefault(stage, []).append(rel)
    return missing


def check(root: Path, dvc: str = "dvc") -> list[Stale]:
    """Stale reasons for the repo at `root` (empty: every committed result matches the committed code)."""
    return stale_stages(dvc_status(root, dvc), _git_tracked(root))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path.cwd())
    ap.add_argument("--dvc", default=str(Path(sys.executable).parent / "dvc"))
    args = ap.parse_args(argv)
    problems = check(args.root, args.dvc)
    for stage, files in undeclared_code(args.root).items():
        problems += [Stale(stage, "imported module", f, "not a dependency in dvc.yaml") for f in files]
    if not problems:
        print("dvc.lock matches the code, params and committed metrics of every stage")
        return 0
    print("dvc.lock is stale: the committed results do not come from the committed code.", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    print("Rerun the stages (`dvc repro`) and commit dvc.lock with their metrics.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
