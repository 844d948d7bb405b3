"""Timing helpers: interleaved repetitions, medians, ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(candidates: dict[str, Callable[[], None]], repeats: int = 7, number: int = 20,
                warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each candidate, the candidates alternating inside every repetition."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio(times: dict[str, float], numerator: str, denominator: str) -> float:
    """``times[numerator] / times[denominator]``."""
    return times[numerator] / times[denominator]


def fmt_us(seconds: float) -> str:
    """Microseconds, for tables."""
    return f"{seconds * 1e6:,.1f} µs"
