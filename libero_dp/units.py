"""Units, rotation representations and normalisation: LIBERO's raw actions <-> the model's numbers.

Why explicit: in a real RDT fine-tune, positions in metres were ~20x smaller than 6D-rotation values,
the model's outputs left the training range and were clipped. Every conversion here is a param, is
reversible (inverse(forward(x)) == x), and its statistics are saved as a stage output.

LIBERO's OSC_POSE action: dims 0-2 delta position (1.0 commands 0.05 m), dims 3-5 delta rotation as
axis-angle (1.0 commands 0.5 rad), dim 6 gripper (-1 open, +1 close). Proprio comes from the official
obs keys ee_pos (m), ee_ori (axis-angle, rad) and gripper_states (two finger joint positions, m).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

OSC_POS_SCALE = 0.05  # metres commanded by a position action of 1.0 (robosuite OSC_POSE output_max)
OSC_ROT_SCALE = 0.5  # radians commanded by a rotation action of 1.0
POS_FACTORS = {"m": 1.0, "cm": 100.0, "mm": 1000.0}
NORM_MODES = ("none", "minmax", "zscore", "quantile")


def pos_factor(unit: str | float) -> float:
    """Metres -> chosen unit."""
    if isinstance(unit, str):
        if unit not in POS_FACTORS:
            raise ValueError(f"pos_unit {unit!r}: expected one of {sorted(POS_FACTORS)} or a positive number")
        return POS_FACTORS[unit]
    if unit <= 0:
        raise ValueError(f"pos_unit {unit!r}: a numeric factor must be positive")
    return float(unit)


# ---------------------------------------------------------------- rotations
def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, (..., 3) -> (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = aa / safe
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    r = eye + s * kmat + (1 - c) * (kmat @ kmat)
    return np.where((theta > 1e-12)[..., None], r, eye)


def matrix_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Inverse of Rodrigues for rotations below pi (deltas and LIBERO's ee_ori), (..., 3, 3) -> (..., 3)."""
    r = np.asarray(r, dtype=np.float64)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    vec = np.stack(
        [r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1
    )
    sin = np.sin(theta)
    small = sin < 1e-6
    scale = np.where(small, 0.5, theta / (2.0 * np.where(small, 1.0, sin)))
    out = vec * scale[..., None]
    near_pi = small & (theta > 1.0)
    if np.any(near_pi):  # rare: axis from the symmetric part
        rp = r[near_pi]
        axes = np.sqrt(np.clip((np.diagonal(rp, axis1=-2, axis2=-1) + 1.0) / 2.0, 0.0, None))
        signs = np.sign(
            np.stack([np.ones(len(rp)), rp[:, 0, 1] + rp[:, 1, 0], rp[:, 0, 2] + rp[:, 2, 0]], -1)
        )
        signs[signs == 0] = 1.0
        out[near_pi] = axes * signs * theta[near_pi][:, None]
    return out


def matrix_to_rot6d(r: np.ndarray) -> np.ndarray:
    """6D rotation (Zhou et al.): the first two columns, (..., 3, 3) -> (..., 6)."""
    return np.concatenate([r[..., :, 0], r[..., :, 1]], axis=-1)


def rot6d_to_matrix(x: np.ndarray) -> np.ndarray:
    """Gram-Schmidt back to a rotation matrix, so noisy model outputs still decode to a valid rotation."""
    x = np.asarray(x, dtype=np.float64)
    a, b = x[..., :3], x[..., 3:6]
    c0 = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b - np.sum(c0 * b, axis=-1, keepdims=True) * c0
    c1 = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    c2 = np.cross(c0, c1)
    return np.stack([c0, c1, c2], axis=-1)


# ---------------------------------------------------------------- normalisation
@dataclass
class Normaliser:
    """Affine per-dimension map x -> (x - offset) / scale, fitted on the training split."""

    mode: str
    offset: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, x: np.ndarray, mode: str) -> Normaliser:
        if mode not in NORM_MODES:
            raise ValueError(f"norm {mode!r}: expected one of {NORM_MODES}")
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[-1]
        if mode == "none":
            off, sc = np.zeros(d), np.ones(d)
        elif mode == "zscore":
            off, sc = x.mean(0), x.std(0)
        else:
            lo, hi = (x.min(0), x.max(0)) if mode == "minmax" else np.percentile(x, [1, 99], axis=0)
            off, sc = (lo + hi) / 2.0, (hi - lo) / 2.0
        sc = np.where(
            sc < 1e-6, 1.0, sc
        )  # constant dims (e.g. a fixed gripper) stay put instead of blowing up
        return cls(mode, off.tolist(), sc.tolist())

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - np.asarray(self.offset)) / np.asarray(self.scale)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float64) * np.asarray(self.scale) + np.asarray(self.offset)


