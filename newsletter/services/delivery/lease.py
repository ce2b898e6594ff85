"""Delivery, worker stage: who holds a lease on a ledger row, and the clock leases are read on.

A sender claims rows for LEASE_SECONDS under an owner id (host, pid, nonce); another sender takes
them over when the lease runs out, or at once when the owner's process is gone from this host.
"""

from __future__ import annotations

import time

# Who holds a lease, and whether its process is gone: one owner, shared with the daemon's lock.
from newsletter.services.leases import new_owner_id, owner_is_dead

__all__ = [
    "LEASE_SECONDS",
    "LEASE_TRUST_SECONDS",
    "RENEW_EVERY",
    "WATCH_EVERY",
    "lease_clock",
    "new_owner_id",
    "owner_is_dead",
]

LEASE_SECONDS = 30.0  # a crashed sender's rows come back after this, or at once if its pid is gone
# A sender trusts its lease this long after its last renewal began, then renews and verifies
# before it sends again: the margin covers the renewal's own time and clock-rate differences.
LEASE_TRUST_SECONDS = LEASE_SECONDS - 10.0
RENEW_EVERY = LEASE_SECONDS / 3
# Private and undocumented: a factor (0 < f <= 1) on LEASE_SECONDS, LEASE_TRUST_SECONDS and
# RENEW_EVERY together, so a test can let a paused sender's lease run out in seconds. Read only by
# EditionSender; no command sets it.
_TEST_LEASE_SCALE_ENV = "NEWSLETTER_TEST_LEASE_SCALE"
WATCH_EVERY = 1.0  # how often the set of subscribers who left since the claim is refreshed


def lease_clock() -> float:
    """Seconds that keep counting while the process is stopped or the machine sleeps.

    A lease is measured in the database's time, which goes on during a SIGSTOP or a suspend;
    CLOCK_BOOTTIME does too, where plain monotonic time stops during a suspend.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME)
