"""MP4 encoding of rendered frames (imageio + imageio-ffmpeg), as bytes that workers ship to the driver."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

import numpy as np


def encode_mp4(frames: Iterable[np.ndarray], fps: float = 20.0) -> bytes:
    """(H, W, 3) uint8 frames -> H.264 MP4 bytes.

    Returned as bytes (not written in place) because the episode ran on a worker that may not share the
    driver's filesystem. H and W must be multiples of 16 (ffmpeg's macro blocks) to avoid a resize.
    """
    import imageio.v2 as imageio

    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            quality=7,
            macro_block_size=16,
            pixelformat="yuv420p",
            ffmpeg_log_level="error",
        )
        n = 0
        try:
            for f in frames:
                writer.append_data(np.ascontiguousarray(f, dtype=np.uint8))
                n += 1
        finally:
            writer.close()
        if n == 0:
            raise ValueError("encode_mp4: no frames given")
        with open(tmp, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(tmp)


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """All frames of an MP4 as (T, H, W, 3) uint8 (for tests and reports)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
