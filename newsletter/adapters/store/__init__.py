"""The store: the database schema, its numbered migrations and every query of the project.

SQLAlchemy 2 Core, no ORM. The same code runs on SQLite (the default file under ``subscribers/``)
and on PostgreSQL (``postgresql+psycopg://...``); the only dialect-specific pieces are the
connection set-up in ``engine._configure_sqlite``, the migration lock and ``StoreBase._insert``
(for ``ON CONFLICT DO NOTHING``). Every SQL statement of the project is in this package, with
one read-only exception: ``adapters/glance.py``, the statements `status` reads a SQLite store
with through the ``sqlite3`` module (importing this package imports SQLAlchemy).

Modules, by kind of data: ``schema`` (the tables), ``migrations``, ``engine`` (engine, transactions,
busy retries, errors), ``subscribers`` (subscribers and suppressions), ``ledger`` (editions and
deliveries), ``returned`` (bounces and complaints on the ledger), ``locks`` (named leases and the editors'
previews), ``archive`` (the sent editions the public archive shows), ``curation`` (the editors'
decisions about an edition and their log), ``clicks`` (click and open counts, their fold), ``sent`` (the send's per-message write). This module is the facade:
``Store`` puts the query mixins together, ``open_store`` builds it, and every name the rest of the
project imports from ``newsletter.adapters.store`` is re-exported here.
"""

from __future__ import annotations

from sqlalchemy.exc import DatabaseError as SqlDatabaseError

from newsletter.adapters.store.archive import ArchivedEdition, ArchiveQueries
from newsletter.adapters.store.clicks import ClickQueries
from newsletter.adapters.store.curation import (
    CurationChanged,
    CurationQueries,
    ExcludedArticle,
    StoredCuration,
)
from newsletter.adapters.store.engine import (
    BUSY_ATTEMPTS,
    SQLITE_BUSY_TIMEOUT_MS,
    WEB_BUSY_ATTEMPTS,
    WEB_BUSY_TIMEOUT_MS,
    Clock,
    DatabaseBusy,
    DatabaseError,
    DatabaseFailure,
    StoreBase,
    StoreError,
    _one_line,
    create_store_engine,
    mask_password,
    redact_url,
    utc_now,
)
from newsletter.adapters.store.health import DatabaseHealth, database_exists, inspect_database
from newsletter.adapters.store.ledger import ClaimedDelivery, EditionRecord, LedgerQueries
from newsletter.adapters.store.locks import LockQueries
from newsletter.adapters.store.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    _current_version,
    migrate,
)
from newsletter.adapters.store.returned import ReturnedQueries, ReturnedTarget
from newsletter.adapters.store.schema import METADATA, UTCDateTime
from newsletter.adapters.store.sent import SentLedger
from newsletter.adapters.store.subscribers import (
    CATEGORY_SEPARATOR,
    NewSubscriber,
    SubscriberQueries,
    join_categories,
    new_nonce,
    split_categories,
)
from newsletter.adapters.store.summaries import EditionSummary, SummaryQueries

__all__ = [
    "BUSY_ATTEMPTS",
    "CATEGORY_SEPARATOR",
    "LATEST_VERSION",
    "METADATA",
    "MIGRATIONS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "WEB_BUSY_ATTEMPTS",
    "WEB_BUSY_TIMEOUT_MS",
    "ArchivedEdition",
    "ClaimedDelivery",
    "Clock",
    "CurationChanged",
    "DatabaseBusy",
    "DatabaseError",
    "DatabaseFailure",
    "DatabaseHealth",
    "EditionRecord",
    "EditionSummary",
    "ExcludedArticle",
    "NewSubscriber",
    "ReturnedTarget",
    "SentLedger",
    "Store",
    "StoreError",
    "StoredCuration",
    "UTCDateTime",
    "create_store_engine",
    "database_exists",
    "inspect_database",
    "join_categories",
    "mask_password",
    "migrate",
    "new_nonce",
    "open_store",
    "redact_url",
    "split_categories",
    "utc_now",
]


class Store(
    SubscriberQueries,
    LedgerQueries,
    ReturnedQueries,
    SummaryQueries,
    ArchiveQueries,
    LockQueries,
    CurationQueries,
    ClickQueries,
    StoreBase,
):
    """Every query of the project, as named methods. Build it with ``open_store(url)``."""

    def sent_ledger(self) -> SentLedger:
        """The send's group commit of "sent" on a connection of its own (``sent.py``); one thread
        uses it, and closes it."""
        return SentLedger(self.engine, self.now)

    def schema_version(self) -> int:
        """The version of the schema this database is at."""
        with self.read() as conn:
            return _current_version(conn)


def open_store(url: str, clock: Clock = utc_now, *, for_web: bool = False) -> Store:
    """Connect, set the connection up for the dialect and apply pending migrations.

    ``for_web``: a busy database makes a writer give up after WEB_BUSY_TIMEOUT_MS (the web app
    answers 503) instead of the commands' two minutes.
    """
    engine = create_store_engine(url, for_web=for_web)
    try:
        migrate(engine, clock=clock)
    except (
        SqlDatabaseError
    ) as err:  # unreachable, or not a database at all ("file is not a database")
        engine.dispose()
        raise StoreError(
            f"cannot open the database {redact_url(url)}: {_one_line(err.orig, url)}",
            "check NEWSLETTER_DATABASE_URL",
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, clock)
