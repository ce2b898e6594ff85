"""The public archive's reads: which editions went out, newest first, and their frozen articles.

An edition is in the archive once readers may hold it: it was frozen with at least one article
(``freeze_edition``, at its first send) and then either finished (``sent``) or mailed to at least
one reader (a delivery ``sent``, or ``uncertain``: the relay took the message whole). A frozen
edition that an editor held before any message went out is not public, nor is one whose send
stopped before its first message: nobody has it, so nobody can be sent to its web version.
Once in, an edition stays in: nothing unfreezes an edition or unsends a message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import exists, or_, select

from newsletter.adapters.store.engine import StoreBase
from newsletter.adapters.store.ledger import _article_from_json
from newsletter.adapters.store.schema import deliveries, edition_articles, editions
from newsletter.domain import Article, DeliveryStatus, EditionStatus

# Deliveries that mean a reader (probably) has the edition in their mailbox.
_MAILED = (DeliveryStatus.SENT.value, DeliveryStatus.UNCERTAIN.value)


@dataclass(frozen=True, slots=True)
class ArchivedEdition:
    """One edition of the archive: its date and when it was frozen and finished."""

    edition_date: date
    frozen_at: datetime
    finished_at: datetime | None  # None while its send is still under way (or interrupted)


def _in_archive() -> Any:
    """The WHERE clause of "this ``editions`` row is in the archive" (see the module's doc)."""
    has_article = exists().where(edition_articles.c.edition_date == editions.c.edition_date)
    # ix_deliveries_edition_status (edition_date, status, id) answers this without a scan.
    mailed = exists().where(
        deliveries.c.edition_date == editions.c.edition_date,
        deliveries.c.status.in_(_MAILED),
    )
    return (
        editions.c.frozen_at.is_not(None)
        & editions.c.articles.is_not(None)
        & has_article
        & or_(editions.c.status == EditionStatus.SENT.value, mailed)
    )


class ArchiveQueries(StoreBase):
    """What /archive, its Atom feed and each edition's web version read."""

    def archived_editions(self, limit: int, before: date | None = None) -> list[ArchivedEdition]:
        """The ``limit`` newest editions of the archive (older than ``before`` when given).

        Dates and times only, no articles: the list page does not read the frozen JSON of every
        edition it shows (the service reads it once per edition and keeps what it needs).
        """
        query = (
            select(editions.c.edition_date, editions.c.frozen_at, editions.c.finished_at)
            .where(_in_archive())
            .order_by(editions.c.edition_date.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(editions.c.edition_date < before)
        with self.read() as c:
            rows = c.execute(query).all()
        return [ArchivedEdition(r.edition_date, r.frozen_at, r.finished_at) for r in rows]

    def archived_edition(self, day: date) -> ArchivedEdition | None:
        """Edition ``day`` if it is in the archive, else None (unknown, not sent yet, held...)."""
        query = select(editions.c.edition_date, editions.c.frozen_at, editions.c.finished_at).where(
            editions.c.edition_date == day, _in_archive()
        )
        with self.read() as c:
            row = c.execute(query).first()
        return ArchivedEdition(row.edition_date, row.frozen_at, row.finished_at) if row else None

    def frozen_articles_of(self, days: Sequence[date]) -> dict[date, list[Article]]:
        """The frozen articles of each of ``days`` that was frozen, in one statement."""
        if not days:
            return {}
        query = select(editions.c.edition_date, editions.c.articles).where(
            editions.c.edition_date.in_(list(days)), editions.c.articles.is_not(None)
        )
        with self.read() as c:
            rows = c.execute(query).all()
        return {
            row.edition_date: [_article_from_json(item) for item in json.loads(row.articles)]
            for row in rows
        }
