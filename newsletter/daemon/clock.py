"""The daemon's clock: the real one, or one shifted to another instant (``run --now``).

The timetable is read in the daemon's clock; APScheduler runs jobs at real instants. ``real_instant``
turns a moment of the daemon's clock into the real instant when that clock will read it, so a
shifted daemon's jobs fire at the right shifted moments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from newsletter.domain.errors import UsageError
from newsletter.domain.timetable import as_utc

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def shifted_clock(start: datetime) -> Clock:
    """A clock that reads ``start`` now and runs at real speed from there (``run --now``)."""
    origin = time.monotonic()
    begin = as_utc(start)
    return lambda: begin + timedelta(seconds=time.monotonic() - origin)


def parse_now(text: str) -> datetime:
    """The ``run --now`` value: an ISO 8601 instant with its offset."""
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise UsageError(
            f"--now {text!r} is not an instant with an offset",
            "expected e.g. 2026-01-27T07:05:00+01:00",
        ) from None


def real_instant(clock: Clock, moment: datetime) -> datetime:
    """The real instant at which ``clock`` will read ``moment`` (now, when it already has)."""
    real_now = datetime.now(UTC)
    if clock is system_clock:
        return max(moment, real_now)
    return real_now + max(moment - clock(), timedelta(0))
