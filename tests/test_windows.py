"""Windows: chunk padding, validity mask and image history, on real demos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from libero_dp.config import WindowsParams
from libero_dp.windows import WindowDataset, demo_windows


def test_demo_windows_71_steps_indices() -> None:
    w = demo_windows(100, 171, horizon=64, history=2)
    assert w["frame"].shape == (71,) and w["chunk"].shape == (71, 64) and w["hist"].shape == (71, 2)
    # t=0..7: the whole chunk lies inside the demo
    assert np.array_equal(w["chunk"][0], np.arange(100, 164)) and w["mask"][:8].all()
    # t=8: 63 real actions, then the last action (index 170) repeated once, masked out
    assert np.array_equal(w["chunk"][8], np.r_[np.arange(108, 171), 170])
    assert w["mask"][8].sum() == 63 and not w["mask"][8][-1]
    # last frame: a single valid action then padding
    assert (w["chunk"][70] == 170).all() and w["mask"][70].sum() == 1 and w["mask"][70][0]
    # history: the first frame is repeated at the demo start, oldest first
    assert w["hist"][0].tolist() == [100, 100] and w["hist"][1].tolist() == [100, 101]
    assert w["hist"][70].tolist() == [169, 170]


def test_windows_param_errors() -> None:
    with pytest.raises(ValidationError, match="horizon"):
        WindowsParams(horizon=0)
    with pytest.raises(ValidationError, match="image_history"):
        WindowsParams(image_history=0)


@pytest.mark.sim
def test_71_step_real_demo_padding(tiny_scaled, tiny_extracted) -> None:
    """A 71-step window of a real demo: actions gathered through the index equal slicing + edge padding."""
    episodes = json.loads((tiny_extracted / "episodes.json").read_text())
    ep = max(episodes, key=lambda e: e["end"] - e["start"])
    assert ep["end"] - ep["start"] >= 71, "expert demos are expected to be longer than 71 steps"
    actions = np.load(tiny_scaled / "actions.npy")
    frames = np.load(tiny_extracted / "frames" / "agentview_rgb.npy", mmap_mode="r")
    s, e = ep["start"], ep["start"] + 71
    demo = actions[s:e]
    w = demo_windows(s, e, horizon=64, history=2)
    for t in range(71):
        expect = demo[t : t + 64]
        expect = np.concatenate([expect, np.repeat(demo[-1:], 64 - len(expect), axis=0)])
        np.testing.assert_array_equal(actions[w["chunk"][t]], expect)
        assert w["mask"][t].sum() == min(64, 71 - t)
        prev = max(t - 1, 0)
        np.testing.assert_array_equal(frames[w["hist"][t]], np.stack([frames[s + prev], frames[s + t]]))


@pytest.mark.sim
def test_window_dataset_items(tiny_windows) -> None:
    ds = WindowDataset(tiny_windows, "train")
    item = ds[len(ds) - 1]
    assert item["actions"].shape == (16, ds.action_dim) and item["actions"].dtype == np.float32
    assert item["images"].shape == (2, 2, 64, 64, 3) and item["images"].dtype == np.uint8
    assert item["proprio"].shape == (ds.proprio_dim,)
    assert item["mask"][0] and not item["mask"][-1]  # the last frame of a demo: one valid action
    val = WindowDataset(tiny_windows, "val")
    assert len(val) > 0 and ds.languages == ["close the top drawer of the cabinet"]
    counts = json.loads((tiny_windows / "meta.json").read_text())
    assert counts["horizon"] == 16
