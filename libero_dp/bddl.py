"""LIBERO task definitions (bddl files): goal predicates, object categories, skill families.

The goal, not the language instruction, says what success needs (task 38 also needs the stove on),
so plans and per-family tables are both read from here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from libero_dp.sim import TaskSpec


def _sexpr(text: str) -> list[Any]:
    """Parse an s-expression string into nested lists of tokens (bddl is PDDL-like)."""
    tokens = re.findall(r"\(|\)|[^\s()]+", re.sub(r";[^\n]*", "", text))
    stack: list[list[Any]] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    return stack[0]


def _section(tree: list[Any], key: str) -> list[Any] | None:
    for node in tree:
        if isinstance(node, list):
            if node and node[0] == key:
                return node
            found = _section(node, key)
            if found is not None:
                return found
    return None


def parse_goal(bddl_text: str) -> list[tuple[str, ...]]:
    """The goal predicates, e.g. [("close", "wooden_cabinet_1_top_region")]; `And` is flattened."""
    goal = _section(_sexpr(bddl_text), ":goal")
    if goal is None:
        raise ValueError("bddl file has no (:goal ...) section")
    out: list[tuple[str, ...]] = []

    def walk(node: list[Any]) -> None:
        if node and isinstance(node[0], str) and node[0].lower() == "and":
            for child in node[1:]:
                walk(child)
        elif node and all(isinstance(x, str) for x in node):
            out.append((node[0].lower(), *node[1:]))
        else:
            raise ValueError(f"unsupported goal expression {node!r}")

    for node in goal[1:]:
        walk(node)
    return out


def parse_categories(bddl_text: str) -> dict[str, str]:
    """Instance name -> category from (:objects ...) and (:fixtures ...) (`butter_1 butter_2 - butter`)."""
    tree = _sexpr(bddl_text)
    out: dict[str, str] = {}
    for key in (":objects", ":fixtures"):
        sec = _section(tree, key)
        names: list[str] = []
        items = sec[1:] if sec else []
        i = 0
        while i < len(items):
            if items[i] == "-" and i + 1 < len(items):
                out.update({n: items[i + 1] for n in names})
                names = []
                i += 2
            else:
                names.append(items[i])
                i += 1
    return out


#: Skill families of libero_90, from the goal predicates (see task_family).
FAMILIES = (
    "onto_object",
    "relative_placement",
    "stack",
    "into_basket",
    "into_tray",
    "into_caddy",
    "into_drawer",
    "into_shelf",
    "drawer_articulation",
    "microwave",
    "stove",
    "two_goal",
)


def task_family(goal: list[tuple[str, ...]], categories: dict[str, str]) -> str:
    """The skill family of a task, read from its goal predicates (never from the sentence)."""
    if len(goal) > 1:
        if all(g[0] in ("open", "close") and "cabinet" in g[1] for g in goal):
            return "drawer_articulation"
        return "two_goal"
    pred, *args = goal[0]
    if pred in ("open", "close"):
        return "microwave" if "microwave" in args[0] else "drawer_articulation"
    if pred in ("turnon", "turnoff"):
        return "stove"
    obj, target = args
    if pred == "in" or "_region" in target and "table" not in target:
        for key, fam in (
            ("basket", "into_basket"),
            ("tray", "into_tray"),
            ("caddy", "into_caddy"),
            ("cabinet", "into_drawer"),
            ("shelf", "into_shelf"),
        ):
            if key in target:
                return fam
    if "_table_" in target:
        return "relative_placement"
    if categories.get(obj) and categories.get(obj) == categories.get(target):
        return "stack"
    return "onto_object"


def family_of(task: TaskSpec) -> str:
    """Skill family of `task` from its bddl file."""
    with open(task.bddl_file) as fh:
        text = fh.read()
    return task_family(parse_goal(text), parse_categories(text))
