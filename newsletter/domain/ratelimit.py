"""Rate limiting, both rules the project uses, in memory and per process.

- ``SlidingWindowLimiter``: at most ``limit`` hits per ``window`` seconds, keyed by address or
  client (sign-ups, confirmation mails, failed logins); a hit over the limit is refused.
- ``PacingLimiter``: at most ``rate`` acquisitions per second across all threads (the SMTP send
  rate); an acquisition over the rate waits for its slot instead of being refused.

The sliding window's counts live in this process's memory, so they reset on restart and are not
shared between several ``newsletter serve`` processes (each one allows the full limit). That is
enough to stop a script from mail-bombing an address through one server or guessing the editors'
password; a site that runs several processes behind a load balancer should also limit at the
proxy (nginx ``limit_req``) or accept the limits multiplied by the number of processes.

Memory is bounded: at most ``max_keys`` keys are tracked; when full, the key whose last hit is
oldest is dropped (its owner gets a fresh window, which errs on the side of letting mail through).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class Rule:
    """At most ``limit`` hits per ``window`` seconds."""

    limit: int
    window: float


class SlidingWindowLimiter:
    """Counts hits per key over the last ``rule.window`` seconds; thread-safe."""

    def __init__(self, rule: Rule, *, clock: Clock = time.monotonic, max_keys: int = 100_000):
        self.rule = rule
        self._clock = clock
        self._max_keys = max_keys
        # key -> times of its hits in the window, oldest first; the dict is kept in LRU order.
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Record a hit for ``key`` if it is under the limit; False (nothing recorded) if not."""
        with self._lock:
            hits = self._current(key)
            if len(hits) >= self.rule.limit:
                return False
            hits.append(self._clock())
            return True

    def record(self, key: str) -> None:
        """Count a hit whatever the limit says (a failed login, say)."""
        with self._lock:
            self._current(key).append(self._clock())

    def exceeded(self, key: str) -> bool:
        """Whether ``key`` has used its limit, without recording anything."""
        with self._lock:
            return len(self._current(key)) >= self.rule.limit

    def _current(self, key: str) -> deque[float]:
        """The key's hits still inside the window (older ones dropped), marked recently used."""
        cutoff = self._clock() - self.rule.window
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            if len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= cutoff:
            hits.popleft()
        return hits


class PacingLimiter:
    """At most ``rate`` acquisitions per second across all threads (0 = unlimited).

    Slots are handed out ``1 / rate`` seconds apart, first come first served; ``wait`` sleeps
    until the caller's slot. A slot not used in time is not saved up: after a pause the next
    caller goes at once and the spacing starts again from there (no burst).
    """

    def __init__(
        self, rate: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = self._clock()
            slot = max(self._next, now)
            self._next = slot + self._interval
        if slot > now:
            self._sleep(slot - now)
