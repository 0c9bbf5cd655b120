"""What every benchmark shares: a best-of-three operations-per-second measurement."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Operations per second: best of three runs of about `seconds` / 3 each."""
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            fn()
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def paired_rates(
    ours: Callable[[], object], floor: Callable[[], object], seconds: float, rounds: int = 6
) -> tuple[float, float]:
    """Best rates of two operations measured in alternating short rounds, so that a burst of
    noise from the rest of the machine cannot favour one of them."""
    best_ours = best_floor = 0.0
    for _ in range(rounds):
        best_ours = max(best_ours, rate(ours, seconds / rounds))
        best_floor = max(best_floor, rate(floor, seconds / rounds))
    return best_ours, best_floor
