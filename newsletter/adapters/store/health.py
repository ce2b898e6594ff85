"""``inspect_database``: is the store reachable, at which schema version, and writable?

For ``newsletter check``, which must change nothing: unlike ``open_store`` it neither creates a
SQLite file nor applies a migration. Writability is proven by taking the write lock (SQLite's
BEGIN IMMEDIATE) and running an UPDATE that matches no row, then rolling back: a read-only
file, a read-only replica or a role without UPDATE fails there exactly as a send would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from newsletter.adapters.store.engine import _one_line, _transaction, create_store_engine
from newsletter.adapters.store.migrations import LATEST_VERSION, _current_version
from newsletter.adapters.store.schema import schema_version
from newsletter.domain.errors import NewsletterError


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    """What ``inspect_database`` found; ``problem`` is empty when a send can use the database."""

    version: int | None  # None: no database yet (created at first use)
    latest: int
    problem: str = ""
    note: str = ""


def inspect_database(url: str) -> DatabaseHealth:
    """Reach the database at ``url`` and report its state, changing nothing."""
    try:
        missing = _missing_sqlite_file(url)
    except ArgumentError as err:
        return DatabaseHealth(None, LATEST_VERSION, problem=_one_line(err, url))
    if missing is not None:
        return _future_file(missing)
    try:
        engine = create_store_engine(url)
    except NewsletterError as err:
        return DatabaseHealth(None, LATEST_VERSION, problem=str(err))
    try:
        return _inspect(engine, url)
    except (DBAPIError, NewsletterError) as err:
        detail = _one_line(getattr(err, "orig", None) or err, url)
        return DatabaseHealth(None, LATEST_VERSION, problem=detail)
    finally:
        engine.dispose()


def database_exists(url: str) -> bool:
    """False only for a SQLite file not created yet: a reader can skip it instead of creating it."""
    try:
        return _missing_sqlite_file(url) is None
    except ArgumentError:
        return True  # opening it gives the one-line error


def _missing_sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def _future_file(path: Path) -> DatabaseHealth:
    # The first command that opens it creates the file (and its folder): say whether it can.
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return DatabaseHealth(
            None, LATEST_VERSION, problem=f"{path} does not exist and {folder} is not writable"
        )
    return DatabaseHealth(None, LATEST_VERSION, note=f"{path} is created at first use")


def _inspect(engine: object, url: str) -> DatabaseHealth:
    with _transaction(engine, write=True) as conn:  # type: ignore[arg-type]
        if not inspect(conn).has_table(schema_version.name):
            conn.rollback()
            return DatabaseHealth(
                0, LATEST_VERSION, note="empty: the tables are created at first use"
            )
        version = _current_version(conn)
        # Matches no row: fails only where a real write would (read-only file, role, replica).
        conn.execute(update(schema_version).where(schema_version.c.version < 0).values(version=0))
        conn.rollback()
    if version > LATEST_VERSION:
        return DatabaseHealth(
            version,
            LATEST_VERSION,
            problem=f"schema version {version} is newer than this program's {LATEST_VERSION} "
            "(upgrade newsletter)",
        )
    if version < LATEST_VERSION:
        return DatabaseHealth(
            version, LATEST_VERSION, note=f"migrated to version {LATEST_VERSION} at next use"
        )
    return DatabaseHealth(version, LATEST_VERSION)
