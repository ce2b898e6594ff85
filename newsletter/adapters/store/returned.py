"""What came back after a delivery: bounces and complaints, recorded on its ledger row.

``services/bounces.py`` decides (which delivery a report is tied to, which kind it is); these
queries find the delivery, record the report and stop the subscriber in one transaction, and
count what came back per edition for ``status`` and the editors' page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Row

from newsletter.adapters.store.engine import StoreBase
from newsletter.adapters.store.schema import deliveries, subscribers, suppressions
from newsletter.adapters.store.subscribers import move_where
from newsletter.domain import SubscriberStatus
from newsletter.domain.addresses import suppression_hash
from newsletter.domain.returned import MAILED_STATUSES, ReturnedKind

# Rows that went to the relay at least once (domain.returned.MAILED_STATUSES).
_MAILED = tuple(status.value for status in MAILED_STATUSES)
DIAGNOSTIC_CHARS = 300  # the column's width; a diagnostic is cut to one line of this


@dataclass(frozen=True, slots=True)
class ReturnedTarget:
    """The delivery a report names, with what the service checks the report against."""

    delivery_id: int
    edition_date: date
    subscriber_id: int
    email: str
    email_key: str
    subscriber_status: SubscriberStatus
    returned_kind: ReturnedKind | None  # what was recorded before, if anything


_TARGET_COLUMNS = (
    deliveries.c.id.label("delivery_id"),
    deliveries.c.edition_date,
    deliveries.c.returned_kind,
    subscribers.c.id.label("subscriber_id"),
    subscribers.c.email,
    subscribers.c.email_key,
    subscribers.c.status,
)


class ReturnedQueries(StoreBase):
    """Bounces and complaints on the send ledger."""

    def mailed_delivery(self, day: date, subscriber_id: int) -> ReturnedTarget | None:
        """Edition ``day``'s delivery to ``subscriber_id``, if it went to the relay (a VERP
        token or one of our Message-IDs names it); None for one never mailed or never frozen."""
        query = (
            select(*_TARGET_COLUMNS)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(
                deliveries.c.edition_date == day,
                deliveries.c.subscriber_id == subscriber_id,
                deliveries.c.status.in_(_MAILED),
            )
        )
        with self.read() as c:
            row = c.execute(query).first()
        return _target(row) if row else None

    def latest_mailed_delivery(self, subscriber_id: int) -> ReturnedTarget | None:
        """The newest delivery to ``subscriber_id`` that went to the relay: what a report tied
        only by an unsubscribe token (which names the subscriber, not the edition) is about."""
        query = (
            select(*_TARGET_COLUMNS)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(deliveries.c.subscriber_id == subscriber_id, deliveries.c.status.in_(_MAILED))
            .order_by(deliveries.c.edition_date.desc())
            .limit(1)
        )
        with self.read() as c:
            row = c.execute(query).first()
        return _target(row) if row else None

    def record_returned(
        self,
        target: ReturnedTarget,
        kind: ReturnedKind,
        status: str,
        diagnostic: str,
        *,
        stop: SubscriberStatus | None = None,
        suppress: bool = False,
    ) -> tuple[bool, bool]:
        """Record what came back for ``target`` and carry out its consequence, in one transaction.

        The row keeps the strongest report (soft < hard < complaint): a late soft bounce never
        hides a hard one. ``stop`` moves the subscriber where the consent rules allow
        (``move_where``); ``suppress`` keeps the address's hash so that no import brings it back.
        Returns (recorded on the row, subscriber moved).
        """
        weaker = [k.value for k in ReturnedKind if kind.outranks(k)]
        now = self.now()
        with self.write() as c:
            recorded = c.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == target.delivery_id,
                    deliveries.c.returned_kind.is_(None) | deliveries.c.returned_kind.in_(weaker),
                )
                .values(
                    returned_kind=kind.value,
                    returned_status=status[:16],
                    returned_diagnostic=diagnostic[:DIAGNOSTIC_CHARS],
                    returned_at=now,
                )
            ).rowcount
            moved = 0
            if stop is not None:
                moved = move_where(c, subscribers.c.id == target.subscriber_id, stop, now)
            if suppress:
                c.execute(
                    self._insert(suppressions)
                    .values(
                        address_hash=suppression_hash(target.email_key),
                        reason=kind.value,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["address_hash"])
                )
        return recorded == 1, moved == 1

    def soft_returned_days(self, subscriber_id: int) -> list[date]:
        """The editions whose delivery to ``subscriber_id`` came back soft (the soft rule's input;
        found through ix_deliveries_subscriber_returned)."""
        query = select(deliveries.c.edition_date).where(
            deliveries.c.subscriber_id == subscriber_id,
            deliveries.c.returned_kind == ReturnedKind.SOFT.value,
        )
        with self.read() as c:
            return list(c.execute(query).scalars())

    def returned_counts(self, days: Iterable[date]) -> dict[date, dict[str, int]]:
        """Per edition of ``days``: how many deliveries came back of each ReturnedKind, and under
        the key "mailed" how many went to the relay (the rates' denominator)."""
        wanted = list(days)
        counts: dict[date, dict[str, int]] = defaultdict(dict)
        if not wanted:
            return counts
        returned = (
            select(deliveries.c.edition_date, deliveries.c.returned_kind, func.count())
            .where(
                deliveries.c.edition_date.in_(wanted),
                deliveries.c.returned_kind.is_not(None),
            )
            .group_by(deliveries.c.edition_date, deliveries.c.returned_kind)
        )
        mailed = (
            select(deliveries.c.edition_date, func.count())
            .where(deliveries.c.edition_date.in_(wanted), deliveries.c.status.in_(_MAILED))
            .group_by(deliveries.c.edition_date)
        )
        with self.read() as c:
            for day, kind, n in c.execute(returned):
                counts[day][kind] = n
            for day, n in c.execute(mailed):
                counts[day]["mailed"] = n
        return counts


def _target(row: Row[Any]) -> ReturnedTarget:
    return ReturnedTarget(
        delivery_id=row.delivery_id,
        edition_date=row.edition_date,
        subscriber_id=row.subscriber_id,
        email=row.email,
        email_key=row.email_key,
        subscriber_status=SubscriberStatus(row.status),
        returned_kind=ReturnedKind(row.returned_kind) if row.returned_kind else None,
    )
