"""Engine and transactions: opening a database URL, SQLite's configuration, busy retries.

Also the store's errors (StoreError, DatabaseBusy) and the masking of database passwords in
messages (``redact_url``, ``mask_password``), and ``StoreBase``, which the query mixins share.

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

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import RootTransaction, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import Pool

from newsletter.domain.errors import NewsletterError, UsageError
from newsletter.domain.text import one_line
from newsletter.domain.urls import redact_url, split_password

# The entry points name the database's failures by these names, so that SQLAlchemy stays inside
# this package: DatabaseFailure is the driver failing mid-query (a lost server, a locked or
# damaged file), DatabaseError anything the database layer raises.
DatabaseFailure = OperationalError
DatabaseError = SQLAlchemyError

Clock = Callable[[], datetime]

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
# Execution option that marks a transaction as a writer (see _begin_sqlite).
_WRITE_OPTION = "newsletter_write"
_URL_HINT = "expected sqlite:///path/to/file.db or postgresql+psycopg://user@host/db"

# Named as before the store became a package, so that log filters keep working.
log = logging.getLogger("newsletter.adapters.store")


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


def create_store_engine(url: str, *, for_web: bool = False) -> Engine:
    """An engine for a SQLite or PostgreSQL URL, without touching the schema."""
    if "@" in (split_password(url)[1] or ""):
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
    busy_timeout_ms = _busy_timeout_ms(WEB_BUSY_TIMEOUT_MS if for_web else None)
    _WRITERS[engine.pool] = (threading.Lock(), busy_timeout_ms / 1000 * attempts)
    return engine.execution_options(**{_ATTEMPTS_OPTION: attempts})


def mask_password(message: str, url: str) -> str:
    """``message`` with the password of database ``url`` masked wherever it appears.

    The drivers and SQLAlchemy sometimes quote the URL or DSN they were given, so the password is
    masked as plain text (as written and as decoded), not only in URL form.
    """
    _, written = split_password(url)
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


def _one_line(err: object, url: str) -> str:
    """A driver's or SQLAlchemy's message as one line, with no password of ``url`` in it."""
    return mask_password(one_line(str(err)), url)


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


# One writer transaction at a time per engine, queued in this process on a lock. On SQLite the
# alternative was SQLite's busy handler, which sleeps 1, 2, 5, 10 ms... between tries: a send's
# group commit that met the claimer's transaction waited milliseconds for a lock freed in a
# fraction of one. On PostgreSQL two writers of one process (the recorder's "sent", the lease
# renewal) could lock the same sender's rows in different orders and deadlock. Other processes
# still meet SQLite's busy handler, or PostgreSQL's row locks, as before.
# Keyed by the engine's pool, which the engine and its option views (execution_options) share.
_WRITERS: weakref.WeakKeyDictionary[Pool, tuple[threading.Lock, float]] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def writer_turn(engine: Engine, started: float) -> Iterator[None]:
    """Hold this process's write turn on ``engine``; DatabaseBusy after the engine's whole busy
    wait (two minutes for the commands, WEB_BUSY_TIMEOUT_MS for the web app)."""
    writer = _WRITERS.get(engine.pool)
    if writer is None:
        yield
        return
    lock, timeout = writer
    if not lock.acquire(timeout=timeout):
        raise _database_busy(started)
    try:
        yield
    finally:
        lock.release()


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
    started = time.monotonic()
    with (
        writer_turn(engine, started) if write else contextlib.nullcontext(),
        engine.connect() as conn,
    ):
        conn.execution_options(**{_WRITE_OPTION: write})
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


class StoreBase:
    """What every group of queries shares: the engine, the clock and the transactions.

    The query mixins (subscribers, ledger, locks) build on it; ``newsletter.adapters.store.Store``
    puts them together.
    """

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.now = clock
        self._local = threading.local()  # this thread's open transaction, if any

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # One transaction idiom: every query method runs inside the caller's transaction when there
    # is one (``with store.write():`` around several calls makes them one atomic unit), else in a
    # transaction of its own. No method takes a connection, so SQLAlchemy stays in this package.

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); commits on success. Inside another
        write transaction of this thread it joins it."""
        current = self._ambient()
        if current is not None:
            if not current[1]:
                raise StoreError("a write inside a read transaction", "open the write first")
            yield current[0]
            return
        with (
            _transaction(self.engine, write=True) as conn,
            self._ambient_as(conn, write=True),
        ):
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction: a consistent snapshot; joins this thread's open transaction."""
        current = self._ambient()
        if current is not None:
            yield current[0]
            return
        with (
            _transaction(self.engine, write=False) as conn,
            self._ambient_as(conn, write=False),
        ):
            yield conn

    def _using(self, *, write: bool) -> AbstractContextManager[Connection]:
        return self.write() if write else self.read()

    def _ambient(self) -> tuple[Connection, bool] | None:
        return getattr(self._local, "current", None)

    @contextmanager
    def _ambient_as(self, conn: Connection, *, write: bool) -> Iterator[None]:
        self._local.current = (conn, write)
        try:
            yield
        finally:
            self._local.current = None

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql  # the dialect is loaded for its engines

            return postgresql.insert(table)
        return sqlite.insert(table)
