"""The one timing loop of the benchmarks, the ranking of backends and the measuring scripts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_calls(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` for ``iters`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples
