"""Click and open counts (issue 15): the per-reader rows, their fold into per-article totals,
and what the stats read.

``clicks`` holds one row per click a reader made (web/clicks.py buffers them and
``record_clicks`` writes a batch at most every second); ``click_totals`` what is left of them
after NEWSLETTER_CLICK_RETENTION_DAYS (``fold_clicks``); ``opens`` the first open of an edition
by a reader, only with NEWSLETTER_TRACK_OPENS. Forgetting a subscriber deletes their rows (the
foreign keys cascade; SQLite enforces them: ``PRAGMA foreign_keys=ON`` in engine.py).

The scanner rule (domain/clicks.py) is applied when counting, on whole messages (an edition
and a reader), so the fold takes whole messages too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import Connection, delete, func, select, update

from newsletter.adapters.store.engine import StoreBase
from newsletter.adapters.store.schema import (
    click_totals,
    clicks,
    deliveries,
    editions,
    opens,
    subscribers,
)
from newsletter.domain import DeliveryStatus, EditionStatus
from newsletter.domain.clicks import Click, Tally, tally

# SQLite allows 999 bound parameters in old builds: lists of ids go in chunks of this size.
_CHUNK = 500


class ClickQueries(StoreBase):
    """Clicks, their totals and opens."""

    # -- writing ----------------------------------------------------------------------------------

    def record_clicks(self, batch: Sequence[Click]) -> int:
        """Store a batch of clicks in one transaction; returns how many were stored.

        Clicks of a subscriber who no longer exists (forgotten between the click and this
        write) or who turned tracking off are dropped, not an error: the batch is still written.
        """
        if not batch:
            return 0
        with self.write() as c:
            countable = self._countable(c, {click.subscriber_id for click in batch})
            rows = [
                {
                    "edition_date": click.edition_date,
                    "article_ref": click.article_ref,
                    "subscriber_id": click.subscriber_id,
                    "clicked_at": click.clicked_at,
                }
                for click in batch
                if click.subscriber_id in countable
            ]
            if rows:
                c.execute(clicks.insert(), rows)
        return len(rows)

    def record_opens(self, batch: Sequence[tuple[date, int, datetime]]) -> int:
        """Store first opens (edition, subscriber, when); a second open of the same edition by the
        same reader changes nothing. Returns how many were new."""
        if not batch:
            return 0
        stored = 0
        with self.write() as c:
            countable = self._countable(c, {subscriber_id for _day, subscriber_id, _at in batch})
            for day, subscriber_id, at in batch:
                if subscriber_id not in countable:
                    continue
                statement = self._insert(opens).on_conflict_do_nothing(
                    index_elements=["edition_date", "subscriber_id"]
                )
                values = {"edition_date": day, "subscriber_id": subscriber_id, "opened_at": at}
                # RETURNING rather than rowcount: psycopg's rowcount of ON CONFLICT DO NOTHING
                # was not reliable here (-1).
                stored += len(
                    c.execute(statement.values(values).returning(opens.c.opened_at)).all()
                )
        return stored

    def _countable(self, c: Connection, ids: set[int]) -> set[int]:
        """Among ``ids``, the subscribers that exist and did not turn tracking off."""
        found: set[int] = set()
        wanted = sorted(ids)
        for start in range(0, len(wanted), _CHUNK):
            query = select(subscribers.c.id).where(
                subscribers.c.id.in_(wanted[start : start + _CHUNK]),
                subscribers.c.clicks_opted_out_at.is_(None),
            )
            found.update(c.execute(query).scalars())
        return found

    # -- reading ----------------------------------------------------------------------------------

    def click_rows(self, day: date) -> list[Click]:
        """Edition ``day``'s stored clicks, oldest first."""
        query = (
            select(clicks.c.edition_date, clicks.c.article_ref, clicks.c.subscriber_id,
                   clicks.c.clicked_at)
            .where(clicks.c.edition_date == day)
            .order_by(clicks.c.clicked_at, clicks.c.id)
        )  # fmt: skip
        with self.read() as c:
            return [Click(*row) for row in c.execute(query)]

    def article_tallies(self, days: Sequence[date]) -> dict[tuple[date, str], Tally]:
        """Per (edition, article ref): counted clicks and unique clickers, scanners left out,
        the stored rows and the folded totals added up."""
        if not days:
            return {}
        wanted = list(days)
        rows_query = select(
            clicks.c.edition_date, clicks.c.article_ref, clicks.c.subscriber_id, clicks.c.clicked_at
        ).where(clicks.c.edition_date.in_(wanted))
        totals_query = select(click_totals).where(click_totals.c.edition_date.in_(wanted))
        with self.read() as c:
            result = tally(Click(*row) for row in c.execute(rows_query))
            for row in c.execute(totals_query):
                key = (row.edition_date, row.article_ref)
                result[key] = result.get(key, Tally()) + Tally(row.clicks, row.unique_clicks)
        return result

    def messages_sent(self, days: Sequence[date]) -> dict[date, int]:
        """Per edition: the messages the relay accepted (deliveries sent), the base of a
        click-through rate."""
        if not days:
            return {}
        query = (
            select(deliveries.c.edition_date, func.count())
            .where(
                deliveries.c.edition_date.in_(list(days)),
                deliveries.c.status == DeliveryStatus.SENT.value,
            )
            .group_by(deliveries.c.edition_date)
        )
        with self.read() as c:
            return {day: count for day, count in c.execute(query)}

    def sent_edition_dates(self, limit: int = 14) -> list[date]:
        """The ``limit`` latest editions that went out (sent, or still sending), newest first."""
        query = (
            select(editions.c.edition_date)
            .where(
                editions.c.articles.is_not(None),
                editions.c.status.in_([EditionStatus.SENT.value, EditionStatus.SENDING.value]),
            )
            .order_by(editions.c.edition_date.desc())
            .limit(limit)
        )
        with self.read() as c:
            return list(c.execute(query).scalars())

    def open_count(self, day: date) -> int:
        """How many readers opened edition ``day`` (only counted with NEWSLETTER_TRACK_OPENS)."""
        query = select(func.count()).select_from(opens).where(opens.c.edition_date == day)
        with self.read() as c:
            return int(c.execute(query).scalar_one())

    # -- retention --------------------------------------------------------------------------------

    def fold_clicks(self, before: datetime) -> int:
        """Fold the messages (edition, reader) whose first click is older than ``before`` into
        click_totals, scanner rule applied, and delete their rows, in one transaction. Whole
        messages, so that the rule and the unique counts see all of a message's clicks at once.
        Returns the number of rows deleted."""
        with self.read() as c:  # most days nothing is due: no write lock taken for nothing
            due = select(clicks.c.id).where(clicks.c.clicked_at < before).limit(1)
            if c.execute(due).first() is None:
                return 0
        with self.write() as c:
            old = (
                select(clicks.c.edition_date, clicks.c.subscriber_id)
                .group_by(clicks.c.edition_date, clicks.c.subscriber_id)
                .having(func.min(clicks.c.clicked_at) < before)
            )
            messages = {(row.edition_date, row.subscriber_id) for row in c.execute(old)}
            if not messages:
                return 0
            days = sorted({day for day, _ in messages})
            rows = [
                Click(*row)
                for row in c.execute(
                    select(
                        clicks.c.edition_date,
                        clicks.c.article_ref,
                        clicks.c.subscriber_id,
                        clicks.c.clicked_at,
                    ).where(clicks.c.edition_date.in_(days))
                )
                if (row.edition_date, row.subscriber_id) in messages
            ]
            for (day, ref), counted in tally(rows).items():
                self._add_totals(c, day, ref, counted)
            deleted = 0
            for day in days:
                readers = sorted(s for d, s in messages if d == day)
                for start in range(0, len(readers), _CHUNK):
                    deleted += c.execute(
                        delete(clicks).where(
                            clicks.c.edition_date == day,
                            clicks.c.subscriber_id.in_(readers[start : start + _CHUNK]),
                        )
                    ).rowcount
        return deleted

    def _add_totals(self, c: Connection, day: date, ref: str, counted: Tally) -> None:
        """Add ``counted`` to the (edition, article) totals row, creating it at zero first."""
        create = self._insert(click_totals).on_conflict_do_nothing(
            index_elements=["edition_date", "article_ref"]
        )
        key = {"edition_date": day, "article_ref": ref}
        c.execute(create.values(**key, clicks=0, unique_clicks=0))
        c.execute(
            update(click_totals)
            .where(click_totals.c.edition_date == day, click_totals.c.article_ref == ref)
            .values(
                clicks=click_totals.c.clicks + counted.clicks,
                unique_clicks=click_totals.c.unique_clicks + counted.unique_clicks,
            )
        )
