"""Which LIBERO/robosuite data files the scenes of a suite load, by building every task's env (state-only).

    python tools/trace_assets.py --suites libero_90 --out dist/cache/assets.json

Two sources, because MuJoCo reads meshes and textures in C (invisible to Python) while LIBERO reads its
object XMLs in Python: every `file="..."` of the model XML each env hands to MuJoCo (absolute paths, as
robosuite writes them), and every file Python opens while importing and building (an audit hook). The XML is
caught at robosuite's MjSim.from_xml_string and the build stopped there, before MuJoCo compiles meshes (the
costly part: ~0.3 s a task instead of ~4 s); a reset regenerates the same objects, only placed elsewhere.
`tools/check_libero90.py` then builds, resets and renders every task from the trimmed bundle on the host.
Paths are written relative to the site-packages folder that holds them, matching wheel entries.
With --language, also writes the instruction embeddings of every task of the five suites and the 16
LIBERO-PRO suites (the bundle's language cache).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPENED: set[str] = set()


def _hook(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str):
        OPENED.add(os.path.realpath(args[0]))


class _Captured(Exception):
    """Raised in place of compiling the model: the XML is all the trace needs."""


def _relative(path: str, roots: list[str]) -> str | None:
    for r in roots:
        if path.startswith(r + os.sep):
            return path[len(r) + 1 :]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", nargs="+", default=["libero_90"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--language", type=Path, default=None, help="also write the instruction embeddings here")
    args = ap.parse_args()
    sys.addaudithook(_hook)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import libero.libero
    import robosuite

    from libero_dp import sim
    from libero_dp.fileio import write_json

    roots = sorted(
        {str(Path(m.__file__).resolve().parents[n]) for m, n in ((robosuite, 1), (libero.libero, 2))}, key=len
    )
    from robosuite.utils.binding_utils import MjSim

    xmls: list[str] = []

    def catch(cls: type, xml: str) -> None:
        xmls.append(xml)
        raise _Captured

    MjSim.from_xml_string = classmethod(catch)
    tasks = [t for s in args.suites for t in sim.suite_tasks(s)]
    per_task: dict[str, list[str]] = {}
    t0 = time.time()
    for i, task in enumerate(tasks):
        xmls.clear()
        try:
            sim.make_env(task, render=False)
        except _Captured:
            pass
        if len(xmls) != 1:
            raise RuntimeError(f"{task.key}: expected one model XML before compiling, got {len(xmls)}")
        files = {os.path.realpath(f) for f in re.findall(r'file="([^"]+)"', xmls[0])}
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"{task.key}: the model references missing files {missing[:3]}")
        per_task[task.key] = sorted(r for f in files if (r := _relative(f, roots)) is not None)
        print(
            f"[{i + 1}/{len(tasks)}] {task.name}: {len(files)} files ({time.time() - t0:.0f} s)", flush=True
        )
    opened = {r for f in OPENED if os.path.isfile(f) and (r := _relative(f, roots)) is not None}
    data_opened = sorted(
        f for f in opened if not f.endswith((".py", ".pyc", ".so")) and "__pycache__" not in f
    )
    keep = sorted(set(data_opened).union(*per_task.values()))
    write_json(
        args.out,
        {
            "suites": args.suites,
            "tasks": len(tasks),
            "keep": keep,
            "opened_by_python": data_opened,
            "per_task": per_task,
            "site_roots": roots,
        },
    )
    print(f"{args.out}: {len(keep)} files kept for {len(tasks)} tasks")
    if args.language:
        from libero_dp.language import embed_instructions

        suites = (*sim.SUITES, *sim.PRO_SUITES)  # PRO's reworded and new instructions too
        # the benchmark's sentence and the task file's (what demo files record; 4 libero_90 tasks differ)
        tasks_all = [t for s in suites for t in sim.suite_tasks(s)]
        texts = sorted(
            {t.language for t in tasks_all} | {sim.bddl_language(t.bddl_file) or "" for t in tasks_all} - {""}
        )
        args.language.unlink(missing_ok=True)
        embed_instructions(texts, args.language)
        print(f"{args.language}: {len(texts)} instructions of {len(suites)} suites")


if __name__ == "__main__":
    main()
