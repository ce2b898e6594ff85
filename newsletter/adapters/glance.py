"""A read-only glance at a SQLite store through the ``sqlite3`` module: what `newsletter status`
reads, without SQLAlchemy.

Issue 16 asks `status` to answer in under a second while a million-subscriber send keeps the
machine's cores busy; SQLAlchemy's import alone took about half a second of it, and opening the
store took the write lock (``migrate`` begins with BEGIN IMMEDIATE) that the send's writers hold
most of the time. ``SqliteGlance`` answers the few questions `status` asks (the same method names
and return types as ``Store``'s, which ``services.status.StatusSource`` names) with the same
statements the store's Core queries make, in one read transaction: a consistent snapshot that,
in WAL mode, never waits for a writer.

It lives here, not in ``adapters/store/``: importing any module of that package runs its
``__init__``, which imports SQLAlchemy. It is the one exception to "every SQL statement is in
the store package", read-only, and each statement below names the Store method it mirrors.

``open_glance`` returns a glance only when that is certainly safe: a plain ``sqlite:///`` URL
naming a file that exists and whose schema is at ``LATEST_SCHEMA_VERSION``. Anything else (a
missing file the store would create, an older schema it would migrate, a newer one it refuses, a
file that is not a database, PostgreSQL, a URL with options) gets None, and the caller opens
the store as before, with its behaviour and its messages.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Self

from newsletter.domain import DeliveryStatus, EditionRecord, EditionStatus
from newsletter.domain.curation import EditorialChange
from newsletter.domain.errors import NewsletterError
from newsletter.domain.returned import MAILED_STATUSES

#: The schema version of the last migration (``store/migrations.py``), known without importing
#: it; ``migrations`` refuses to load when its number of migrations says otherwise, so a new
#: migration cannot be added without raising this too.
LATEST_SCHEMA_VERSION = 8

# As long as the store's SQLITE_BUSY_TIMEOUT_MS: in WAL mode a reader only waits in rare moments
# (a writer recovering the WAL after a crash), and then it waits as the store would.
BUSY_TIMEOUT_S = 30.0

# The URL prefixes SQLAlchemy reads as SQLite through the standard library's driver, followed by
# the third slash that starts the path (``sqlite:///relative.db``, ``sqlite:////absolute.db``).
_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")

# migrations._current_version: the latest version recorded, 0 on a database with none.
_SCHEMA_VERSION = "SELECT coalesce(max(schema_version.version), 0) FROM schema_version"

# LedgerQueries.latest_edition_date.
_LATEST_EDITION_DATE = "SELECT max(editions.edition_date) FROM editions"

# LedgerQueries.edition_record (the columns edition_record_of reads).
_EDITION_RECORD = (
    "SELECT editions.edition_date, editions.status, editions.held, editions.recipients, "
    "editions.note, editions.frozen_at, editions.finished_at "
    "FROM editions WHERE editions.edition_date = ?"
)

# LedgerQueries.delivery_counts: walks ix_deliveries_edition_status.
_DELIVERY_COUNTS = (
    "SELECT deliveries.status, count(*) FROM deliveries "
    "WHERE deliveries.edition_date = ? GROUP BY deliveries.status"
)

# LedgerQueries.delivery_failures: the first ``limit`` failed rows, in id order.
_DELIVERY_FAILURES = (
    "SELECT subscribers.email, deliveries.last_error "
    "FROM deliveries JOIN subscribers ON subscribers.id = deliveries.subscriber_id "
    "WHERE deliveries.edition_date = ? AND deliveries.status = ? "
    "ORDER BY deliveries.id LIMIT ?"
)

# ReturnedQueries.returned_counts, per edition (the store asks for several with IN): what came
# back, counted from ix_deliveries_edition_returned (migration 8) ...
_RETURNED_KINDS = (
    "SELECT deliveries.returned_kind, count(*) FROM deliveries "
    "WHERE deliveries.edition_date = ? AND deliveries.returned_kind IS NOT NULL "
    "GROUP BY deliveries.returned_kind"
)
# ... and the messages that went to the relay, the rates' denominator (domain MAILED_STATUSES).
_MAILED = tuple(status.value for status in MAILED_STATUSES)
_MAILED_COUNT = (
    "SELECT count(*) FROM deliveries "
    f"WHERE deliveries.edition_date = ? AND deliveries.status IN ({', '.join('?' * len(_MAILED))})"
)

# CurationQueries.curation_changes: oldest first.
_CURATION_CHANGES = (
    "SELECT edition_changes.at, edition_changes.who, edition_changes.action, "
    "edition_changes.detail FROM edition_changes "
    "WHERE edition_changes.edition_date = ? ORDER BY edition_changes.id"
)


class GlanceFailed(NewsletterError):
    """The database failed in the middle of a glance (an I/O error, a file damaged since it was
    opened): the same line and exit status the commands give any database failure."""

    exit_code = 75  # EX_TEMPFAIL, as cli.common.DATABASE_ERROR_EXIT

    def __init__(self, err: sqlite3.Error) -> None:
        problem = " ".join(str(err).split()) or type(err).__name__
        super().__init__(
            f"the database failed: {problem} (check NEWSLETTER_DATABASE_URL and the database "
            "server, then run the command again)"
        )


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names, as SQLAlchemy reads it (relative to the working
    folder after three slashes, absolute after four); None for every URL the glance leaves to
    the store: another database, an in-memory one, a ``file:`` URI, query options, or escapes
    (``%``) whose decoding is SQLAlchemy's business."""
    prefix = next((p for p in _SQLITE_PREFIXES if url.startswith(p)), None)
    if prefix is None:
        return None
    database = url[len(prefix) :]
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if any(char in database for char in "?%\x00"):
        return None
    return Path(database)


