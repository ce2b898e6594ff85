"""Delivery, worker stage: who holds a lease on a ledger row, and the clock leases are read on.

A sender claims rows for LEASE_SECONDS under an owner id (host, pid, nonce); another sender takes
them over when the lease runs out, or at once when the owner's process is gone from this host.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

LEASE_SECONDS = 30.0  # a crashed sender's rows come back after this, or at once if its pid is gone
# A sender trusts its lease this long after its last renewal began, then renews and verifies
# before it sends again: the margin covers the renewal's own time and clock-rate differences.
LEASE_TRUST_SECONDS = LEASE_SECONDS - 10.0
RENEW_EVERY = LEASE_SECONDS / 3
WATCH_EVERY = 1.0  # how often the set of subscribers who left since the claim is refreshed


def lease_clock() -> float:
    """Seconds that keep counting while the process is stopped or the machine sleeps.

    A lease is measured in the database's time, which goes on during a SIGSTOP or a suspend;
    CLOCK_BOOTTIME does too, where plain monotonic time stops during a suspend.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def new_owner_id() -> str:
    """Who holds a lease: host, pid and a nonce, so a dead owner on this host can be detected."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` ran on this host and its process no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's sender: only its lease expiry frees its rows
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False
