"""The official LIBERO demo HDF5 layout: writing our demos in it, and reading + validating any file in it.

Layout (LIBERO scripts/create_dataset.py): group `data` with attrs env_name, problem_info (JSON),
macros_image_convention, bddl_file_name, bddl_file_content, env_args (JSON), num_demos, total;
`data/demo_i` with actions (T,7), states (T,D), robot_states (T,9), rewards (T,), dones (T,),
attrs num_samples, model_file, init_state; `data/demo_i/obs` with agentview_rgb, eye_in_hand_rgb
(T,S,S,3 uint8, OpenGL convention = upside down), ee_pos, ee_ori, ee_states, gripper_states, joint_states.
obs[j] is the observation returned by env.step(actions[j]), as in the official files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from libero_dp.fileio import atomic_path

OBS_IMAGE_KEYS = ("agentview_rgb", "eye_in_hand_rgb")
#: obs keys the pipeline needs from every demo, with their trailing shape (None = image size, checked apart)
REQUIRED_OBS = {"ee_pos": (3,), "ee_ori": (3,), "gripper_states": (2,), "joint_states": (7,)}
DEMO_RE = re.compile(r"^demo_(\d+)$")


class DemoFileError(ValueError):
    """Bad input: the message names the file, the demo and key, and what was expected."""


@dataclass
class Demo:
    """One demonstration in the official layout (plus our provenance: reset seed and success step)."""

    actions: np.ndarray
    states: np.ndarray
    robot_states: np.ndarray
    obs: dict[str, np.ndarray]
    model_file: str
    reset_seed: int | None = None
    success_step: int | None = None
    extra_attrs: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.actions)


def write_task_file(
    path: str | Path,
    demos: list[Demo],
    *,
    env_name: str,
    problem_name: str,
    domain_name: str,
    language: str,
    bddl_file: str,
    env_kwargs: dict,
    compression: str | None = "gzip",
) -> None:
    """Write demos as one official-layout file, atomically (temp file, then rename)."""
    bddl_text = Path(bddl_file).read_text() if Path(bddl_file).exists() else ""
    with atomic_path(path, ".hdf5") as tmp, h5py.File(tmp, "w") as f:
        g = f.create_group("data")
        g.attrs["env_name"] = env_name
        g.attrs["problem_info"] = json.dumps(
            {"problem_name": problem_name, "domain_name": domain_name, "language_instruction": language}
        )
        g.attrs["macros_image_convention"] = "opengl"
        g.attrs["bddl_file_name"] = bddl_file
        g.attrs["bddl_file_content"] = bddl_text
        g.attrs["env_args"] = json.dumps(
            {
                "type": 1,
                "env_name": env_name,
                "problem_name": problem_name,
                "bddl_file": bddl_file,
                "env_kwargs": env_kwargs,
            }
        )
        total = 0
        for i, d in enumerate(demos):
            dg = g.create_group(f"demo_{i}")
            t = d.length
            dg.create_dataset("actions", data=np.asarray(d.actions, dtype=np.float64))
            dg.create_dataset("states", data=np.asarray(d.states, dtype=np.float64))
            dg.create_dataset("robot_states", data=np.asarray(d.robot_states, dtype=np.float64))
            rewards = np.zeros(t, dtype=np.uint8)
            rewards[-1] = 1
            dg.create_dataset("rewards", data=rewards)
            dg.create_dataset("dones", data=rewards.copy())
            og = dg.create_group("obs")
            for k, v in d.obs.items():
                if k in OBS_IMAGE_KEYS:
                    og.create_dataset(
                        k, data=v, dtype=np.uint8, chunks=(1, *v.shape[1:]), compression=compression
                    )
                else:
                    og.create_dataset(k, data=np.asarray(v, dtype=np.float64))
            dg.attrs["num_samples"] = t
            dg.attrs["model_file"] = d.model_file
            dg.attrs["init_state"] = np.asarray(d.states[0], dtype=np.float64)
            if d.reset_seed is not None:
                dg.attrs["reset_seed"] = int(d.reset_seed)
            if d.success_step is not None:
                dg.attrs["success_step"] = int(d.success_step)
            for k, v in d.extra_attrs.items():
                dg.attrs[k] = v
            total += t
        g.attrs["num_demos"] = len(demos)
        g.attrs["total"] = total


def demo_keys(group: h5py.Group) -> list[str]:
    """demo_* keys in numeric order (as strings demo_10 sorts before demo_2)."""
    keys = [k for k in group.keys() if DEMO_RE.match(k)]
    return sorted(keys, key=lambda k: int(DEMO_RE.match(k).group(1)))


@dataclass
class TaskFile:
    """A validated official-layout file: its instruction and demo keys; arrays are read per demo."""

    path: Path
    language: str
    problem_name: str
    demos: list[str]
    lengths: list[int]
    image_size: int
    #: per demo, the first action index the policy learns from: max(num_steps_wait, 1). Our files mark
    #: their leading no-op wait steps with the attr `num_steps_wait`; official files have none (0).
    first_action: list[int] = field(default_factory=list)


def _err(path: Path, where: str, msg: str) -> DemoFileError:
    return DemoFileError(f"{path}: {where}: {msg}")


@contextmanager
def readable(path: str | Path, where: str = "") -> Iterator[None]:
    """h5py's own OSError (a truncated or corrupted file, a chunk that does not decompress) comes without the
    file's name: re-raise it as a DemoFileError naming the file (and the demo/key being read)."""
    try:
        yield
    except OSError as e:
        at = f"{where}: " if where else ""
        raise DemoFileError(
            f"{path}: {at}HDF5 cannot read it ({e}); expected a complete, readable LIBERO *_demo.hdf5 file "
            "(truncated or corrupted: copy or collect it again)"
        ) from None


