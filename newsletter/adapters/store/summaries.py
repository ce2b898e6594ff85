"""What the editors read: the recent editions with their delivery counts and first failures."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import func, literal, null, select, union_all

from newsletter.adapters.store.engine import StoreBase
from newsletter.adapters.store.ledger import edition_record_of
from newsletter.adapters.store.schema import deliveries, editions, subscribers
from newsletter.domain import DeliveryStatus, EditionRecord


@dataclass(frozen=True, slots=True)
class EditionSummary:
    """One line of the editors' status page."""

    record: EditionRecord
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (address, last error)


class SummaryQueries(StoreBase):
    def editions_summary(self, limit: int, failures_shown: int) -> list[EditionSummary]:
        """The ``limit`` newest editions, each with its count of rows per DeliveryStatus and its
        first ``failures_shown`` failures, in one statement: the page costs one round trip,
        whatever the number of editions."""
        recent = (
            select(editions).order_by(editions.c.edition_date.desc()).limit(limit).cte("recent")
        )
        days = select(recent.c.edition_date)
        counts = (
            select(
                deliveries.c.edition_date.label("day"),
                literal("count").label("kind"),
                deliveries.c.status.label("status"),
                func.count().label("n"),
                null().label("email"),
                null().label("error"),
                null().label("position"),
            )
            .where(deliveries.c.edition_date.in_(days))
            .group_by(deliveries.c.edition_date, deliveries.c.status)
        )
        ranked = (
            select(
                deliveries.c.edition_date.label("day"),
                subscribers.c.email,
                deliveries.c.last_error,
                func.row_number()
                .over(partition_by=deliveries.c.edition_date, order_by=deliveries.c.id)
                .label("position"),
            )
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(
                deliveries.c.edition_date.in_(days),
                deliveries.c.status == DeliveryStatus.FAILED.value,
            )
            .subquery("ranked")
        )
        failures = select(
            ranked.c.day,
            literal("failure"),
            null(),
            null(),
            ranked.c.email,
            ranked.c.last_error,
            ranked.c.position,
        ).where(ranked.c.position <= failures_shown)
        lines = union_all(counts, failures).subquery("lines")
        statement = (
            select(
                recent,
                lines.c.kind,
                lines.c.status.label("line_status"),
                lines.c.n,
                lines.c.email,
                lines.c.error,
                lines.c.position,
            )
            .outerjoin(lines, lines.c.day == recent.c.edition_date)
            .order_by(recent.c.edition_date.desc(), lines.c.kind, lines.c.position)
        )
        with self.read() as c:
            rows = c.execute(statement).all()
        records: dict[date, EditionRecord] = {}
        counted: dict[date, dict[str, int]] = defaultdict(dict)
        failed: dict[date, list[tuple[str, str]]] = defaultdict(list)
        for row in rows:
            day = row.edition_date
            records.setdefault(day, edition_record_of(row))
            if row.kind == "count":
                counted[day][row.line_status] = row.n
            elif row.kind == "failure":
                failed[day].append((row.email, row.error))
        return [
            EditionSummary(record, counted[day], failed[day]) for day, record in records.items()
        ]
