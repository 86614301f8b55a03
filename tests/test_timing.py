"""ficklenet.analysis.timing: the benchmarks' median of repeats, on a fake clock."""

from __future__ import annotations

import pytest
import torch

from ficklenet.analysis import timing


class FakeClock:
    """``time.perf_counter`` that moves only when a timed call says so; logs events."""

    def __init__(self) -> None:
        self.now = 0.0
        self.log: list[str] = []

    def perf_counter(self) -> float:
        self.log.append("clock")
        return self.now

    def call(self, durations: list[float]):
        """A function whose k-th call takes ``durations[k]`` seconds."""
        calls = iter(durations)

        def fn() -> None:
            self.log.append("call")
            self.now += next(calls)

        return fn


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake.perf_counter)
    return fake


def test_median_after_one_untimed_warm_up(clock):
    # The warm-up (100 s) is not timed; the median of 1, 5, 3 is 3.
    fn = clock.call([100.0, 1.0, 5.0, 3.0])
    assert timing.median_seconds(fn, repeats=3) == pytest.approx(3.0)
    assert clock.log == ["call"] + ["clock", "call", "clock"] * 3


def test_warm_up_count_and_an_even_number_of_repeats(clock):
    fn = clock.call([50.0, 60.0, 2.0, 4.0])
    assert timing.median_seconds(fn, repeats=2, warmup=2) == pytest.approx(3.0)
    fn = clock.call([7.0])
    assert timing.median_seconds(fn, repeats=1, warmup=0) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="repeats"):
        timing.median_seconds(fn, repeats=0)


def test_cuda_work_is_waited_for_inside_the_clock(clock, monkeypatch):
    """On a CUDA device the queue is drained before the clock starts and before it
    stops; on a CPU (or no device) nothing is synchronised."""
    synced: list[torch.device] = []

    def fake_sync(device=None) -> None:
        clock.log.append("sync")
        synced.append(torch.device(device))

    monkeypatch.setattr(torch.cuda, "synchronize", fake_sync)
    fn = clock.call([1.0, 2.0, 2.0])
    assert timing.median_seconds(fn, repeats=2, device="cuda:0") == pytest.approx(2.0)
    assert clock.log == ["call"] + ["sync", "clock", "call", "sync", "clock"] * 2
    assert synced == [torch.device("cuda:0")] * 4

    clock.log.clear()
    for device in ("cpu", torch.device("cpu"), None):
        timing.median_seconds(clock.call([1.0, 1.0]), repeats=1, device=device)
    assert "sync" not in clock.log