def _check_array(
    path: Path, where: str, ds: object, dtype_kind: str, trailing: tuple, length: int | None
) -> None:
    if not isinstance(ds, h5py.Dataset):
        raise _err(path, where, "expected a dataset, found a group")
    if ds.dtype.kind not in dtype_kind:
        kinds = {"f": "float", "u": "unsigned int", "i": "int"}
        exp = " or ".join(kinds[k] for k in dtype_kind)
        raise _err(path, where, f"expected dtype {exp}, got {ds.dtype}")
    if ds.ndim != 1 + len(trailing) or tuple(ds.shape[1:]) != tuple(trailing):
        raise _err(path, where, f"expected shape (T, {', '.join(map(str, trailing))}), got {ds.shape}")
    if length is not None and ds.shape[0] != length:
        raise _err(path, where, f"length {ds.shape[0]} does not match actions length {length}")
    if ds.dtype.kind == "f":
        data = ds[()]
        if not np.all(np.isfinite(data)):
            bad = int(np.argwhere(~np.isfinite(data))[0][0])
            raise _err(path, where, f"contains NaN/inf (first at step {bad}); expected finite values")


def _check_demo(
    path: Path, k: str, d: h5py.Group, min_length: int, image_size: int | None
) -> tuple[int, int, int]:
    """One demo's datasets and attrs; returns (length, first action index, image size)."""
    if "actions" not in d:
        raise _err(path, f"data/{k}/actions", "missing dataset")
    _check_array(path, f"data/{k}/actions", d["actions"], "f", (7,), None)
    t = d["actions"].shape[0]
    if t == 0:
        raise _err(path, f"data/{k}", "empty demo (0 steps)")
    if t < min_length:
        raise _err(
            path,
            f"data/{k}",
            f"demo has {t} steps; expected at least extract.min_length={min_length}",
        )
    if "obs" not in d:
        raise _err(path, f"data/{k}/obs", "missing group")
    for ik in OBS_IMAGE_KEYS:
        if ik not in d["obs"]:
            raise _err(path, f"data/{k}/obs/{ik}", "missing dataset")
        ds = d["obs"][ik]
        if ds.dtype != np.uint8 or ds.ndim != 4 or ds.shape[-1] != 3 or ds.shape[1] != ds.shape[2]:
            raise _err(path, f"data/{k}/obs/{ik}", f"expected uint8 (T, S, S, 3), got {ds.dtype} {ds.shape}")
        if ds.shape[0] != t:
            raise _err(path, f"data/{k}/obs/{ik}", f"length {ds.shape[0]} does not match actions length {t}")
        if image_size is None:
            image_size = ds.shape[1]
        elif ds.shape[1] != image_size:
            raise _err(path, f"data/{k}/obs/{ik}", f"image size {ds.shape[1]} differs from {image_size}")
    for ok, trailing in REQUIRED_OBS.items():
        if ok not in d["obs"]:
            raise _err(path, f"data/{k}/obs/{ok}", "missing dataset")
        _check_array(path, f"data/{k}/obs/{ok}", d["obs"][ok], "f", trailing, t)
    wait = int(d.attrs.get("num_steps_wait", 0))
    if not 0 <= wait < t - 1:
        raise _err(path, f"data/{k}.attrs['num_steps_wait']", f"expected 0 <= value < {t - 1}, got {wait}")
    return t, max(wait, 1), int(image_size)


def validate_task_file(path: str | Path, min_length: int = 1) -> TaskFile:
    """Open and check every demo of a file; raise DemoFileError naming file, demo and key on any problem."""
    path = Path(path)
    if not path.exists():
        raise DemoFileError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise DemoFileError(f"{path}: not an HDF5 file; expected a LIBERO *_demo.hdf5 file")
    with readable(path):
        f = h5py.File(path, "r")
    with f, readable(path):
        if "data" not in f:
            raise _err(path, "/", "missing group 'data' (official LIBERO layout)")
        g = f["data"]
        if "problem_info" not in g.attrs:
            raise _err(path, "data", "missing attribute 'problem_info' (JSON with language_instruction)")
        try:
            info = json.loads(g.attrs["problem_info"])
            language = str(info["language_instruction"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise _err(
                path, "data.attrs['problem_info']", f"expected JSON with 'language_instruction' ({e})"
            ) from None
        keys = demo_keys(g)
        if not keys:
            raise _err(path, "data", "no demo_<i> groups; expected at least one demonstration")
        lengths, firsts, image_size = [], [], None
        for k in keys:
            with readable(path, f"data/{k}"):  # an unreadable chunk names its demo
                t, first, image_size = _check_demo(path, k, g[k], min_length, image_size)
            lengths.append(t)
            firsts.append(first)
        problem = str(info.get("problem_name", ""))
    return TaskFile(path, language, problem, keys, lengths, int(image_size), firsts)


def read_demo(path: str | Path, key: str) -> dict[str, np.ndarray]:
    """Arrays of one demo (after validation), as a flat dict: actions, obs keys, states if present."""
    out: dict[str, np.ndarray] = {}
    with readable(path, f"data/{key}"), h5py.File(path, "r") as f:
        d = f["data"][key]
        out["actions"] = d["actions"][()]
        for k in (*OBS_IMAGE_KEYS, *REQUIRED_OBS):
            out[k] = d["obs"][k][()]
        for k in ("states", "robot_states"):
            if k in d:
                out[k] = d[k][()]
        for k in ("init_state", "reset_seed", "model_file"):
            if k in d.attrs:
                out[k] = d.attrs[k]
    return out