def open_glance(url: str) -> SqliteGlance | None:
    """A glance at the SQLite database ``url`` names, or None when the store must open it (see
    the module's docstring). Never creates a file, never writes."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    try:
        # mode=rw: a file deleted since the check above is an error here, never created.
        conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit: the BEGIN below is ours
        )
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA query_only=1")
        conn.execute("BEGIN")
        (version,) = conn.execute(_SCHEMA_VERSION).fetchone()
    except sqlite3.Error:  # not a database, no schema_version table yet: the store decides
        conn.close()
        return None
    if version != LATEST_SCHEMA_VERSION:
        conn.close()
        return None
    return SqliteGlance(conn)


class SqliteGlance:
    """The store's read methods `status` uses, over one read transaction of a ``sqlite3``
    connection; values converted as SQLAlchemy's SQLite types do (``Date`` is 'YYYY-MM-DD' text,
    ``UTCDateTime`` naive UTC text made aware, ``Boolean`` 0/1). Build it with ``open_glance``;
    close it soon: an open read transaction holds back WAL checkpoints."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def close(self) -> None:
        try:
            self._conn.execute("COMMIT")  # ends the read transaction; nothing was written
        except sqlite3.Error:
            pass
        finally:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _rows(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(statement, params).fetchall()
        except sqlite3.Error as err:
            raise GlanceFailed(err) from None

    def latest_edition_date(self) -> date | None:
        """The most recent edition the ledger knows."""
        ((latest,),) = self._rows(_LATEST_EDITION_DATE, ())
        return _date(latest) if latest is not None else None

    def edition_record(self, day: date) -> EditionRecord | None:
        """One edition's ledger entry, or None when it was never held, frozen or recorded."""
        rows = self._rows(_EDITION_RECORD, (day.isoformat(),))
        if not rows:
            return None
        edition_date, status, held, recipients, note, frozen_at, finished_at = rows[0]
        return EditionRecord(
            edition_date=_date(edition_date),
            status=EditionStatus(status),
            held=bool(held),
            recipients=recipients,
            note=note,
            frozen_at=_utc_or_none(frozen_at),
            finished_at=_utc_or_none(finished_at),
        )

    def delivery_counts(self, day: date) -> dict[str, int]:
        """How many rows of edition ``day`` are in each DeliveryStatus."""
        return dict(self._rows(_DELIVERY_COUNTS, (day.isoformat(),)))

    def delivery_failures(self, day: date, limit: int = 1000) -> list[tuple[str, str]]:
        """(address, last error) of the failed rows of edition ``day``."""
        params = (day.isoformat(), DeliveryStatus.FAILED.value, limit)
        return [(email, error) for email, error in self._rows(_DELIVERY_FAILURES, params)]

    def returned_counts(self, days: Iterable[date]) -> dict[date, dict[str, int]]:
        """Per edition of ``days``: how many deliveries came back of each ReturnedKind, and under
        the key "mailed" how many went to the relay. Like the store's, a defaultdict: an edition
        nothing was mailed for reads as {}."""
        counts: dict[date, dict[str, int]] = defaultdict(dict)
        for day in days:
            for kind, n in self._rows(_RETURNED_KINDS, (day.isoformat(),)):
                counts[day][kind] = n
            ((mailed,),) = self._rows(_MAILED_COUNT, (day.isoformat(), *_MAILED))
            if mailed:  # the store's GROUP BY gives no row, so no key, for an edition with none
                counts[day]["mailed"] = mailed
        return counts

    def curation_changes(self, day: date) -> list[EditorialChange]:
        """Edition ``day``'s editorial changes, oldest first."""
        return [
            EditorialChange(_utc(at), who, action, detail)
            for at, who, action, detail in self._rows(_CURATION_CHANGES, (day.isoformat(),))
        ]


def _date(text: str) -> date:
    """A ``Date`` column as SQLAlchemy's SQLite type reads it."""
    return date.fromisoformat(text)


def _utc(text: str) -> datetime:
    """A ``UTCDateTime`` column: SQLite keeps naive UTC ("2026-01-27 06:00:00.000000") and
    schema.UTCDateTime re-attaches UTC on reading, as here."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _utc_or_none(text: str | None) -> datetime | None:
    return None if text is None else _utc(text)
