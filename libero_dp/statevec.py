"""RDT's unified 128-d state/action vector, and where LIBERO's numbers go in it.

RDT (configs/state_vec.py of the public code) gives every robot quantity a fixed slot: the right arm's
end-effector position in [30, 33), its 6D rotation in [33, 39), the right gripper's opening at 10; a vector
carries a 0/1 mask of the slots a robot fills, and the model reads the mask beside the values. LIBERO's
single Panda arm is RDT's right arm. What the numbers *mean* (units, rotation representation, normalisation,
deltas vs poses) is set by the `scale` params, where a user states what the pretrained model expects; this
module only places the scale stage's model-unit dimensions into slots and takes them back out.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

STATE_VEC_LEN = 128
#: LIBERO's robosuite controller runs at 20 Hz; RDT embeds the control frequency (Hz) like a timestep.
LIBERO_CONTROL_HZ = 20

RIGHT_GRIPPER_OPEN = 10
RIGHT_EEF_POS = (30, 31, 32)
RIGHT_EEF_ANGLE = (33, 34, 35, 36, 37, 38)

# The scale stage's dimension names (units.Transform.action_names / proprio_names) -> RDT slots.
_SLOT_OF_NAME = {
    **{n: s for n, s in zip(("x", "y", "z"), RIGHT_EEF_POS, strict=True)},
    **{n: s for n, s in zip(("eef_x", "eef_y", "eef_z"), RIGHT_EEF_POS, strict=True)},
    **{f"r6_{i}": s for i, s in enumerate(RIGHT_EEF_ANGLE)},
    **{f"eef_r6_{i}": s for i, s in enumerate(RIGHT_EEF_ANGLE)},
    "gripper": RIGHT_GRIPPER_OPEN,
    "gripper_width": RIGHT_GRIPPER_OPEN,
}

T = TypeVar("T", np.ndarray, torch.Tensor)


def libero_slots(names: list[str], what: str = "actions") -> tuple[int, ...]:
    """RDT slots for the scale stage's dimension names, in order; names with no slot are a clear error."""
    missing = [n for n in names if n not in _SLOT_OF_NAME]
    if missing:
        raise ValueError(
            f"{what} dimensions {missing} have no slot in RDT's state vector (it has eef position, 6D "
            "rotation and gripper opening): set scale.rot_repr=rot6d for the rdt policy"
        )
    slots = tuple(_SLOT_OF_NAME[n] for n in names)
    if len(set(slots)) != len(slots):
        raise ValueError(f"{what} dimensions {names} map two dimensions to one slot: {slots}")
    return slots


class StateVec:
    """Places D named dimensions into their slots of the 128-d vector (zeros elsewhere) and back."""

    def __init__(self, slots: tuple[int, ...] | list[int], size: int = STATE_VEC_LEN) -> None:
        if not slots or min(slots) < 0 or max(slots) >= size:
            raise ValueError(f"slots {slots} must be non-empty and lie in [0, {size})")
        self.slots = tuple(int(s) for s in slots)
        self.size = size
        self.mask = np.zeros(size, np.float32)
        self.mask[list(self.slots)] = 1.0
        self._index: dict[torch.device, torch.Tensor] = {}

    def index(self, device: torch.device) -> torch.Tensor:
        """The slots as a tensor on `device`, made once: indexing with a Python list would copy it from the
        host on every call, which a CUDA graph cannot capture."""
        if device not in self._index:
            self._index[device] = torch.tensor(self.slots, device=device)
        return self._index[device]

    def lift(self, x: T) -> T:
        """(..., D) -> (..., 128) with x in its slots and zeros in every other one."""
        if x.shape[-1] != len(self.slots):
            raise ValueError(
                f"expected (..., {len(self.slots)}) values for slots {self.slots}, got {x.shape}"
            )
        if isinstance(x, torch.Tensor):
            out = x.new_zeros((*x.shape[:-1], self.size))
            return out.index_copy(-1, self.index(x.device), x)
        out = np.zeros((*x.shape[:-1], self.size), dtype=x.dtype)
        out[..., list(self.slots)] = x
        return out

    def lower(self, v: T) -> T:
        """(..., 128) -> (..., D): the used slots, in order."""
        if v.shape[-1] != self.size:
            raise ValueError(f"expected (..., {self.size}) state vectors, got {tuple(v.shape)}")
        if isinstance(v, torch.Tensor):
            return v.index_select(-1, self.index(v.device))
        return v[..., list(self.slots)]

    def mask_like(self, ref: torch.Tensor) -> torch.Tensor:
        """The 0/1 slot mask as a tensor on ref's device and dtype, (128,)."""
        return torch.as_tensor(self.mask, device=ref.device, dtype=ref.dtype)
