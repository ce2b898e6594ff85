"""Service: leases, the database locks that let one process act for all (``newsletter run``).

A lease is one of the store's named locks with an owner and an expiry. Owners are named
``host:pid:nonce`` so that a dead owner on this host is recognised at once (``owner_is_dead``):
the delivery service uses that for the rows a crashed sender held, ``Lease`` for the daemon's
``scheduler`` lock: one daemon per database sends, the others stand by and take over when the
holder's lease runs out (at once when the holder was a process of this host that no longer
exists).

``Lease`` has no thread and no timer of its own: whoever drives it (the daemon's lease job) calls
``tick()`` and calls again after the number of seconds it returns. The holder renews three times
per lease, so one slow renewal is harmless, and stops trusting its lease ``LEASE_MARGIN`` seconds
before it runs out in the database, so that it has stopped sending before a standby can take over.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from newsletter.adapters.store import Store
from newsletter.domain.errors import error_line

log = logging.getLogger("newsletter.leases")

LOCK_NAME = "scheduler"
LOCK_TTL = 30.0  # seconds a lease lasts without renewal: how long a dead holder blocks a standby
LOCK_RENEW_EVERY = 10.0  # the holder renews three times per lease: one slow renewal is harmless
STANDBY_POLL_EVERY = 5.0
# The holder stops trusting its lease this long before it runs out in the database, so that it
# has stopped sending before a standby can take over.
LEASE_MARGIN = 5.0
SOONEST = 0.1  # seconds: the shortest wait tick() asks for


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


class Lease:
    """The store's ``scheduler`` lock: taken, renewed and polled each time ``tick()`` is called.

    ``on_taken`` runs when this process becomes the holder, ``on_lost`` (with the reason) when it
    stops being one: its lease ran out unrenewed, or someone else holds the lock now.
    """

    def __init__(
        self,
        store: Store,
        owner: str,
        *,
        on_taken: Callable[[], None],
        on_lost: Callable[[str], None],
        ttl: float = LOCK_TTL,
        renew_every: float = LOCK_RENEW_EVERY,
        poll_every: float = STANDBY_POLL_EVERY,
    ) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.renew_every = renew_every
        self.poll_every = poll_every
        self._on_taken = on_taken
        self._on_lost = on_lost
        self._held = False
        self._valid_until = 0.0  # monotonic time after which we no longer trust our lease
        self._standby_for: str | None = None  # the holder we last announced standing by for

    def holds(self) -> bool:
        return self._held and time.monotonic() < self._valid_until

    def tick(self) -> float:
        """Renew the lease (holder) or try to take it (standby); seconds until the next tick.

        The holder is called again before its lease could lapse unnoticed: after a failed
        renewal, at the latest when the lease it still trusts runs out.
        """
        try:
            if self._held and not self.holds():
                self._lose("its lease ran out before it could be renewed")
            self._attempt()
        except Exception as err:
            # The caller must go on ticking whatever happens: else the lease silently lapses.
            log.error("lock: %s", error_line(err))
        if not self._held:
            return self.poll_every
        return max(SOONEST, min(self.renew_every, self._valid_until - time.monotonic()))

    def release(self) -> None:
        """Give the lock up, so a standby takes over at its next poll."""
        if self._held:
            self._held = False
            try:
                self.store.release_lock(LOCK_NAME, self.owner)
            except Exception as err:  # it expires by itself within LOCK_TTL anyway
                log.error("lock: could not release it: %s", error_line(err))

    def _attempt(self) -> None:
        asked = time.monotonic()
        try:
            taken, holder = self._acquire()
        except Exception as err:
            # The database may be away for a moment; the lease we have stays valid until it ends.
            log.error("lock: cannot reach the database: %s", error_line(err))
            return
        if taken:
            self._valid_until = asked + self.ttl - LEASE_MARGIN
            if not self._held:
                self._held = True
                self._standby_for = None
                log.info("lock taken: this process sends (owner %s)", self.owner)
                self._on_taken()
        elif self._held:
            self._lose(f"now held by {holder}")
        elif holder != self._standby_for:
            self._standby_for = holder
            log.info(
                "standby: the scheduler lock is held by %s; polling every %gs to take over",
                holder,
                self.poll_every,
            )

    def _acquire(self) -> tuple[bool, str | None]:
        if self.store.acquire_lock(LOCK_NAME, self.owner, self.ttl):
            return True, None
        found = self.store.lock_holder(LOCK_NAME)
        holder = found[0] if found else None
        # kill -9 on this host: no need to wait for the dead holder's lease to run out.
        if (
            holder
            and owner_is_dead(holder)
            and self.store.take_over_lock(LOCK_NAME, holder, self.owner, self.ttl)
        ):
            log.warning("lock: its holder %s no longer exists; taking over", holder)
            return True, None
        return False, holder

    def _lose(self, why: str) -> None:
        self._held = False
        log.warning("lock lost (%s): stopping any send in progress; standby", why)
        self._on_lost(why)
