"""The store: the database schema, its numbered migrations and every query of the project.

SQLAlchemy 2 Core, no ORM. The same code runs on SQLite (the default file under ``subscribers/``)
and on PostgreSQL (``postgresql+psycopg://...``); the only dialect-specific pieces are the
connection set-up in ``_configure_sqlite``, the migration lock and ``_insert`` (for
``ON CONFLICT DO NOTHING``).

Sections, in order: types and tables, engine and transactions, migrations, subscribers,
suppressions. Later features (the send ledger, editions, the scheduler lock) add their tables as
migration 2, 3 ... and their queries as new sections; a migration never changes once released.

Transactions: every public method opens its own transaction unless given ``conn``, a connection
from ``Store.write()`` / ``Store.read()``, to take part in a larger one (a batch of an import, say).
On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` so that it takes the database's
write lock up front: two writers then queue on ``busy_timeout`` instead of one of them failing
with "database is locked" half-way, which is what makes claim-style queries safe. A writer that
still finds the lock taken retries its BEGIN (see ``_begin``) and gives up with DatabaseBusy after
about two minutes; long writers (an import) commit in batches so that this never happens to
the others.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RootTransaction, Row, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.types import TypeDecorator

from newsletter.addresses import Address, suppression_hash
from newsletter.domain import (
    Article,
    ConsentSource,
    DeliveryStatus,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.errors import NewsletterError, UsageError

Clock = Callable[[], datetime]

# Categories are stored in one text column, joined with this; the service never lets a category
# name contain it (it is also the separator of the CSV ``categories`` field).
CATEGORY_SEPARATOR = "|"
# SQLite's own wait for the write lock, per attempt (the busy handler inside BEGIN IMMEDIATE).
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Attempts at the write lock before a writer gives up with DatabaseBusy: about two minutes in all,
# so that a long batch writer (an import, a send's freeze) delays others instead of failing them.
BUSY_ATTEMPTS = 4
# The web app waits far less: a reverse proxy gives up on a request after about a minute, and a
# 503 with Retry-After tells a mail provider's one-click POST to come back.
WEB_BUSY_TIMEOUT_MS = 5_000
WEB_BUSY_ATTEMPTS = 1
# Execution option carrying a store's number of attempts down to _begin.
_ATTEMPTS_OPTION = "newsletter_busy_attempts"
# Private and undocumented: lets the tests shorten SQLITE_BUSY_TIMEOUT_MS (and so the whole wait).
_TEST_BUSY_TIMEOUT_ENV = "NEWSLETTER_TEST_BUSY_TIMEOUT_MS"
# Keys per IN (...) lookup: well under SQLite's bound-parameter limit (32,766).
LOOKUP_CHUNK = 900
# Execution option that marks a transaction as a writer (see _begin_sqlite).
_WRITE_OPTION = "newsletter_write"
# Arbitrary constant naming our PostgreSQL advisory lock for migrations.
_PG_MIGRATION_LOCK = 0x6E6C5F6D6967
_URL_HINT = "expected sqlite:///path/to/file.db or postgresql+psycopg://user@host/db"

log = logging.getLogger(__name__)


class StoreError(NewsletterError):
    """The database cannot be opened or is in a state this version cannot use."""


class DatabaseBusy(StoreError):
    """Another process held the database's write lock for longer than a writer waits.

    Raised by the store after its bounded retries; entry points answer it with "try again"
    (the web app: 503 with Retry-After; the mail commands: exit 75, EX_TEMPFAIL).
    """

    exit_code = 75


def _database_busy(started: float) -> DatabaseBusy:
    waited = time.monotonic() - started
    return DatabaseBusy(
        f"the database is busy: another process held its write lock for {waited:.0f} s",
        "try again once the other command (an import, a send) has finished",
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Types and tables (the current schema; migrations below build it step by step)
# ---------------------------------------------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend.

    SQLite has no time zone type: store naive UTC there and re-attach UTC when reading.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _DriverValue(TypeDecorator[Any]):
    """A timestamp parameter already in the driver's form (see Store._bound_datetime).

    No per-row processing. Its SQL type must still be a timestamp where the driver declares
    parameter types: psycopg casts each one, and a VARCHAR cast into a timestamptz column fails.
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(String())


METADATA = MetaData()