# ---------------------------------------------------------------- the transform
@dataclass
class Transform:
    """Raw LIBERO actions/proprio <-> physical units <-> normalised model units, and back."""

    pos_unit: str | float = "cm"
    rot_repr: str = "rot6d"
    proprio_repr: str = "pos_rot6d_gripper"
    norm: str = "minmax"
    action_norm: Normaliser | None = None
    proprio_norm: Normaliser | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rot_repr not in ("axis_angle", "rot6d"):
            raise ValueError(f"rot_repr {self.rot_repr!r}: expected 'axis_angle' or 'rot6d'")
        if self.proprio_repr != "pos_rot6d_gripper":
            raise ValueError(f"proprio_repr {self.proprio_repr!r}: expected 'pos_rot6d_gripper'")
        self.factor = pos_factor(self.pos_unit)

    # dims
    @property
    def action_dim(self) -> int:
        return 3 + (6 if self.rot_repr == "rot6d" else 3) + 1

    @property
    def proprio_dim(self) -> int:
        return 3 + 6 + 1

    @property
    def action_names(self) -> list[str]:
        rot = [f"r6_{i}" for i in range(6)] if self.rot_repr == "rot6d" else ["rx", "ry", "rz"]
        return ["x", "y", "z", *rot, "gripper"]

    @property
    def proprio_names(self) -> list[str]:
        return ["eef_x", "eef_y", "eef_z", *[f"eef_r6_{i}" for i in range(6)], "gripper_width"]

    @property
    def rot_slice(self) -> slice:
        return slice(3, self.action_dim - 1)

    # physical <-> raw
    def actions_to_physical(self, raw: np.ndarray) -> np.ndarray:
        """(..., 7) raw LIBERO actions -> position in pos_unit, rotation in rot_repr (radians), gripper."""
        raw = np.asarray(raw, dtype=np.float64)
        pos = raw[..., :3] * OSC_POS_SCALE * self.factor
        aa = raw[..., 3:6] * OSC_ROT_SCALE
        rot = matrix_to_rot6d(axis_angle_to_matrix(aa)) if self.rot_repr == "rot6d" else aa
        return np.concatenate([pos, rot, raw[..., 6:7]], axis=-1)

    def actions_from_physical(self, phys: np.ndarray) -> np.ndarray:
        phys = np.asarray(phys, dtype=np.float64)
        pos = phys[..., :3] / (OSC_POS_SCALE * self.factor)
        rot = phys[..., self.rot_slice]
        aa = matrix_to_axis_angle(rot6d_to_matrix(rot)) if self.rot_repr == "rot6d" else rot
        return np.concatenate([pos, aa / OSC_ROT_SCALE, phys[..., -1:]], axis=-1)

    def proprio_to_physical(self, ee_pos: np.ndarray, ee_ori: np.ndarray, gripper: np.ndarray) -> np.ndarray:
        """eef position (pos_unit), 6D orientation, gripper opening (finger gap, pos_unit)."""
        pos = np.asarray(ee_pos, dtype=np.float64) * self.factor
        r6 = matrix_to_rot6d(axis_angle_to_matrix(ee_ori))
        g = np.asarray(gripper, dtype=np.float64)
        width = (g[..., 0:1] - g[..., 1:2]) * self.factor
        return np.concatenate([pos, r6, width], axis=-1)

    # model units
    def fit(
        self, raw_actions: np.ndarray, ee_pos: np.ndarray, ee_ori: np.ndarray, gripper: np.ndarray
    ) -> None:
        """Fit normalisers on the training split only."""
        self.action_norm = Normaliser.fit(self.actions_to_physical(raw_actions), self.norm)
        self.proprio_norm = Normaliser.fit(self.proprio_to_physical(ee_pos, ee_ori, gripper), self.norm)

    def _need_fit(self) -> None:
        if self.action_norm is None or self.proprio_norm is None:
            raise RuntimeError("Transform is not fitted: call fit() or Transform.load(stats.json)")

    def actions_to_model(self, raw: np.ndarray) -> np.ndarray:
        self._need_fit()
        return self.action_norm.forward(self.actions_to_physical(raw)).astype(np.float32)

    def actions_from_model(self, x: np.ndarray) -> np.ndarray:
        """(..., Da) model outputs -> (..., 7) raw LIBERO actions, NOT clipped (eval clips and counts)."""
        self._need_fit()
        return self.actions_from_physical(self.action_norm.inverse(x))

    def proprio_to_model(self, ee_pos: np.ndarray, ee_ori: np.ndarray, gripper: np.ndarray) -> np.ndarray:
        self._need_fit()
        return self.proprio_norm.forward(self.proprio_to_physical(ee_pos, ee_ori, gripper)).astype(np.float32)

    # persistence
    def to_dict(self) -> dict:
        self._need_fit()
        return {
            "pos_unit": self.pos_unit,
            "pos_factor_m_to_unit": self.factor,
            "osc_pos_scale_m": OSC_POS_SCALE,
            "osc_rot_scale_rad": OSC_ROT_SCALE,
            "rot_repr": self.rot_repr,
            "proprio_repr": self.proprio_repr,
            "norm": self.norm,
            "action_names": self.action_names,
            "proprio_names": self.proprio_names,
            "action_norm": asdict(self.action_norm),
            "proprio_norm": asdict(self.proprio_norm),
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        from libero_dp.fileio import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Transform:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            t = cls(d["pos_unit"], d["rot_repr"], d["proprio_repr"], d["norm"], meta=d.get("meta", {}))
            t.action_norm = Normaliser(**d["action_norm"])
            t.proprio_norm = Normaliser(**d["proprio_norm"])
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path}: not a valid transform file ({e!r}); expected the scale stage's stats.json"
            ) from None
        return t


def magnitude_ratio(phys_actions: np.ndarray, rot_slice: slice) -> float:
    """max |position| / max |rotation| over a set of physical-unit actions (the seed's failure signal)."""
    pos = float(np.max(np.abs(phys_actions[..., :3])))
    rot = float(np.max(np.abs(phys_actions[..., rot_slice])))
    return pos / rot if rot > 0 else float("inf")
