"""The send ledger: editions and their deliveries, one row per edition and subscriber.

An edition is frozen at its first send (its articles and its recipients); senders then claim
delivery rows under a lease and record each outcome only while they still hold it, so that a
crash, a second sender or a paused one can neither lose a delivery nor overwrite another's outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Date, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.engine import Row

from newsletter.adapters.store.curation import check_revision
from newsletter.adapters.store.engine import StoreBase
from newsletter.adapters.store.returned import DIAGNOSTIC_CHARS
from newsletter.adapters.store.schema import (
    UTCDateTime,
    deliveries,
    edition_articles,
    editions,
    subscribers,
)
from newsletter.adapters.store.sent import sent_update
from newsletter.adapters.store.subscribers import move_where, split_categories
from newsletter.domain import (
    Article,
    ArticleImage,
    DeliveryStatus,
    EditionRecord,
    EditionStatus,
    Reader,
    SubscriberStatus,
)
from newsletter.domain.images import MAX_ALT_CHARS, image_dimension, safe_image_url
from newsletter.domain.returned import ReturnedKind
from newsletter.domain.text import excerpt, one_line

# "Sent" as sent.sent_update defines it (only while the owner holds the row), for a batch:
# RETURNING tells which ids were still ours, so a lost race is reported instead of recorded.
_MARK_SENT = sent_update(
    deliveries.c.id.in_(bindparam("b_ids", expanding=True)),
    bindparam("b_owner"),
    bindparam("b_now", type_=UTCDateTime),
).returning(deliveries.c.id)


class LedgerQueries(StoreBase):
    """Editions and the send ledger."""

    def edition_record(self, day: date) -> EditionRecord | None:
        """One edition's ledger entry, or None when it was never held, frozen or recorded."""
        with self._using(write=False) as c:
            row = c.execute(select(editions).where(editions.c.edition_date == day)).first()
        return edition_record_of(row) if row else None

    def latest_edition_date(self) -> date | None:
        """The most recent edition the ledger knows, for `status` without --date."""
        with self.read() as c:
            return c.execute(select(func.max(editions.c.edition_date))).scalar_one_or_none()

    def _upsert_edition(self, c: Connection, day: date, **values: Any) -> None:
        """Insert-if-absent, then update: two processes recording the same new edition at once
        (two senders on PostgreSQL) must not both take the "absent" branch of an update-first
        upsert and collide on the primary key. The insert also locks the row until commit.
        """
        self._ensure_edition_row(c, day)
        c.execute(
            update(editions)
            .where(editions.c.edition_date == day)
            .values(updated_at=self.now(), **values)
        )

    def _ensure_edition_row(self, c: Connection, day: date) -> None:
        c.execute(
            self._insert(editions)
            .values(
                edition_date=day,
                status=EditionStatus.OPEN.value,
                held=False,
                recipients=0,
                note="",
                updated_at=self.now(),
            )
            .on_conflict_do_nothing(index_elements=["edition_date"])
        )

    def set_held(self, day: date, held: bool) -> None:
        """An editor holds or releases edition `day`: the scheduler does not send a held edition."""
        with self.write() as c:
            self._upsert_edition(c, day, held=held)

    def record_edition_status(self, day: date, status: EditionStatus, note: str = "") -> None:
        """Mark an edition empty or skipped-late (with why), unless it is already frozen for sending."""
        with self.write() as c:
            record = self.edition_record(day)
            if record is not None and record.frozen_at is not None:
                return
            self._upsert_edition(c, day, status=status.value, note=note)

    def frozen_articles(self, day: date) -> list[Article] | None:
        """The articles edition `day` was frozen with, or None when it was never frozen."""
        with self.read() as c:
            stored = c.execute(
                select(editions.c.articles).where(editions.c.edition_date == day)
            ).scalar_one_or_none()
        return None if stored is None else [_article_from_json(item) for item in json.loads(stored)]

    def sent_article_uids(self, before: date) -> frozenset[str]:
        """The articles frozen into editions before `before`: they are never sent again."""
        with self.read() as c:
            query = select(edition_articles.c.uid).where(edition_articles.c.edition_date < before)
            return frozenset(c.execute(query).scalars())

    def freeze_edition(
        self, day: date, articles: Sequence[Article], *, curation_revision: int | None = None
    ) -> int:
        """At the first send of `day`: fix its articles and its recipients (every active
        subscriber now, one pending delivery each); later calls change nothing. Returns the
        number of recipients.

        ``curation_revision``: the revision of the editors' curation the articles were composed
        with; CurationChanged, and nothing frozen, when an editor changed it since (the send
        composes again). The check holds the curation's lock until the freeze commits, so a
        change racing it either is in these articles or sees the edition frozen.
        """
        with self.write() as c:
            # Lock the edition's row (FOR UPDATE; SQLite's BEGIN IMMEDIATE already serialises):
            # a second sender waits here, then sees the edition frozen and changes nothing.
            self._ensure_edition_row(c, day)
            row = c.execute(
                select(editions).where(editions.c.edition_date == day).with_for_update()
            ).first()
            if row is not None and row.frozen_at is not None:
                return row.recipients
            now = self.now()
            if curation_revision is not None:
                check_revision(c, day, curation_revision, now)
            self._upsert_edition(
                c,
                day,
                status=EditionStatus.SENDING.value,
                frozen_at=now,
                note="",
                articles=json.dumps([_article_to_json(a) for a in articles], ensure_ascii=False),
            )
            uids = sorted({a.uid for a in articles})
            if uids:
                c.execute(
                    self._insert(edition_articles).on_conflict_do_nothing(),
                    [{"edition_date": day, "uid": uid} for uid in uids],
                )
            active = select(
                literal(day, Date).label("edition_date"),
                subscribers.c.id,
                literal(DeliveryStatus.PENDING.value).label("status"),
                literal(0).label("attempts"),
                literal("").label("last_error"),
                literal(now, UTCDateTime).label("updated_at"),
            ).where(subscribers.c.status == SubscriberStatus.ACTIVE.value)
            columns = [
                "edition_date",
                "subscriber_id",
                "status",
                "attempts",
                "last_error",
                "updated_at",
            ]
            c.execute(
                self._insert(deliveries).from_select(columns, active).on_conflict_do_nothing()
            )
            count = c.execute(
                select(func.count()).select_from(deliveries).where(deliveries.c.edition_date == day)
            ).scalar_one()
            c.execute(
                update(editions).where(editions.c.edition_date == day).values(recipients=count)
            )
            return count

    def claim_deliveries(
        self, day: date, owner: str, limit: int, lease_seconds: float
    ) -> list[ClaimedDelivery]:
        """Take up to `limit` pending rows (or rows whose lease expired) for `owner`; rows whose
        subscriber left since the freeze are marked skipped instead (unsubscribe mid-send).
        SQLite: BEGIN IMMEDIATE serialises claimers; PostgreSQL: FOR UPDATE SKIP LOCKED.
        """
        with self.write() as c:
            now = self._lease_now(c)
            # Two queries rather than one OR: each walks ix_deliveries_edition_status in id
            # order and stops at `limit`, where the OR made SQLite read every row of the edition
            # and sort them, for every batch (quadratic over a million-row edition).
            pending = (
                select(deliveries.c.id)
                .where(
                    deliveries.c.edition_date == day,
                    deliveries.c.status == DeliveryStatus.PENDING.value,
                    or_(deliveries.c.not_before.is_(None), deliveries.c.not_before <= now),
                )
                .order_by(deliveries.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            expired = (
                select(deliveries.c.id)
                .where(
                    deliveries.c.edition_date == day,
                    deliveries.c.status == DeliveryStatus.SENDING.value,
                    deliveries.c.lease_until < now,
                )
                .order_by(deliveries.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = sorted({*c.execute(expired).scalars(), *c.execute(pending).scalars()})[:limit]
            if not ids:
                return []
            rows = c.execute(
                select(
                    deliveries.c.id.label("delivery_id"),
                    deliveries.c.attempts,
                    subscribers.c.id.label("subscriber_id"),
                    subscribers.c.email,
                    subscribers.c.email_key,
                    subscribers.c.name,
                    subscribers.c.locale,
                    subscribers.c.categories,
                    subscribers.c.status,
                    subscribers.c.clicks_opted_out_at.is_not(None).label("clicks_opted_out"),
                )
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.id.in_(ids))
                .order_by(deliveries.c.id)
            ).all()
            gone = [r.delivery_id for r in rows if r.status != SubscriberStatus.ACTIVE.value]
            if gone:
                c.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(gone))
                    .values(
                        status=DeliveryStatus.SKIPPED.value,
                        owner=None,
                        lease_until=None,
                        last_error="no longer subscribed",
                        updated_at=now,
                    )
                )
            taken = [r for r in rows if r.status == SubscriberStatus.ACTIVE.value]
            if taken:
                c.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_([r.delivery_id for r in taken]))
                    .values(
                        status=DeliveryStatus.SENDING.value,
                        owner=owner,
                        lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=deliveries.c.attempts + 1,
                        updated_at=now,
                    )
                )
            return [_claimed(r) for r in taken]

    def _lease_now(self, c: Connection) -> datetime:
        """The clock leases are written and compared with.

        On PostgreSQL it is the server's: senders on several machines share one database, and a
        sender whose own clock runs a minute fast would otherwise see every other sender's lease
        as expired and send their rows again. SQLite's senders all run on the database's host.
        """
        if self.engine.dialect.name == "postgresql":
            server_now = c.execute(select(func.now())).scalar_one()
            return server_now.astimezone(UTC)
        return self.now()

    def renew_leases(self, day: date, owner: str, lease_seconds: float) -> set[int]:
        """Extend-and-verify: push back the lease of `owner`'s claimed rows of edition `day`; the
        ids returned are the rows still its own (a row another sender took over after a stall
        is not among them). The edition's date lets the status index find the claimed rows
        instead of a walk through every delivery ever made, under the write lock.
        """
        with self.write() as c:
            now = self._lease_now(c)
            rows = c.execute(
                update(deliveries)
                .where(
                    deliveries.c.edition_date == day,
                    deliveries.c.status == DeliveryStatus.SENDING.value,
                    deliveries.c.owner == owner,
                )
                .values(lease_until=now + timedelta(seconds=lease_seconds))
                .returning(deliveries.c.id)
            )
            return set(rows.scalars())

    def stopped_among_claimed(self, day: date, owner: str) -> set[int]:
        """The rows `owner` holds whose subscriber is no longer active (unsubscribed since the
        claim): read every second during a send, so it only walks the few claimed rows.
        """
        with self.read() as c:
            rows = c.execute(
                select(deliveries.c.id)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(
                    deliveries.c.edition_date == day,
                    deliveries.c.status == DeliveryStatus.SENDING.value,
                    deliveries.c.owner == owner,
                    subscribers.c.status != SubscriberStatus.ACTIVE.value,
                )
            )
            return set(rows.scalars())

    def release_dead_owners(self, day: date, is_dead: Callable[[str], bool]) -> int:
        """Rows claimed by a sender that no longer exists (kill -9) go back to pending at once."""
        with self.read() as c:
            owners = list(
                c.execute(
                    select(deliveries.c.owner)
                    .where(
                        deliveries.c.edition_date == day,
                        deliveries.c.status == DeliveryStatus.SENDING.value,
                    )
                    .distinct()
                ).scalars()
            )
        dead = [o for o in owners if o and is_dead(o)]
        return sum(self.release_owner(day, o) for o in dead)

    def release_owner(self, day: date, owner: str) -> int:
        """Everything `owner` claimed of edition `day` but did not finish goes back to pending
        (found through the status index, as in renew_leases)."""
        with self.write() as c:
            return c.execute(
                update(deliveries)
                .where(
                    deliveries.c.edition_date == day,
                    deliveries.c.status == DeliveryStatus.SENDING.value,
                    deliveries.c.owner == owner,
                )
                .values(
                    status=DeliveryStatus.PENDING.value,
                    owner=None,
                    lease_until=None,
                    updated_at=self.now(),
                )
            ).rowcount

    def release(
        self,
        delivery_ids: Sequence[int],
        owner: str,
        error: str | None,
        delay: float | None = None,
    ) -> None:
        """Put `owner`'s rows back to pending after a temporary failure, to be retried after
        `delay` seconds; rows another sender took over are left alone.
        """
        now = self.now()
        values: dict[str, Any] = {
            "status": DeliveryStatus.PENDING.value,
            "owner": None,
            "lease_until": None,
            "not_before": now + timedelta(seconds=delay) if delay else None,
            "updated_at": now,
        }
        if error is not None:
            values["last_error"] = error[:500]
        with self.write() as c:
            c.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(list(delivery_ids)), _held_by(owner))
                .values(values)
            )

    def clear_backoff(self, day: date) -> None:
        """A new run retries at once the rows an earlier run deferred, and the uncertain ones (the
        relay never answered their end of data): at least once, with the same Message-ID.
        """
        with self.write() as c:
            c.execute(
                update(deliveries)
                .where(deliveries.c.edition_date == day, deliveries.c.not_before.is_not(None))
                .values(not_before=None)
            )
            c.execute(
                update(deliveries)
                .where(
                    deliveries.c.edition_date == day,
                    deliveries.c.status == DeliveryStatus.UNCERTAIN.value,
                )
                .values(status=DeliveryStatus.PENDING.value, updated_at=self.now())
            )

    def mark_sent(self, delivery_ids: Sequence[int], owner: str) -> set[int]:
        """The relay accepted these messages: final, in one transaction of the store's. Only rows
        `owner` still holds are recorded; the ids returned are those that were not (lost
        leases). A send records through ``SentLedger`` (``sent.py``), the same statement on a
        connection of its own.
        """
        if not delivery_ids:
            return set()
        with self.write() as c:
            now = self.now()
            params = {"b_ids": list(delivery_ids), "b_owner": owner, "b_now": now}
            recorded = set(c.execute(_MARK_SENT, params).scalars())
        return set(delivery_ids) - recorded

    def mark_failed(self, delivery_id: int, owner: str, error: str, *, bounce: bool) -> None:
        """A permanent failure: final, never retried; with `bounce` the subscriber is marked bounced."""
        values: dict[str, Any] = {}
        if bounce:
            # The relay refused the address itself: a hard bounce, counted with those that
            # come back later by mail (returned.py), so an edition's bounce rate has them all.
            values = {
                "returned_kind": ReturnedKind.HARD.value,
                "returned_status": _status_code(error),
                "returned_diagnostic": " ".join(error.split())[:DIAGNOSTIC_CHARS],
                "returned_at": self.now(),
            }
        with self.write() as c:
            changed = c.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, _held_by(owner))
                .values(
                    status=DeliveryStatus.FAILED.value,
                    owner=None,
                    lease_until=None,
                    last_error=error[:500],
                    updated_at=self.now(),
                    **values,
                )
            ).rowcount
            if bounce and changed:
                subscriber_id = c.execute(
                    select(deliveries.c.subscriber_id).where(deliveries.c.id == delivery_id)
                ).scalar_one()
                where = subscribers.c.id == subscriber_id
                move_where(c, where, SubscriberStatus.BOUNCED, self.now())

    def mark_skipped(self, delivery_id: int, owner: str, reason: str) -> None:
        """Not sent, by design: none of the subscriber's sections has an article in this edition,
        or the subscriber left after the claim.
        """
        self._finish(delivery_id, owner, DeliveryStatus.SKIPPED, reason)

    def mark_uncertain(self, delivery_id: int, owner: str, reason: str) -> None:
        """The relay took the whole message and never answered: not retried in this run (it may
        have queued it); the next run sends it again, with the same Message-ID.
        """
        self._finish(delivery_id, owner, DeliveryStatus.UNCERTAIN, reason)

    def _finish(self, delivery_id: int, owner: str, status: DeliveryStatus, reason: str) -> None:
        with self.write() as c:
            c.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, _held_by(owner))
                .values(
                    status=status.value,
                    owner=None,
                    lease_until=None,
                    last_error=reason[:500],
                    updated_at=self.now(),
                )
            )

    def has_unfinished(self, day: date, horizon_seconds: float) -> bool:
        """Rows a run should still wait for: claimed by someone, or back within the horizon."""
        horizon = self.now() + timedelta(seconds=horizon_seconds)
        with self.read() as c:
            query = (
                select(deliveries.c.id)
                .where(
                    deliveries.c.edition_date == day,
                    or_(
                        deliveries.c.status == DeliveryStatus.SENDING.value,
                        and_(
                            deliveries.c.status == DeliveryStatus.PENDING.value,
                            or_(
                                deliveries.c.not_before.is_(None),
                                deliveries.c.not_before <= horizon,
                            ),
                        ),
                    ),
                )
                .limit(1)
            )
            return c.execute(query).first() is not None

    def delivery_counts(self, day: date) -> dict[str, int]:
        """How many rows of edition `day` are in each DeliveryStatus."""
        with self.read() as c:
            rows = c.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.edition_date == day)
                .group_by(deliveries.c.status)
            )
            return {status: count for status, count in rows}

    def delivery_failures(self, day: date, limit: int = 1000) -> list[tuple[str, str]]:
        """(address, last error) of the failed rows of edition `day`."""
        with self.read() as c:
            rows = c.execute(
                select(subscribers.c.email, deliveries.c.last_error)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(
                    deliveries.c.edition_date == day,
                    deliveries.c.status == DeliveryStatus.FAILED.value,
                )
                .order_by(deliveries.c.id)
                .limit(limit)
            )
            return [(email, error) for email, error in rows]

    def mark_edition_sent(self, day: date) -> None:
        """Every delivery of `day` is final."""
        with self.write() as c:
            now = self.now()
            self._upsert_edition(c, day, status=EditionStatus.SENT.value, finished_at=now)


