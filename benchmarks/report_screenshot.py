"""Open the report in headless Chromium, screenshot it and check the page is not blank.

Why: the HTML tests check every image decodes, but only a browser shows that the page actually lays out and
paints (CSS, embedded PNGs, video elements). Needs /usr/bin/chromium (`apt-get install -y chromium`).
Usage: python benchmarks/report_screenshot.py [reports/index.html] [--out benchmarks/results/report.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


def image_stats(png: Path) -> dict[str, float]:
    """Pixel spread and colour count: a blank or error page is one flat colour with a few text pixels."""
    with Image.open(png) as im:
        a = np.asarray(im.convert("RGB"))
    q = (a // 16).reshape(-1, 3)
    colours = len(np.unique(q[:, 0].astype(np.int32) * 256 + q[:, 1] * 16 + q[:, 2]))
    white = float((a.min(axis=2) > 245).mean())
    return {
        "width": a.shape[1],
        "height": a.shape[0],
        "std": float(a.std()),
        "colours": colours,
        "white_fraction": white,
    }


def screenshot(html: Path, png: Path, size: str = "1280,2000", timeout: float = 180.0) -> dict[str, float]:
    """Screenshot `html` into `png` with a throwaway profile; return image_stats plus the wall time."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (apt-get install -y chromium)")
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.exists():
        raise FileNotFoundError(f"{html}: no report; run `dvc repro report` first")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [
            exe,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={size}",
            html.as_uri(),
        ]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot (rc {res.returncode}): {res.stderr[-800:]}")
    return {**image_stats(png), "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?", default="reports/index.html", type=Path)
    ap.add_argument("--out", default="benchmarks/results/report_screenshot.png", type=Path)
    ap.add_argument("--min-std", type=float, default=20.0)
    ap.add_argument("--min-colours", type=int, default=50)
    args = ap.parse_args(argv)
    stats = screenshot(args.html, args.out)
    ok = stats["std"] > args.min_std and stats["colours"] > args.min_colours
    print(json.dumps({**stats, "screenshot": str(args.out), "ok": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
