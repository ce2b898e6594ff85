"""The editors' curation of an edition (domain.curation) and the log of their changes.

One row per curated edition in ``edition_curations``; one row per change in ``edition_changes``.
The service (services/curation.py) makes a change in one write transaction: ``lock_curation``
(the row, locked), the edition's ``frozen_at`` read after that lock, then ``save_curation`` and
``record_change``. ``freeze_edition`` (ledger.py) takes the same lock and compares the revision
the send composed with: a change either lands before the freeze and is in the frozen edition,
or sees the edition frozen and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from newsletter.adapters.store.engine import StoreBase, StoreError
from newsletter.adapters.store.schema import edition_changes, edition_curations
from newsletter.domain.curation import AddedItem, Curation, EditorialChange


class CurationChanged(StoreError):
    """An editor changed the edition between the send's compose and its freeze: compose again."""

    exit_code = 75  # worth a retry at once: the send retries itself (services/delivery)


@dataclass(frozen=True, slots=True)
class ExcludedArticle:
    """An excluded article as stored: enough to show it once the feed has forgotten it."""

    uid: str
    title: str = ""
    url: str = ""
    section: str = ""


@dataclass(frozen=True, slots=True)
class StoredCuration:
    """One edition's curation row: the decisions, what was excluded, and the revision."""

    excluded: tuple[ExcludedArticle, ...] = ()
    lead: str = ""
    intro: str = ""
    subject: str = ""
    added: tuple[AddedItem, ...] = ()
    revision: int = 0  # 0: never changed
    updated_at: datetime | None = None
    # the domain value build_edition applies, derived from the fields above
    curation: Curation = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "curation",
            Curation(
                excluded=frozenset(e.uid for e in self.excluded),
                lead=self.lead,
                intro=self.intro,
                subject=self.subject,
                added=self.added,
            ),
        )


class CurationQueries(StoreBase):
    """The editors' curation of each edition, and the log of their changes."""

    def edition_curation(self, day: date) -> StoredCuration:
        """Edition ``day``'s curation (the empty one when the editors changed nothing)."""
        with self.read() as c:
            row = c.execute(
                select(edition_curations).where(edition_curations.c.edition_date == day)
            ).first()
        return _stored(row) if row is not None else StoredCuration()

    def curations_of(self, days: Sequence[date]) -> dict[date, Curation]:
        """The curation of each of ``days`` that has one, in one statement (the archive list)."""
        if not days:
            return {}
        query = select(edition_curations).where(edition_curations.c.edition_date.in_(list(days)))
        with self.read() as c:
            rows = c.execute(query).all()
        return {row.edition_date: _stored(row).curation for row in rows}

    def lock_curation(self, day: date) -> StoredCuration:
        """Inside a write transaction: edition ``day``'s curation row, created empty if absent
        and locked until the transaction ends (FOR UPDATE; SQLite's BEGIN IMMEDIATE already
        serialises writers). The edition's frozen state must be read after this lock."""
        with self.write() as c:
            return _stored(_locked_row(c, day, self.now()))

    def save_curation(self, day: date, stored: StoredCuration) -> None:
        """Write edition ``day``'s curation as ``stored`` says (revision included): call it
        inside the write transaction that locked the row."""
        with self.write() as c:
            c.execute(
                update(edition_curations)
                .where(edition_curations.c.edition_date == day)
                .values(
                    excluded=json.dumps(
                        [_excluded_to_json(e) for e in stored.excluded], ensure_ascii=False
                    ),
                    lead_uid=stored.lead,
                    intro=stored.intro,
                    subject=stored.subject,
                    added=json.dumps([_added_to_json(a) for a in stored.added], ensure_ascii=False),
                    revision=stored.revision,
                    updated_at=self.now(),
                )
            )

    def record_change(self, day: date, who: str, action: str, detail: str) -> None:
        """Log one editorial change of edition ``day``, now."""
        with self.write() as c:
            c.execute(
                insert(edition_changes).values(
                    edition_date=day, at=self.now(), who=who, action=action, detail=detail
                )
            )

    def curation_changes(self, day: date) -> list[EditorialChange]:
        """Edition ``day``'s editorial changes, oldest first."""
        with self.read() as c:
            rows = c.execute(
                select(
                    edition_changes.c.at,
                    edition_changes.c.who,
                    edition_changes.c.action,
                    edition_changes.c.detail,
                )
                .where(edition_changes.c.edition_date == day)
                .order_by(edition_changes.c.id)
            ).all()
        return [EditorialChange(r.at, r.who, r.action, r.detail) for r in rows]


def _locked_row(c: Connection, day: date, now: datetime) -> Any:
    """Insert-if-absent, then SELECT ... FOR UPDATE. On PostgreSQL two transactions inserting
    the same absent row wait for each other on the primary key, so the freeze and a change can
    never both see "no row" and miss each other."""
    dialect_insert: Any
    if c.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    c.execute(
        dialect_insert(edition_curations)
        .values(
            edition_date=day,
            excluded="[]",
            lead_uid="",
            intro="",
            subject="",
            added="[]",
            revision=0,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["edition_date"])
    )
    return c.execute(
        select(edition_curations).where(edition_curations.c.edition_date == day).with_for_update()
    ).one()


def check_revision(c: Connection, day: date, revision: int, now: datetime) -> None:
    """For the freeze, in its transaction: CurationChanged unless edition ``day``'s curation is
    still at ``revision`` (the one the send composed the edition with). Locks the row, so a
    change waiting on it sees the edition frozen once the freeze commits."""
    current = _locked_row(c, day, now).revision
    if current != revision:
        raise CurationChanged(
            f"edition {day.isoformat()} was changed by an editor while the send was starting",
            "send again: it composes the edition with the change",
        )


def _stored(row: Any) -> StoredCuration:
    return StoredCuration(
        excluded=tuple(_excluded_from_json(item) for item in json.loads(row.excluded)),
        lead=row.lead_uid,
        intro=row.intro,
        subject=row.subject,
        added=tuple(_added_from_json(item) for item in json.loads(row.added)),
        revision=row.revision,
        updated_at=row.updated_at,
    )


def _excluded_to_json(article: ExcludedArticle) -> dict[str, str]:
    return {
        "uid": article.uid,
        "title": article.title,
        "url": article.url,
        "section": article.section,
    }


def _excluded_from_json(item: dict[str, Any]) -> ExcludedArticle:
    return ExcludedArticle(
        uid=str(item["uid"]),
        title=str(item.get("title", "")),
        url=str(item.get("url", "")),
        section=str(item.get("section", "")),
    )


def _added_to_json(item: AddedItem) -> dict[str, str]:
    return {
        "url": item.url,
        "title": item.title,
        "section": item.section,
        "summary": item.summary,
        "image_url": item.image_url,
    }


def _added_from_json(item: dict[str, Any]) -> AddedItem:
    return AddedItem(
        url=str(item["url"]),
        title=str(item.get("title", "")),
        section=str(item.get("section", "")),
        summary=str(item.get("summary", "")),
        image_url=str(item.get("image_url", "")),
    )
