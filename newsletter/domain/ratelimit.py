"""A small in-memory sliding-window rate limiter, keyed by address or client.

Per process: the counts live in this process's memory, so they reset on restart and are not
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
