"""Named locks (leases) and the record of the editors' previews: what the scheduler keeps.

A lock is a lease with an owner and an expiry: one scheduler sends per database, and another one
takes over once the lease runs out (or at once, when its owner is known to be dead).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import delete, select, update

from newsletter.adapters.store.engine import StoreBase
from newsletter.adapters.store.schema import edition_previews, locks


class LockQueries(StoreBase):
    """Locks: named leases (one scheduler sending per database), and the editors' previews."""

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew lock `name` for `owner` unless another owner holds an unexpired lease."""
        with self.write() as c:
            now = self.now()
            expires = now + timedelta(seconds=ttl_seconds)
            row = c.execute(select(locks).where(locks.c.name == name).with_for_update()).first()
            if row is None:
                c.execute(
                    self._insert(locks)
                    .values(name=name, owner=owner, expires_at=expires, acquired_at=now)
                    .on_conflict_do_nothing()
                )
                return (
                    c.execute(select(locks.c.owner).where(locks.c.name == name)).scalar_one()
                    == owner
                )
            if row.owner != owner and row.expires_at > now:
                return False
            acquired = row.acquired_at if row.owner == owner else now
            c.execute(
                update(locks)
                .where(locks.c.name == name)
                .values(owner=owner, expires_at=expires, acquired_at=acquired)
            )
            return True

    def lock_holder(self, name: str) -> tuple[str, datetime] | None:
        """Who holds lock `name` and until when (None: free)."""
        with self.read() as c:
            row = c.execute(
                select(locks.c.owner, locks.c.expires_at).where(locks.c.name == name)
            ).first()
        if row is None or row.expires_at <= self.now():
            return None
        return row.owner, row.expires_at

    def release_lock(self, name: str, owner: str) -> None:
        """Give lock `name` up, if `owner` holds it."""
        with self.write() as c:
            c.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))

    # -----------------------------------------------------------------------------------------
    # Scheduler: the editors' previews and taking over a dead scheduler's lock
    # -----------------------------------------------------------------------------------------

    def preview_sent_at(self, day: date) -> datetime | None:
        """When the editors' preview of edition `day` went out (None: not yet)."""
        with self.read() as c:
            return c.execute(
                select(edition_previews.c.sent_at).where(edition_previews.c.edition_date == day)
            ).scalar_one_or_none()

    def record_preview_sent(self, day: date, recipients: int) -> None:
        """The editors' preview of edition `day` went out to `recipients` addresses (first one kept)."""
        with self.write() as c:
            c.execute(
                self._insert(edition_previews)
                .values(edition_date=day, sent_at=self.now(), recipients=recipients)
                .on_conflict_do_nothing()
            )

    def take_over_lock(self, name: str, dead_owner: str, owner: str, ttl_seconds: float) -> bool:
        """Take lock `name` from `dead_owner` (a process known to be gone) before its lease expires."""
        with self.write() as c:
            now = self.now()
            return (
                c.execute(
                    update(locks)
                    .where(locks.c.name == name, locks.c.owner == dead_owner)
                    .values(
                        owner=owner,
                        expires_at=now + timedelta(seconds=ttl_seconds),
                        acquired_at=now,
                    )
                ).rowcount
                == 1
            )
