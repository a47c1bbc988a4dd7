"""Instruction embeddings: MiniLM token states, padding mask, and the memory and disk caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from libero_dp import language
from libero_dp.language import DIM, MAX_TOKENS, embed_instructions, language_table

DRAWER = "close the top drawer of the cabinet"  # 7 word pieces + [CLS] + [SEP]
BOWL = "pick up the black bowl between the plate and the ramekin and place it on the plate"


@pytest.fixture
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(language, "_memory", {})


def test_token_states_and_mask(fresh_memory: None) -> None:
    out = embed_instructions([DRAWER, BOWL, DRAWER])
    assert list(out) == [DRAWER, BOWL]
    emb, mask = out[DRAWER]
    assert emb.shape == (MAX_TOKENS, DIM) and emb.dtype == np.float32 and mask.dtype == bool
    assert mask.sum() == 9 and mask[:9].all()
    assert np.abs(emb[:9]).sum(1).min() > 0 and not emb[9:].any()
    assert out[BOWL][1].sum() > mask.sum()
    table, table_mask = language_table([BOWL, DRAWER])
    np.testing.assert_array_equal(table[1], emb)
    assert table.shape == (2, MAX_TOKENS, DIM) and table_mask.shape == (2, MAX_TOKENS)


def test_disk_cache(fresh_memory: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lang.safetensors"
    first = embed_instructions([DRAWER], path)[DRAWER]
    embed_instructions([BOWL], path)  # a second text joins the file, the first stays
    monkeypatch.setattr(language, "_memory", {})
    monkeypatch.setattr(language, "_model", lambda: pytest.fail("MiniLM loaded despite the disk cache"))
    again = embed_instructions([DRAWER, BOWL], path, update_cache=False)
    np.testing.assert_array_equal(again[DRAWER][0], first[0])
    np.testing.assert_array_equal(again[DRAWER][1], first[1])
    assert set(language._read_cache(path)) == {DRAWER, BOWL}


def test_cache_of_another_model_is_ignored(
    fresh_memory: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lang.safetensors"
    embed_instructions([DRAWER], path)
    monkeypatch.setattr(language, "MODEL_ID", "another model")
    assert language._read_cache(path, language.model_id()) == {}  # model_id() reads MODEL_ID now


def test_too_long_instruction(fresh_memory: None) -> None:
    with pytest.raises(ValueError, match="tokens"):
        embed_instructions([" ".join(["drawer"] * MAX_TOKENS)])


def test_bundled_cache_replaces_the_model(
    fresh_memory: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host without MiniLM reads LIBERO_DP_LANGUAGE_CACHE (the offline bundle's) and gets the same vectors;
    a path that names no file is a clear error, not a silent fall-back to the model."""
    bundled = tmp_path / "bundle_lang.safetensors"
    want = embed_instructions([DRAWER, BOWL], bundled)
    monkeypatch.setattr(language, "_memory", {})
    monkeypatch.setattr(language, "_model", lambda: pytest.fail("MiniLM loaded despite the bundled cache"))
    monkeypatch.setenv(language.BUNDLED_ENV, str(bundled))
    run_cache = tmp_path / "run" / "language.safetensors"
    run_cache.parent.mkdir()
    got = embed_instructions([BOWL], run_cache)
    np.testing.assert_array_equal(got[BOWL][0], want[BOWL][0])
    assert set(language._read_cache(run_cache)) == {BOWL}  # the run's own cache holds only what it used
    monkeypatch.setattr(language, "_memory", {})
    monkeypatch.setenv(language.BUNDLED_ENV, str(tmp_path / "missing.safetensors"))
    with pytest.raises(FileNotFoundError, match="LIBERO_DP_LANGUAGE_CACHE"):
        embed_instructions([DRAWER])
