"""The one timer: the median seconds of a call after warm-up, optionally within a time
budget. Standard library only, so the runtime and the benchmarks share it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int = 200, warmup: int = 20,
                   budget: float | None = None) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` calls; with `budget`
    (seconds), stop early once that much was spent and at least 3 calls were timed."""
    for _ in range(warmup):
        fn()
    times, spent = [], 0.0
    while len(times) < repeats and (budget is None or spent < budget or len(times) < 3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return statistics.median(times)
