"""Units and normalisation: exact inverses, magnitudes, and the seed's failure visible as a number."""

from __future__ import annotations

import json

import numpy as np
import pytest

from libero_dp.units import (
    NORM_MODES,
    Normaliser,
    Transform,
    axis_angle_to_matrix,
    magnitude_ratio,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    pos_factor,
    rot6d_to_matrix,
)


def test_rotation_round_trips() -> None:
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(500, 3))
    aa *= rng.uniform(0, 3.0, size=(500, 1)) / np.linalg.norm(aa, axis=1, keepdims=True)
    r = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(r), aa, atol=1e-9)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(r)), r, atol=1e-12)


def test_pos_units() -> None:
    assert pos_factor("m") == 1.0 and pos_factor("cm") == 100.0 and pos_factor("mm") == 1000.0
    assert pos_factor(250.0) == 250.0
    with pytest.raises(ValueError, match="pos_unit"):
        pos_factor("inch")
    t = Transform("cm", "axis_angle", norm="none")
    phys = t.actions_to_physical(np.array([[1.0, -0.5, 0, 1.0, 0, 0, -1]]))
    # an action of 1 commands 0.05 m = 5 cm, a rotation action of 1 commands 0.5 rad
    np.testing.assert_allclose(phys[0], [5.0, -2.5, 0, 0.5, 0, 0, -1])


def test_normaliser_modes_constant_dim() -> None:
    x = np.c_[np.linspace(-3, 7, 101), np.full(101, 2.0)]
    for mode in NORM_MODES:
        n = Normaliser.fit(x, mode)
        y = n.forward(x)
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(n.inverse(y), x, atol=1e-12)
    mm = Normaliser.fit(x, "minmax").forward(x)
    assert mm[:, 0].min() == pytest.approx(-1) and mm[:, 0].max() == pytest.approx(1)


@pytest.mark.sim
def test_inverse_forward_on_real_demos(tiny_extracted) -> None:
    """inverse(forward(x)) == x within 1e-6 on real demos, for every unit, rotation and norm mode."""
    a = np.load(tiny_extracted / "actions.npy")
    pos, ori = np.load(tiny_extracted / "ee_pos.npy"), np.load(tiny_extracted / "ee_ori.npy")
    grip = np.load(tiny_extracted / "gripper_states.npy")
    for unit in ("m", "cm", "mm", 37.5):
        for rot in ("axis_angle", "rot6d"):
            for mode in NORM_MODES:
                t = Transform(unit, rot, norm=mode)
                t.fit(a, pos, ori, grip)
                back = t.actions_from_model(t.actions_to_model(a).astype(np.float64))
                assert np.abs(back - a).max() < 1e-6, (unit, rot, mode)
                prop = t.proprio_norm.inverse(t.proprio_to_model(pos, ori, grip))
                np.testing.assert_allclose(prop, t.proprio_to_physical(pos, ori, grip), atol=1e-4)


@pytest.mark.sim
def test_scale_stage_outputs(tiny_scaled, tiny_extracted) -> None:
    t = Transform.load(tiny_scaled / "stats.json")
    a = np.load(tiny_extracted / "actions.npy")
    m = np.load(tiny_scaled / "actions.npy")
    assert m.shape == (len(a), t.action_dim) and m.dtype == np.float32
    np.testing.assert_allclose(t.actions_from_model(m), a, atol=1e-5)
    split = json.loads((tiny_scaled / "split.json").read_text())
    assert split["train"] and split["val"] and not set(split["train"]) & set(split["val"])
    phys_m = Transform("m", "rot6d", norm="none").actions_to_physical(a)
    phys_cm = Transform("cm", "rot6d", norm="none").actions_to_physical(a)
    assert magnitude_ratio(phys_cm, slice(3, 9)) == pytest.approx(100 * magnitude_ratio(phys_m, slice(3, 9)))


def test_transform_load_errors(tmp_path) -> None:
    bad = tmp_path / "stats.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="stats.json"):
        Transform.load(bad)
