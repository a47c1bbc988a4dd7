"""Language grounding within a scene: does the policy do what it is told, or what the scene suggests?

For two tasks A and B of one suite whose task files declare identical objects and fixtures (one scene), an
episode starts from A's official init state k, runs B's env and gives the policy B's instruction (the expert:
B's goal). Its outcome is read from the final sim state: `followed` (B's goal holds; A's may hold too when B
contains it), `ignored` (only A's goal holds: the policy did the task the scene was set up for), `neither`.
An episode whose B goal already holds at A's init state, or whose init state does not fit B's scene, is
`skipped` (nothing to follow). Enabled by `eval.grounding_inits` > 0; such episodes are kept apart from the
protocol's success rates and summarised in metrics/eval.json under `grounding`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from libero_dp import sim
from libero_dp.evaluate.protocol import EpisodeSpec
from libero_dp.metrics import rate_summary

OUTCOMES = ("followed", "ignored", "neither")


def _block(text: str, name: str) -> str:
    m = re.search(rf"\(:{name}(.*?)\n\s*\)", text, re.S)
    return " ".join(m.group(1).split()) if m else ""


def scene_signature(task: sim.TaskSpec) -> tuple[str, str, str]:
    """(suite, objects, fixtures) of the task file: tasks with equal signatures share a scene."""
    text = Path(task.bddl_file).read_text()
    return task.suite, _block(text, "objects"), _block(text, "fixtures")


def scene_pairs(tasks: list[sim.TaskSpec]) -> list[tuple[sim.TaskSpec, sim.TaskSpec]]:
    """Every ordered pair (A, B), A != B, of tasks in one scene, in the order of `tasks`."""
    groups: dict[tuple[str, str, str], list[sim.TaskSpec]] = defaultdict(list)
    for t in tasks:
        groups[scene_signature(t)].append(t)
    return [(a, b) for g in groups.values() for a in g for b in g if a.key != b.key]


def grounding_specs(
    a: sim.TaskSpec,
    b: sim.TaskSpec,
    seeds: list[int],
    inits: int,
    wait_steps: int,
    max_steps: int,
    language: str,
) -> list[EpisodeSpec]:
    """B's episodes from A's official init states 0..inits-1 (reset seed as the protocol's episode i)."""
    states = sim.official_init_states(a)
    return [
        EpisodeSpec(
            b,
            i,
            s,
            s * 1000 + i,
            states[i % len(states)],
            wait_steps,
            max_steps,
            language,
            init_index=i % len(states),
            grounding_from=a,
        )
        for s in seeds
        for i in range(inits)
    ]


def skip_reason(env_b: Any, spec: EpisodeSpec) -> str | None:
    """Why an episode has nothing to test (checked in B's env before it runs), else None."""
    assert spec.init_state is not None
    if len(spec.init_state) != len(sim.get_state(env_b)):
        return "A's init state does not fit B's scene"
    sim.reset_to(env_b, spec.reset_seed, spec.init_state)
    if sim.check_success(env_b):
        return "B's goal holds at A's init state"
    return None


def a_goal_holds(env_a: Any, spec: EpisodeSpec, final_state: np.ndarray) -> bool:
    """A's goal on B's final state (A's env: same scene, A's goal predicates)."""
    sim.reset_to(env_a, spec.reset_seed, spec.init_state)
    sim.set_state(env_a, final_state)
    return bool(sim.check_success(env_a))


def outcome(b_success: bool, a_holds: bool) -> str:
    # B holding is following, whether or not A also holds ("turn on the stove and put the pan on it" after
    # "turn on the stove")
    return "followed" if b_success else "ignored" if a_holds else "neither"


def grounding_fields(spec: EpisodeSpec) -> dict[str, Any]:
    assert spec.grounding_from is not None
    return {"from_task": spec.grounding_from.label, "instruction": spec.language}


def summarise(records: list[dict]) -> dict[str, Any] | None:
    """Followed / ignored / neither overall, per scene (`suite/scene`) and per pair; None when no grounding
    episode ran."""
    gr = [r for r in records if r.get("grounding")]
    if not gr:
        return None
    done = [r for r in gr if r["grounding"]["outcome"] in OUTCOMES]

    def rates(rs: list[dict]) -> dict[str, Any]:
        c = Counter(r["grounding"]["outcome"] for r in rs)
        return {
            **rate_summary(c["followed"], len(rs)),
            **{o: c[o] for o in OUTCOMES},
            "failures": dict(
                Counter(r.get("failure") for r in rs if r["grounding"]["outcome"] != "followed")
            ),
        }

    by_scene: dict[str, list[dict]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in done:
        by_scene[f"{r['suite']}/{r['scene']}"].append(r)
        by_pair[(r["grounding"]["from_task"], r["task"])].append(r)
    return {
        "overall": rates(done) if done else None,
        "per_scene": {s: rates(rs) for s, rs in sorted(by_scene.items())},
        # a list, not a mapping: pairs are many (libero_90: 200+) and stay out of MLflow's flattened metrics
        "per_pair": [{"from": a, "to": b, **rates(rs)} for (a, b), rs in sorted(by_pair.items())],
        "skipped": dict(Counter(r["grounding"]["why"] for r in gr if r["grounding"]["outcome"] == "skipped")),
        "pairs": len({(r["grounding"]["from_task"], r["task"]) for r in gr}),
        "episodes": len(gr),
    }


def scene_of(task: sim.TaskSpec) -> str:
    """The scene a pair belongs to: the name's scene prefix (libero_90: KITCHEN_SCENE3), else the suite's
    (libero_goal's ten tasks share one scene)."""
    m = re.match(r"^([A-Z_]*SCENE\d+)_", task.name)
    return m.group(1) if m else task.suite
