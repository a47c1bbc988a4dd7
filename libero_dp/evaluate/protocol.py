"""The evaluation protocol: which episodes run, from which reset seed and init state, on which tasks.

Protocol (as LIBERO's own evaluation): episode i of a task starts from official init state i mod 50 after a
seeded reset (reset seed = seed*1000 + i; the fixture placement comes from np.random), then `num_steps_wait`
no-op steps; success = `done` from env.step or `env.check_success()` at ANY step (LIBERO's info is always {});
the episode ends at success or after `max_steps` policy steps. `replay` episodes instead re-run a recorded
demo from its own reset seed and init state (a reference that must succeed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from libero_dp import sim
from libero_dp.config import EvalParams

DEFAULT_IMAGE_SIZE = 128


@dataclass
class EpisodeSpec:
    """One unit of work. For `replay`, reset seed / init state / actions come from the demo file."""

    task: sim.TaskSpec
    index: int  # episode index i within (task, seed)
    seed: int
    reset_seed: int
    init_state: np.ndarray | None
    wait_steps: int
    max_steps: int
    language: str
    init_index: int | None = None  # official init state used (None for replay)
    demo: str | None = None  # replayed demo key
    actions: np.ndarray | None = field(default=None, repr=False)
    ref_states: np.ndarray | None = field(default=None, repr=False)  # the demo's states, to check the replay
    # grounding episodes (evaluate/grounding.py): B's task from this task A's init state, B's instruction
    grounding_from: sim.TaskSpec | None = None

    @property
    def label(self) -> str:
        return self.task.label

    @property
    def key(self) -> str:
        if self.grounding_from is not None:
            return f"{self.label}/from_{self.grounding_from.name}/s{self.seed}_e{self.index:03d}"
        return f"{self.label}/s{self.seed}_e{self.index:03d}"


def protocol_specs(
    task: sim.TaskSpec, seeds: list[int], episodes: int, ep: EvalParams, language: str | None = None
) -> list[EpisodeSpec]:
    """The benchmark's episodes: i starts from official init state i mod 50, reset seed seed*1000 + i."""
    inits = sim.official_init_states(task)
    return [
        EpisodeSpec(
            task,
            i,
            s,
            s * 1000 + i,
            inits[i % len(inits)],
            ep.num_steps_wait,
            ep.max_steps,
            language or task.language,
            init_index=i % len(inits),
        )
        for s in seeds
        for i in range(episodes)
    ]


def replay_specs(
    task: sim.TaskSpec, demo_file: Path, seeds: list[int], episodes: int, ep: EvalParams
) -> list[EpisodeSpec]:
    """Episode i replays demo i (mod the number of demos) from its own reset seed and init state, without wait
    steps, for all of its actions (eval.max_steps does not cut a replay short)."""
    import h5py

    from libero_dp.dataformat import demo_keys, readable

    if not demo_file.exists():
        raise FileNotFoundError(f"{demo_file}: no demo file for task {task.name} (eval.policy=replay)")
    out = []
    with readable(demo_file), h5py.File(demo_file, "r") as f:
        keys = demo_keys(f["data"])
        if not keys:
            raise ValueError(f"{demo_file}: no demo_<i> groups to replay")
        for s in seeds:
            for i in range(episodes):
                k = keys[i % len(keys)]
                g = f["data"][k]
                if "reset_seed" not in g.attrs:
                    raise ValueError(
                        f"{demo_file}: data/{k} has no 'reset_seed' attribute; replay needs "
                        "the seed of the recorded reset (fixture placement), as collect stores"
                    )
                init = np.asarray(g.attrs["init_state"])
                out.append(
                    EpisodeSpec(
                        task,
                        i,
                        s,
                        int(g.attrs["reset_seed"]),
                        init,
                        0,
                        int(g["actions"].shape[0]),
                        task.language,
                        demo=k,
                        actions=np.asarray(g["actions"][()], dtype=np.float64),
                        ref_states=np.asarray(g["states"][()]) if "states" in g else None,
                    )
                )
    return out


def model_info(models_dir: Path) -> dict[str, Any]:
    """Tasks, languages and data image size the policy was trained on, from models/config.json.

    config['dataset'] (train.py) holds image_size (the extracted frames' size, which the policy is fed; the
    encoder resizes internally), languages and windows_dir; task names come from
    config['dataset']['task_names'] if present, else from the windows stage's meta.json (same order as
    languages).
    """
    path = Path(models_dir) / "config.json"
    if not path.exists():
        return {}
    ds = json.loads(path.read_text()).get("dataset", {})
    info: dict[str, Any] = {k: ds[k] for k in ("task_names", "languages") if k in ds}
    if "image_size" in ds:
        info["data_image_size"] = int(ds["image_size"])
    meta = Path(ds.get("windows_dir", "")) / "meta.json"
    if "task_names" not in info and ds.get("windows_dir") and meta.exists():
        m = json.loads(meta.read_text())
        info["task_names"] = m.get("task_names", [])
        info.setdefault("languages", m.get("languages", []))
    return info


def extracted_image_size() -> int | None:
    """The extract stage's image size (the render size when the models config does not say)."""
    meta = Path("data/extracted/meta.json")
    try:
        return int(json.loads(meta.read_text())["image_size"])
    except (OSError, KeyError, ValueError):
        return None


def demo_file(demos_dir: Path, task: sim.TaskSpec) -> Path:
    return Path(demos_dir) / f"{task.file_stem}_demo.hdf5"


def eval_tasks(ep: EvalParams, info: dict[str, Any], demos_dir: Path) -> list[sim.TaskSpec]:
    """`from_data`: the learned policy's training tasks (models config), else the tasks with demo files."""
    if ep.tasks != "from_data":
        return sim.resolve_tasks(ep.tasks)
    if ep.policy == "learned":
        if not info.get("task_names"):
            raise ValueError("eval.tasks=from_data: models/config.json names no task_names; list eval.tasks")
        return tasks_by_name(list(info["task_names"]))
    names = sorted(p.name[: -len("_demo.hdf5")] for p in Path(demos_dir).glob("*_demo.hdf5"))
    if not names:
        raise ValueError(f"eval.tasks=from_data: no *_demo.hdf5 in {demos_dir}; list eval.tasks")
    return tasks_by_name(names)


def tasks_by_name(names: list[str]) -> list[sim.TaskSpec]:
    """Exact task names (file stems: `suite__name` for LIBERO-PRO's tasks) -> TaskSpecs.

    Not sim.resolve_tasks: it treats a name as a scene prefix too, so
    KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet would also pull in
    KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet_and_put_the_black_bowl_on_top_of_it.
    """
    out = []
    for name in names:
        suite, sep, base = name.partition("__")  # a LIBERO-PRO task's file stem: suite__name
        if sep and suite in sim.valid_suites():
            match = next((t for t in sim.suite_tasks(suite) if t.name == base), None)
        else:
            match = next((t for s in sim.SUITES for t in sim.suite_tasks(s) if t.name == name), None)
        if match is None:
            raise ValueError(
                f"unknown task name {name!r} (from the training data); expected a LIBERO task name or a "
                "LIBERO-PRO task's suite__name"
            )
        out.append(match)
    return out
