"""Rate limiting, one module for both rules: the sliding window per key and the send pacing."""

from __future__ import annotations

import threading

from newsletter.domain.ratelimit import PacingLimiter, Rule, SlidingWindowLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_sliding_window() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(Rule(3, 60), clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    clock.now += 59
    assert not limiter.allow("a")
    clock.now += 1.5
    assert limiter.allow("a")


def test_limiter_record_and_bounded_keys() -> None:
    limiter = SlidingWindowLimiter(Rule(2, 60), clock=Clock(), max_keys=10)
    limiter.record("x")
    assert not limiter.exceeded("x")
    limiter.record("x")
    assert limiter.exceeded("x")
    for n in range(50):
        limiter.record(f"k{n}")
    assert len(limiter._hits) <= 10


class FakeTime:
    """A clock and a sleep that advances it: pacing without real waiting."""

    def __init__(self) -> None:
        self.now = 500.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)


def test_pacing_spaces_acquisitions_one_interval_apart() -> None:
    time = FakeTime()
    limiter = PacingLimiter(4.0, clock=time.clock, sleep=time.sleep)
    for _ in range(4):
        limiter.wait()
    # The first goes at once; the others wait for slots 0.25 s apart (time does not move here).
    assert time.slept == [0.25, 0.5, 0.75]


def test_pacing_does_not_save_up_unused_slots() -> None:
    time = FakeTime()
    limiter = PacingLimiter(2.0, clock=time.clock, sleep=time.sleep)
    limiter.wait()
    time.now += 10.0  # a long pause: no burst of 20 slots after it
    limiter.wait()
    limiter.wait()
    assert time.slept == [0.5]


def test_pacing_zero_rate_never_waits() -> None:
    time = FakeTime()
    limiter = PacingLimiter(0, clock=time.clock, sleep=time.sleep)
    for _ in range(100):
        limiter.wait()
    assert time.slept == []


def test_pacing_is_shared_by_threads() -> None:
    time = FakeTime()
    limiter = PacingLimiter(10.0, clock=time.clock, sleep=time.sleep)
    threads = [threading.Thread(target=limiter.wait) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Eight threads got eight distinct slots 0.1 s apart: the first at once, the others waited.
    assert sorted(round(s, 6) for s in time.slept) == [round(0.1 * n, 6) for n in range(1, 8)]