_ENHANCED_CODE = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")
_REPLY_CODE = re.compile(r"\b[245]\d\d\b")


def _status_code(error: str) -> str:
    """The RFC 3463 code in a relay's reply ("5.1.1"), else its reply code ("550"), else ""."""
    match = _ENHANCED_CODE.search(error) or _REPLY_CODE.search(error)
    return match.group(0) if match else ""


def _held_by(owner: str) -> Any:
    """Rows `owner` still holds: every outcome a sender records is conditional on it."""
    return and_(deliveries.c.owner == owner, deliveries.c.status == DeliveryStatus.SENDING.value)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """One ledger row claimed for sending, with what the message needs of its subscriber."""

    delivery_id: int
    reader: Reader
    attempts: int  # before this claim


def _claimed(row: Row[Any]) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=row.delivery_id,
        reader=Reader(
            subscriber_id=row.subscriber_id,
            email=row.email,
            email_key=row.email_key,
            name=row.name,
            locale=row.locale,
            categories=split_categories(row.categories),
            clicks_opted_out=bool(row.clicks_opted_out),
        ),
        attempts=row.attempts,
    )


def edition_record_of(row: Row[Any]) -> EditionRecord:
    """An ``editions`` row (with any extra columns) as the domain's EditionRecord."""
    return EditionRecord(
        edition_date=row.edition_date,
        status=EditionStatus(row.status),
        held=bool(row.held),
        recipients=row.recipients,
        note=row.note,
        frozen_at=row.frozen_at,
        finished_at=row.finished_at,
    )


