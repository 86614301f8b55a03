"""Timing for the benchmarks: the median wall time of repeated calls.

Every benchmark of ``experiments/benchmarks`` times the same way: a warm-up call
(one-off allocations, kernel selection, a worker pool's start) that is not timed,
then ``repeats`` calls each timed on :func:`time.perf_counter`, with the device's
queued work waited for before the clock starts and before it stops (CUDA runs
kernels asynchronously: without that the clock would time the launches), and the
median of those times, which a single slow call on a shared machine does not move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["median_seconds", "synchronize"]


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on ``device`` (a CUDA device); nothing for a CPU or
    for None."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object],
    repeats: int = 3,
    device: torch.device | str | None = None,
    warmup: int = 1,
) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed
    calls, ``device``'s queued work included (synchronised before each timed call
    starts and before it ends when ``device`` is a CUDA device; None or a CPU: no
    synchronisation). ``warmup=0`` where the caller warmed up ``fn`` itself."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