schema_version = Table(
    "schema_version",
    METADATA,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

subscribers = Table(
    "subscribers",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),
    Column("name", String(256), nullable=False, default=""),
    Column("locale", String(35), nullable=False, default=""),
    Column("categories", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("status_changed_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),
    Column("unsubscribed_at", UTCDateTime, nullable=True),
    Column("consent_source", String(16), nullable=False),
    Column("consent_at", UTCDateTime, nullable=True),
    Column("consent_detail", String(512), nullable=False, default=""),
    # Set by each web sign-up, bound into its confirmation link, cleared when the address stops
    # (unsubscribed, bounced, complained): a link mailed before that can never confirm again.
    Column("confirm_nonce", String(32), nullable=True),
    Index("ix_subscribers_status_id", "status", "id"),
)

# Forgotten addresses: only the SHA-256 of the email key (see addresses.suppression_hash).
suppressions = Table(
    "suppressions",
    METADATA,
    Column("address_hash", String(64), primary_key=True),
    Column("reason", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# The send ledger. An edition is frozen at its first send: its articles (so a re-run sends the same
# content whatever the feed says by then) and its recipients (one delivery row per subscriber).
editions = Table(
    "editions",
    METADATA,
    Column("edition_date", Date, primary_key=True),
    Column("status", String(16), nullable=False),  # see EditionStatus
    Column("held", Boolean, nullable=False, default=False),
    Column("articles", Text, nullable=True),  # JSON of the frozen articles; NULL until frozen
    Column("recipients", Integer, nullable=False, default=0),
    Column("note", Text, nullable=False, default=""),
    Column("frozen_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Which article went out in which edition: an article is never sent in two editions.
edition_articles = Table(
    "edition_articles",
    METADATA,
    Column(
        "edition_date",
        Date,
        ForeignKey("editions.edition_date", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("uid", String(2048), primary_key=True),
    Index("ix_edition_articles_uid", "uid"),
)

deliveries = Table(
    "deliveries",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column(
        "edition_date",
        Date,
        ForeignKey("editions.edition_date", ondelete="CASCADE"),
        nullable=False,
    ),
    # Forgetting a subscriber erases their delivery history too (right to erasure).
    Column(
        "subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("status", String(16), nullable=False),  # DeliveryStatus
    Column("owner", String(128), nullable=True),  # the sender holding the lease
    Column("lease_until", UTCDateTime, nullable=True),
    Column("not_before", UTCDateTime, nullable=True),  # backoff after a 4xx or a dropped connection
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=False, default=""),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("edition_date", "subscriber_id", name="uq_deliveries_edition_subscriber"),
    Index("ix_deliveries_edition_status", "edition_date", "status", "id"),
)

# Named leases: the scheduler's "one sender per database" lock.
locks = Table(
    "locks",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
)

# When the editors' preview of an edition went out, so that a restarted scheduler does not mail
# the editors twice. No foreign key: a preview must not create an edition row in the ledger.
edition_previews = Table(
    "edition_previews",
    METADATA,
    Column("edition_date", Date, primary_key=True),
    Column("sent_at", UTCDateTime, nullable=False),
    Column("recipients", Integer, nullable=False),
)

# Recording "sent" is conditional on the lease: a sender that lost a row to another sender (it was
# paused past its lease) must not overwrite what the other one recorded. RETURNING tells which ids
# were still ours, so a lost race is reported instead of silently recorded.
_MARK_SENT = (
    update(deliveries)
    .where(
        deliveries.c.id.in_(bindparam("b_ids", expanding=True)),
        deliveries.c.owner == bindparam("b_owner"),
        deliveries.c.status == DeliveryStatus.SENDING.value,
    )
    .values(
        status=DeliveryStatus.SENT.value,
        owner=None,
        lease_until=None,
        not_before=None,
        last_error="",
        sent_at=bindparam("b_now", type_=UTCDateTime),
        updated_at=bindparam("b_now", type_=UTCDateTime),
    )
    .returning(deliveries.c.id)
)


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    """What a caller supplies to create a subscriber; the store adds id and timestamps."""

    address: Address
    name: str
    locale: str
    categories: tuple[str, ...]
    status: SubscriberStatus
    consent_source: ConsentSource
    consent_detail: str


# ---------------------------------------------------------------------------------------------
# Engine and transactions
# ---------------------------------------------------------------------------------------------


def open_store(url: str, clock: Clock = utc_now, *, for_web: bool = False) -> Store:
    """Connect, set the connection up for the dialect and apply pending migrations.

    ``for_web``: a busy database makes a writer give up after WEB_BUSY_TIMEOUT_MS (the web app
    answers 503) instead of the commands' two minutes.
    """
    engine = create_store_engine(url, for_web=for_web)
    try:
        migrate(engine, clock=clock)
    except OperationalError as err:
        engine.dispose()
        raise StoreError(
            f"cannot open the database {redact_url(url)}: {_one_line(err.orig, url)}",
            "check NEWSLETTER_DATABASE_URL",
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, clock)


def create_store_engine(url: str, *, for_web: bool = False) -> Engine:
    """An engine for a SQLite or PostgreSQL URL, without touching the schema."""
    if "@" in (_credentials(url)[1] or ""):
        raise UsageError(
            "the password in NEWSLETTER_DATABASE_URL contains '@', which ends the user part of "
            "a URL",
            "write each @ of the password as %40",
        )
    try:
        parsed = make_url(url)
        engine = create_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ImportError) as err:
        raise UsageError(
            f"NEWSLETTER_DATABASE_URL={redact_url(url)!r} is not usable: {_one_line(err, url)}",
            _URL_HINT,
        ) from None
    if engine.dialect.name == "sqlite":
        _create_parent_folder(parsed.database)
        _configure_sqlite(engine, _busy_timeout_ms(WEB_BUSY_TIMEOUT_MS if for_web else None))
    elif engine.dialect.name != "postgresql":
        engine.dispose()
        raise UsageError(
            f"database {engine.dialect.name!r} is not supported", "use SQLite or PostgreSQL"
        )
    attempts = WEB_BUSY_ATTEMPTS if for_web else BUSY_ATTEMPTS
    return engine.execution_options(**{_ATTEMPTS_OPTION: attempts})


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ***: fit for any message or log line."""
    return _credentials(url)[0]


def mask_password(message: str, url: str) -> str:
    """``message`` with the password of database ``url`` masked wherever it appears.

    The drivers and SQLAlchemy sometimes quote the URL or DSN they were given, so the password is
    masked as plain text (as written and as decoded), not only in URL form.
    """
    _, written = _credentials(url)
    secrets = {written} if written else set()
    try:
        decoded = make_url(url).password
    except (ArgumentError, ValueError, TypeError):
        decoded = None
    if decoded:
        secrets.add(str(decoded))
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def _credentials(url: str) -> tuple[str, str | None]:
    """(``url`` with its password masked, the password as written or None).

    Done on the text, not with make_url, because it must also work for what make_url cannot
    parse, and because the user info ends at the *last* @ (a password with an unencoded @ is
    split differently by SQLAlchemy, which would show its tail as the host name).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return (f"***@{url.rpartition('@')[2]}" if "@" in url else url), None
    userinfo, at, location = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url, None
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{user}:***@{location}", password


def _one_line(err: object, url: str) -> str:
    """A driver's or SQLAlchemy's message as one line, with no password of ``url`` in it."""
    return mask_password(" ".join(str(err).split()), url)


def _busy_timeout_ms(wanted: int | None = None) -> int:
    raw = os.environ.get(_TEST_BUSY_TIMEOUT_ENV, "")
    if raw.isdigit():
        return int(raw) if wanted is None else min(int(raw), wanted)
    return SQLITE_BUSY_TIMEOUT_MS if wanted is None else wanted


def _create_parent_folder(database: str | None) -> None:
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(
                f"cannot create the database folder {Path(database).parent}: {err.strerror or err}",
                "check NEWSLETTER_DATABASE_URL",
            ) from None


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys and a busy timeout on every connection; we issue BEGIN ourselves."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing its own (deferred, late) BEGIN; _begin_sqlite does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # First, so that the journal-mode switch of a new file waits like everything else.
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a killed process loses
        # nothing, a power cut may lose the last few commits (at worst a re-sent message).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_sqlite(conn: Connection) -> None:
        writer = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


@contextmanager
def _transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: write})
        started = time.monotonic()
        try:
            with _begin(conn, started):
                yield conn
        except OperationalError as err:
            # Busy after BEGIN (rare in WAL mode): the work was rolled back whole, but the body
            # cannot be re-run from here, so the caller gets the one-line error to retry on.
            if _is_busy(err):
                raise _database_busy(started) from err
            raise


def _begin(conn: Connection, started: float) -> RootTransaction:
    """Begin, retrying while the database is busy; DatabaseBusy after BUSY_ATTEMPTS.

    Only the BEGIN is retried: on SQLite a writer's BEGIN IMMEDIATE is where the write lock is
    taken (and where SQLite's busy_timeout waits), and nothing has run yet when it fails, so a
    retry cannot repeat any work.
    """
    attempts = conn.get_execution_options().get(_ATTEMPTS_OPTION, BUSY_ATTEMPTS)
    attempt = 1
    while True:
        try:
            return conn.begin()
        except OperationalError as err:
            if not _is_busy(err):
                raise
            if attempt >= attempts:
                raise _database_busy(started) from None
            if attempt == 1:
                log.warning(
                    "database busy: another process holds the write lock; waiting for it "
                    "(up to %d attempts)",
                    attempts,
                )
        time.sleep(0.1 * 2**attempt)  # a short pause, then SQLite's busy wait again
        attempt += 1


def _is_busy(err: OperationalError) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY, any extended code)."""
    orig = err.orig
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(orig)


# ---------------------------------------------------------------------------------------------
# Migrations: numbered, applied in order at open, each inside the one migration transaction
# ---------------------------------------------------------------------------------------------


def _migration_1(conn: Connection) -> None:
    """Subscribers and suppressions. Frozen: later changes go in new migrations."""
    md = MetaData()
    Table(
        "subscribers",
        md,
        Column("id", Integer, primary_key=True),
        Column("email", String(320), nullable=False),
        Column("email_key", String(320), nullable=False, unique=True),
        Column("name", String(256), nullable=False),
        Column("locale", String(35), nullable=False),
        Column("categories", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("status_changed_at", UTCDateTime, nullable=False),
        Column("confirmed_at", UTCDateTime, nullable=True),
        Column("unsubscribed_at", UTCDateTime, nullable=True),
        Column("consent_source", String(16), nullable=False),
        Column("consent_at", UTCDateTime, nullable=True),
        Column("consent_detail", String(512), nullable=False),
        Index("ix_subscribers_status_id", "status", "id"),
    )
    Table(
        "suppressions",
        md,
        Column("address_hash", String(64), primary_key=True),
        Column("reason", String(64), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
    )
    md.create_all(conn)


def _migration_2(conn: Connection) -> None:
    """The send ledger: editions, their articles, deliveries; and the scheduler's locks."""
    md = MetaData()
    Table("subscribers", md, Column("id", Integer, primary_key=True))
    Table(
        "editions",
        md,
        Column("edition_date", Date, primary_key=True),
        Column("status", String(16), nullable=False),
        Column("held", Boolean, nullable=False),
        Column("articles", Text, nullable=True),
        Column("recipients", Integer, nullable=False),
        Column("note", Text, nullable=False),
        Column("frozen_at", UTCDateTime, nullable=True),
        Column("finished_at", UTCDateTime, nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    Table(
        "edition_articles",
        md,
        Column(
            "edition_date",
            Date,
            ForeignKey("editions.edition_date", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("uid", String(2048), primary_key=True),
        Index("ix_edition_articles_uid", "uid"),
    )
    Table(
        "deliveries",
        md,
        Column("id", Integer, primary_key=True),
        Column(
            "edition_date",
            Date,
            ForeignKey("editions.edition_date", ondelete="CASCADE"),
            nullable=False,
        ),
        Column(
            "subscriber_id",
            Integer,
            ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("status", String(16), nullable=False),
        Column("owner", String(128), nullable=True),
        Column("lease_until", UTCDateTime, nullable=True),
        Column("not_before", UTCDateTime, nullable=True),
        Column("attempts", Integer, nullable=False),
        Column("last_error", Text, nullable=False),
        Column("sent_at", UTCDateTime, nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
        UniqueConstraint("edition_date", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        Index("ix_deliveries_edition_status", "edition_date", "status", "id"),
    )
    Table(
        "locks",
        md,
        Column("name", String(64), primary_key=True),
        Column("owner", String(128), nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        Column("acquired_at", UTCDateTime, nullable=False),
    )
    for name in ("editions", "edition_articles", "deliveries", "locks"):
        md.tables[name].create(conn)


def _migration_3(conn: Connection) -> None:
    """The scheduler's record of the editors' previews."""
    md = MetaData()
    Table(
        "edition_previews",
        md,
        Column("edition_date", Date, primary_key=True),
        Column("sent_at", UTCDateTime, nullable=False),
        Column("recipients", Integer, nullable=False),
    )
    md.create_all(conn)


def _migration_4(conn: Connection) -> None:
    # subscribers.confirm_nonce: rows already there get NULL (see Store.confirm_signup).
    conn.execute(text("ALTER TABLE subscribers ADD COLUMN confirm_nonce VARCHAR(32)"))


#: migration N is MIGRATIONS[N - 1]; append, never edit or reorder.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
)
LATEST_VERSION = len(MIGRATIONS)


def migrate(engine: Engine, target: int | None = None, clock: Clock = utc_now) -> int:
    """Bring the schema to ``target`` (default: the latest) in one transaction; return it."""
    goal = LATEST_VERSION if target is None else target
    if not 0 <= goal <= LATEST_VERSION:
        raise ValueError(f"no schema version {goal}; this program knows 0..{LATEST_VERSION}")
    with _transaction(engine, write=True) as conn:
        _lock_migrations(conn)
        schema_version.create(conn, checkfirst=True)
        current = _current_version(conn)
        if current > LATEST_VERSION:
            raise StoreError(
                f"the database is at schema version {current}, "
                f"newer than this program's {LATEST_VERSION}",
                "upgrade newsletter",
            )
        for number in range(current + 1, goal + 1):
            MIGRATIONS[number - 1](conn)
            conn.execute(insert(schema_version).values(version=number, applied_at=clock()))
    return max(current, goal)


def _lock_migrations(conn: Connection) -> None:
    # Two processes starting at once must not both run a migration. SQLite's BEGIN IMMEDIATE
    # already serialises them; PostgreSQL needs a lock held until the transaction ends.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})


def _current_version(conn: Connection) -> int:
    return conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one()


class Store:
    """Every query of the project, as named methods. Build it with ``open_store(url)``."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.now = clock

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); commits on success."""
        with _transaction(self.engine, write=True) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction: a consistent snapshot."""
        with _transaction(self.engine, write=False) as conn:
            yield conn

    @contextmanager
    def _using(self, conn: Connection | None, *, write: bool) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with _transaction(self.engine, write=write) as fresh:
                yield fresh

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def schema_version(self) -> int:
        """The version of the schema this database is at."""
        with self.read() as conn:
            return _current_version(conn)

    # -----------------------------------------------------------------------------------------
    # Subscribers
    # -----------------------------------------------------------------------------------------

    def get(self, subscriber_id: int, conn: Connection | None = None) -> Subscriber | None:
        """One subscriber by id."""
        with self._using(conn, write=False) as c:
            row = c.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return _subscriber(row) if row else None

    def find_by_email(self, email_key: str, conn: Connection | None = None) -> Subscriber | None:
        """One subscriber by its comparison key (Address.key)."""
        with self._using(conn, write=False) as c:
            row = c.execute(select(subscribers).where(subscribers.c.email_key == email_key)).first()
        return _subscriber(row) if row else None

    def statuses_by_key(
        self, keys: Iterable[str], conn: Connection | None = None
    ) -> dict[str, SubscriberStatus]:
        """The status of each of these keys that is on the list (bulk check for an import)."""
        found: dict[str, SubscriberStatus] = {}
        with self._using(conn, write=False) as c:
            for chunk in _chunks(list(keys), LOOKUP_CHUNK):
                query = select(subscribers.c.email_key, subscribers.c.status).where(
                    subscribers.c.email_key.in_(chunk)
                )
                found.update((key, SubscriberStatus(status)) for key, status in c.execute(query))
        return found

    def add(self, new: NewSubscriber, conn: Connection | None = None) -> Subscriber:
        """Insert one subscriber (the caller checked it is not on the list)."""
        with self._using(conn, write=True) as c:
            now = self.now()
            values = {**self._row(new, now), **dict.fromkeys(_CREATION_STAMPS, now)}
            subscriber_id = c.execute(insert(subscribers).values(values)).inserted_primary_key[0]
            return self.get(subscriber_id, c)  # type: ignore[return-value]

    def add_many(self, news: Sequence[NewSubscriber], conn: Connection | None = None) -> int:
        """Bulk insert in the given order (one executemany); addresses already listed are skipped."""
        if not news:
            return 0
        now = self.now()
        bound_now = self._bound_datetime(now)
        rows = []
        for new in news:
            row = self._row(new, now)
            # Timestamps go in already in the driver's form (see _bulk_insert).
            for column in ("consent_at", "unsubscribed_at"):
                row[f"bulk_{column}"] = bound_now if row.pop(column) is not None else None
            rows.append({**row, "bulk_now": bound_now})
        with self._using(conn, write=True) as c:
            return c.execute(self._bulk_insert(), rows).rowcount

    def _bulk_insert(self) -> Any:
        """Every row of a batch is created at one moment, handed to the driver pre-converted:
        SQLAlchemy's per-row datetime conversion was most of a 100,000-row import's time.
        """
        stamp = bindparam("bulk_now", type_=_DriverValue())
        return (
            self._insert(subscribers)
            .values(dict.fromkeys(_CREATION_STAMPS, stamp))
            .values(
                consent_at=bindparam("bulk_consent_at", type_=_DriverValue()),
                unsubscribed_at=bindparam("bulk_unsubscribed_at", type_=_DriverValue()),
            )
            .on_conflict_do_nothing(index_elements=["email_key"])
        )

    def _bound_datetime(self, value: datetime) -> Any:
        """``value`` as UTCDateTime hands it to this database's driver."""
        dialect = self.engine.dialect
        processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        return processor(value) if processor else value

    def create_pending(
        self,
        email: Address,
        name: str,
        categories: Sequence[str],
        locale: str,
        source: ConsentSource = ConsentSource.WEB,
        detail: str = "",
    ) -> Subscriber:
        """A sign-up awaiting confirmation; an address already on the list keeps its status.
        Each sign-up gets a confirm nonce for its link (confirm_nonce): a pending address keeps
        the one it has, so that every mail it was sent works; any other gets a new one.
        """
        with self.write() as c:
            existing = self.find_by_email(email.key, c)
            if existing is None:
                new = NewSubscriber(
                    email, name, locale, tuple(categories), SubscriberStatus.PENDING, source, detail
                )
                created = self.add(new, c)
                c.execute(_touch(created.id, self.now()).values(confirm_nonce=new_nonce()))
                return created
            if existing.status is SubscriberStatus.PENDING:
                # Still unconfirmed: the latest form wins (the owner may have changed their mind).
                self.set_preferences(existing.id, categories, locale, c)
                nonce = self.confirm_nonce(existing.id, c) or new_nonce()
                c.execute(
                    _touch(existing.id, self.now()).values(
                        name=name, consent_detail=detail, confirm_nonce=nonce
                    )
                )
                return self.get(existing.id, c)  # type: ignore[return-value]
            # Active stays active; unsubscribed/bounced/complained stay so until their owner
            # follows this sign-up's link (confirm_signup): a sign-up form must not re-enrol
            # someone else's address. Only the link of this new sign-up can do that.
            c.execute(_touch(existing.id, self.now()).values(confirm_nonce=new_nonce()))
            return existing

    def confirm_nonce(self, subscriber_id: int, conn: Connection | None = None) -> str | None:
        """The nonce the subscriber's current confirmation link is bound to (None: no sign-up)."""
        with self._using(conn, write=False) as c:
            query = select(subscribers.c.confirm_nonce).where(subscribers.c.id == subscriber_id)
            return c.execute(query).scalar_one_or_none()

    def confirm_signup(
        self,
        subscriber_id: int,
        nonce: str | None,
        source: ConsentSource = ConsentSource.WEB,
        detail: str = "",
    ) -> tuple[Subscriber, bool] | None:
        """The owner confirmed the sign-up whose link carries ``nonce``: (subscriber, activated).

        None when that link is no longer good: the row is gone, or the nonce changed (a newer
        sign-up) or was cleared (the address stopped since). None as ``nonce`` stands for the
        links mailed before nonces existed, which only ever activate a pending address.
        An active address stays as it is (activated False: "already confirmed").
        """
        with self.write() as c:
            current = self.get(subscriber_id, c)
            if current is None or self.confirm_nonce(subscriber_id, c) != nonce:
                return None
            if current.status is SubscriberStatus.ACTIVE:
                return current, False
            if nonce is None and current.status is not SubscriberStatus.PENDING:
                return None
            confirmed = self._activate(subscriber_id, source, detail, c, confirmed=True)
            return (confirmed, True) if confirmed else None

    def confirm(
        self,
        subscriber_id: int,
        source: ConsentSource = ConsentSource.WEB,
        detail: str = "",
        conn: Connection | None = None,
    ) -> Subscriber | None:
        """The owner confirmed (double opt-in): active, consent recorded, any suppression lifted."""
        return self._activate(subscriber_id, source, detail, conn, confirmed=True)

    def vouch(
        self,
        subscriber_id: int,
        source: ConsentSource,
        detail: str = "",
        conn: Connection | None = None,
    ) -> Subscriber | None:
        """The operator vouches for a pending address (cli add): active, consent recorded."""
        return self._activate(subscriber_id, source, detail, conn, confirmed=False)

    def _activate(
        self,
        subscriber_id: int,
        source: ConsentSource,
        detail: str,
        conn: Connection | None,
        *,
        confirmed: bool,
    ) -> Subscriber | None:
        now = self.now()
        with self._using(conn, write=True) as c:
            current = self.get(subscriber_id, c)
            if current is None:
                return None
            values: dict[str, Any] = {
                "status": SubscriberStatus.ACTIVE.value,
                "consent_source": source.value,
                "consent_at": now,
                "consent_detail": detail,
            }
            if confirmed:
                values["confirmed_at"] = now
            if current.status is not SubscriberStatus.ACTIVE:
                values["status_changed_at"] = now
            c.execute(_touch(subscriber_id, now).values(**values))
            # Its owner asked to be back: a forget-suppression must not block them any more.
            self.remove_suppression(suppression_hash(current.email_key), c)
            return self.get(subscriber_id, c)

    def set_preferences(
        self,
        subscriber_id: int,
        categories: Sequence[str],
        locale: str,
        conn: Connection | None = None,
    ) -> bool:
        """The subscriber's sections and language; False if there is no such subscriber."""
        values = {"categories": join_categories(categories), "locale": locale}
        with self._using(conn, write=True) as c:
            return c.execute(_touch(subscriber_id, self.now()).values(**values)).rowcount == 1

    def unsubscribe(self, subscriber_id: int, conn: Connection | None = None) -> bool:
        """Stop sending; False if already unsubscribed or complained (a complaint outranks it)."""
        return self._move(subscriber_id, SubscriberStatus.UNSUBSCRIBED, conn)

    def mark_bounced(self, subscriber_id: int, conn: Connection | None = None) -> bool:
        """A permanent delivery failure; only an active or pending address becomes bounced."""
        return self._move(subscriber_id, SubscriberStatus.BOUNCED, conn)

    def mark_complained(self, subscriber_id: int, conn: Connection | None = None) -> bool:
        """A spam complaint: the strongest stop, from any other status."""
        return self._move(subscriber_id, SubscriberStatus.COMPLAINED, conn)

    def suppress_many(
        self, statuses: dict[str, SubscriberStatus], conn: Connection | None = None
    ) -> int:
        """Import rows that say unsubscribed/bounced/complained, applied to listed addresses."""
        changed = 0
        with self._using(conn, write=True) as c:
            for key, status in statuses.items():
                changed += self._move_where(subscribers.c.email_key == key, status, c)
        return changed

    def _move(self, subscriber_id: int, status: SubscriberStatus, conn: Connection | None) -> bool:
        with self._using(conn, write=True) as c:
            return self._move_where(subscribers.c.id == subscriber_id, status, c) == 1

    def _move_where(self, where: Any, status: SubscriberStatus, conn: Connection) -> int:
        now = self.now()
        values: dict[str, Any] = {
            "status": status.value,
            "status_changed_at": now,
            "updated_at": now,
        }
        if status is SubscriberStatus.UNSUBSCRIBED:
            values["unsubscribed_at"] = now
        # Every confirmation link mailed so far dies here: only a new sign-up can bring it back.
        values["confirm_nonce"] = None
        allowed = [s.value for s in _MAY_MOVE_TO[status]]
        statement = (
            update(subscribers).where(where, subscribers.c.status.in_(allowed)).values(values)
        )
        return conn.execute(statement).rowcount

    def iter_active(self, batch_size: int = 1000) -> Iterator[Subscriber]:
        """The active list for a send, streamed in id order (server-side cursor on PostgreSQL)."""
        return self.iter_subscribers(SubscriberStatus.ACTIVE, batch_size)

    def iter_subscribers(
        self, status: SubscriberStatus | None = None, batch_size: int = 1000
    ) -> Iterator[Subscriber]:
        """Every subscriber (or those in one status), streamed in id order, never loaded whole."""
        query = select(subscribers).order_by(subscribers.c.id)
        if status is not None:
            query = query.where(subscribers.c.status == status.value)
        with self.engine.connect() as conn:
            conn.execution_options(stream_results=True, yield_per=batch_size)
            for row in conn.execute(query):
                yield _subscriber(row)

    def count_by_status(self) -> dict[SubscriberStatus, int]:
        """How many subscribers are in each status (every status present, 0 if none)."""
        query = select(subscribers.c.status, func.count()).group_by(subscribers.c.status)
        counts = dict.fromkeys(SubscriberStatus, 0)
        with self.read() as c:
            counts.update((SubscriberStatus(s), n) for s, n in c.execute(query))
        return counts

    def forget(self, email_key: str, reason: str = "forgotten") -> bool:
        """Erase the subscriber's row and keep only the suppression hash; True if a row existed."""
        with self.write() as c:
            deleted = c.execute(
                delete(subscribers).where(subscribers.c.email_key == email_key)
            ).rowcount
            self.add_suppression(suppression_hash(email_key), reason, c)
        return deleted == 1

    def _row(self, new: NewSubscriber, now: datetime) -> dict[str, Any]:
        """The columns of a new subscriber, apart from _CREATION_STAMPS."""
        active = new.status is SubscriberStatus.ACTIVE
        return {
            "email": new.address.normalized,
            "email_key": new.address.key,
            "name": new.name,
            "locale": new.locale,
            "categories": join_categories(new.categories),
            "status": new.status.value,
            "confirmed_at": None,
            "unsubscribed_at": now if new.status is SubscriberStatus.UNSUBSCRIBED else None,
            "consent_source": new.consent_source.value,
            # Pending sign-ups have not consented yet; everything else was vouched for now.
            "consent_at": now if active or new.consent_source is not ConsentSource.WEB else None,
            "consent_detail": new.consent_detail,
        }

    # -----------------------------------------------------------------------------------------
    # Suppressions (forgotten addresses, by hash only)
    # -----------------------------------------------------------------------------------------

    def add_suppression(
        self, address_hash: str, reason: str, conn: Connection | None = None
    ) -> bool:
        """Remember a forgotten address's hash; False if it was already there."""
        statement = self._insert(suppressions).on_conflict_do_nothing(
            index_elements=["address_hash"]
        )
        values = {"address_hash": address_hash, "reason": reason, "created_at": self.now()}
        with self._using(conn, write=True) as c:
            return c.execute(statement.values(values)).rowcount == 1

    def is_suppressed(self, address_hash: str, conn: Connection | None = None) -> bool:
        """Whether this address was forgotten."""
        query = select(suppressions.c.address_hash).where(
            suppressions.c.address_hash == address_hash
        )
        with self._using(conn, write=False) as c:
            return c.execute(query).first() is not None

    def suppressed_among(self, hashes: Iterable[str], conn: Connection | None = None) -> set[str]:
        """Which of these hashes are suppressed (bulk check for an import)."""
        found: set[str] = set()
        with self._using(conn, write=False) as c:
            for chunk in _chunks(list(hashes), LOOKUP_CHUNK):
                query = select(suppressions.c.address_hash).where(
                    suppressions.c.address_hash.in_(chunk)
                )
                found.update(c.execute(query).scalars())
        return found

    def remove_suppression(self, address_hash: str, conn: Connection | None = None) -> bool:
        """Lift a suppression (its owner confirmed a new sign-up); False if there was none."""
        statement = delete(suppressions).where(suppressions.c.address_hash == address_hash)
        with self._using(conn, write=True) as c:
            return c.execute(statement).rowcount == 1

    # -----------------------------------------------------------------------------------------
    # Editions and the send ledger
    # -----------------------------------------------------------------------------------------

    def edition_record(self, day: date, conn: Connection | None = None) -> EditionRecord | None:
        """One edition's ledger entry, or None when it was never held, frozen or recorded."""
        with self._using(conn, write=False) as c:
            row = c.execute(select(editions).where(editions.c.edition_date == day)).first()
        return _edition_record(row) if row else None

    def latest_edition_date(self) -> date | None:
        """The most recent edition the ledger knows, for `status` without --date."""
        with self.read() as c:
            return c.execute(select(func.max(editions.c.edition_date))).scalar_one_or_none()

    def recent_editions(self, limit: int = 14) -> list[EditionRecord]:
        """The newest editions first, for the editors' status page."""
        with self.read() as c:
            rows = c.execute(select(editions).order_by(editions.c.edition_date.desc()).limit(limit))
            return [_edition_record(row) for row in rows]

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
            record = self.edition_record(day, c)
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

    def freeze_edition(self, day: date, articles: Sequence[Article]) -> int:
        """At the first send of `day`: fix its articles and its recipients (every active
        subscriber now, one pending delivery each); later calls change nothing. Returns the
        number of recipients.
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
            claimable = (
                select(deliveries.c.id)
                .where(
                    deliveries.c.edition_date == day,
                    or_(
                        and_(
                            deliveries.c.status == DeliveryStatus.PENDING.value,
                            or_(deliveries.c.not_before.is_(None), deliveries.c.not_before <= now),
                        ),
                        and_(
                            deliveries.c.status == DeliveryStatus.SENDING.value,
                            deliveries.c.lease_until < now,
                        ),
                    ),
                )
                .order_by(deliveries.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(c.execute(claimable).scalars())
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

    def renew_leases(self, owner: str, lease_seconds: float) -> set[int]:
        """Extend-and-verify: push back the lease of `owner`'s claimed rows; the ids returned are
        the rows still its own (a row another sender took over after a stall is not among them).
        """
        with self.write() as c:
            now = self._lease_now(c)
            rows = c.execute(
                update(deliveries)
                .where(
                    deliveries.c.owner == owner, deliveries.c.status == DeliveryStatus.SENDING.value
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
        return sum(self.release_owner(o) for o in dead)

    def release_owner(self, owner: str) -> int:
        """Everything `owner` claimed but did not finish goes back to pending."""
        with self.write() as c:
            return c.execute(
                update(deliveries)
                .where(
                    deliveries.c.owner == owner, deliveries.c.status == DeliveryStatus.SENDING.value
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
        """The relay accepted these messages: final. One transaction for a batch (group commit),
        with a statement built once: this runs for every message of a send. Only rows `owner`
        still holds are recorded; the ids returned are those that were not (lost leases).
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
                )
            ).rowcount
            if bounce and changed:
                subscriber_id = c.execute(
                    select(deliveries.c.subscriber_id).where(deliveries.c.id == delivery_id)
                ).scalar_one()
                self._move(subscriber_id, SubscriberStatus.BOUNCED, c)

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

    # -----------------------------------------------------------------------------------------
    # Locks: named leases (one scheduler sending per database)
    # -----------------------------------------------------------------------------------------

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


# Columns that a new row sets to its creation time.
_CREATION_STAMPS = ("created_at", "updated_at", "status_changed_at")

# Which statuses may move into each stopped status. An unsubscribe or a bounce never overwrites
# a complaint (the strongest signal, and the one mailbox providers hold against the sender).
_MAY_MOVE_TO: dict[SubscriberStatus, frozenset[SubscriberStatus]] = {
    SubscriberStatus.UNSUBSCRIBED: frozenset(
        {SubscriberStatus.PENDING, SubscriberStatus.ACTIVE, SubscriberStatus.BOUNCED}
    ),
    SubscriberStatus.BOUNCED: frozenset({SubscriberStatus.PENDING, SubscriberStatus.ACTIVE}),
    SubscriberStatus.COMPLAINED: frozenset(
        {
            SubscriberStatus.PENDING,
            SubscriberStatus.ACTIVE,
            SubscriberStatus.UNSUBSCRIBED,
            SubscriberStatus.BOUNCED,
        }
    ),
}


def _held_by(owner: str) -> Any:
    """Rows `owner` still holds: every outcome a sender records is conditional on it."""
    return and_(deliveries.c.owner == owner, deliveries.c.status == DeliveryStatus.SENDING.value)


def join_categories(categories: Iterable[str]) -> str:
    return CATEGORY_SEPARATOR.join(c for c in categories if c)


def split_categories(stored: str) -> tuple[str, ...]:
    return tuple(c for c in stored.split(CATEGORY_SEPARATOR) if c)


def new_nonce() -> str:
    """A fresh confirm nonce: 16 random hex characters (64 bits), unguessable and short."""
    return secrets.token_hex(8)


def _touch(subscriber_id: int, now: datetime) -> Any:
    return update(subscribers).where(subscribers.c.id == subscriber_id).values(updated_at=now)


def _subscriber(row: Row[Any]) -> Subscriber:
    m = row._mapping
    return Subscriber(
        id=m["id"],
        email=m["email"],
        email_key=m["email_key"],
        name=m["name"],
        locale=m["locale"],
        categories=split_categories(m["categories"]),
        status=SubscriberStatus(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        status_changed_at=m["status_changed_at"],
        confirmed_at=m["confirmed_at"],
        unsubscribed_at=m["unsubscribed_at"],
        consent_source=ConsentSource(m["consent_source"]),
        consent_at=m["consent_at"],
        consent_detail=m["consent_detail"],
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """One ledger row claimed for sending, with what the message needs of its subscriber."""

    delivery_id: int
    subscriber_id: int
    email: str
    email_key: str
    name: str
    locale: str
    categories: tuple[str, ...]
    attempts: int  # before this claim


@dataclass(frozen=True, slots=True)
class EditionRecord:
    edition_date: date
    status: EditionStatus
    held: bool
    recipients: int
    note: str
    frozen_at: datetime | None
    finished_at: datetime | None

    def describe(self) -> str:
        text = self.status.value + (", held" if self.held else "")
        if self.note:
            text += f" ({self.note})"
        return text


def _claimed(row: Row[Any]) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=row.delivery_id,
        subscriber_id=row.subscriber_id,
        email=row.email,
        email_key=row.email_key,
        name=row.name,
        locale=row.locale,
        categories=split_categories(row.categories),
        attempts=row.attempts,
    )


def _edition_record(row: Row[Any]) -> EditionRecord:
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
    }


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
    )
