"""Small statistics shared by collect, eval and report."""

from __future__ import annotations

import math


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for a success rate: honest at n=50 and at rates near 0 or 1."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def spread(rates: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation, min and max of per-run rates (e.g. one per training seed)."""
    import statistics

    return {
        "runs": len(rates),
        "mean": statistics.fmean(rates),
        "std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "min": min(rates),
        "max": max(rates),
    }


def rate_summary(successes: int, n: int) -> dict[str, float | int | list[float]]:
    lo, hi = wilson(successes, n)
    return {"success_rate": successes / n if n else 0.0, "n": n, "successes": successes, "wilson95": [lo, hi]}