def _article_to_json(article: Article) -> dict[str, Any]:
    return {
        "uid": article.uid,
        "title": article.title,
        "link": article.link,
        "published": article.published.isoformat(),
        "categories": list(article.categories),
        "author": article.author,
        "summary_html": article.summary_html,
        "content_html": article.content_html,
        "source": article.source,
        "updated": article.updated.isoformat() if article.updated else None,
        "image": _image_to_json(article.image),
    }


def _image_to_json(image: ArticleImage | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {"url": image.url, "alt": image.alt, "width": image.width, "height": image.height}


def _image_from_json(stored: Any) -> ArticleImage | None:
    """A frozen image as it was kept; editions frozen before images existed have none.

    The URL and sizes are checked again (cheap) so that an edited row cannot make the renderer
    show an unsafe link; the alt, clean when frozen, is only held to one line: cleaning it again
    would decode its entities a second time.
    """
    if not isinstance(stored, dict):
        return None
    url = safe_image_url(stored.get("url"))
    if url is None:
        return None
    alt = stored.get("alt")
    return ArticleImage(
        url=url,
        alt=excerpt(one_line(alt), MAX_ALT_CHARS) if isinstance(alt, str) else "",
        width=image_dimension(stored.get("width")),
        height=image_dimension(stored.get("height")),
    )


def _article_from_json(item: dict[str, Any]) -> Article:
    return Article(
        uid=item["uid"],
        title=item["title"],
        link=item["link"],
        published=datetime.fromisoformat(item["published"]),
        categories=tuple(item["categories"]),
        author=item["author"],
        summary_html=item["summary_html"],
        content_html=item["content_html"],
        source=item["source"],
        updated=datetime.fromisoformat(item["updated"]) if item["updated"] else None,
        image=_image_from_json(item.get("image")),
    )
