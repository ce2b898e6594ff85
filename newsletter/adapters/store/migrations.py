"""The numbered migrations and ``migrate``, which applies them at open.

Migration N is ``MIGRATIONS[N - 1]``: applied in order, each inside the one migration transaction,
and frozen once released (each builds its own tables rather than using ``schema.py``, which
describes only the latest schema). A new table or column is a new migration appended here.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    text,
)

from newsletter.adapters.glance import LATEST_SCHEMA_VERSION
from newsletter.adapters.store.engine import Clock, StoreError, _transaction, utc_now
from newsletter.adapters.store.schema import UTCDateTime, schema_version

# Arbitrary constant naming our PostgreSQL advisory lock for migrations.
_PG_MIGRATION_LOCK = 0x6E6C5F6D6967


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


def _migration_5(conn: Connection) -> None:
    """What came back for each delivery (issue 12): a bounce or a complaint, its status code,
    its diagnostic and when; NULL for rows already there (nothing came back that we read)."""
    stamp = UTCDateTime().compile(dialect=conn.dialect)
    for column, kind in (
        ("returned_kind", "VARCHAR(16)"),
        ("returned_status", "VARCHAR(16)"),
        ("returned_diagnostic", "VARCHAR(300)"),
        ("returned_at", stamp),
    ):
        conn.execute(text(f"ALTER TABLE deliveries ADD COLUMN {column} {kind}"))
    # The soft-bounce rule reads one subscriber's returned rows: found by subscriber, not scanned.
    conn.execute(
        text(
            "CREATE INDEX ix_deliveries_subscriber_returned "
            "ON deliveries (subscriber_id, returned_kind)"
        )
    )


def _migration_6(conn: Connection) -> None:
    """The editors' curation of each edition and the log of their changes (issue 14)."""
    md = MetaData()
    Table(
        "edition_curations",
        md,
        Column("edition_date", Date, primary_key=True),
        Column("excluded", Text, nullable=False),
        Column("lead_uid", String(2048), nullable=False),
        Column("intro", Text, nullable=False),
        Column("subject", String(256), nullable=False),
        Column("added", Text, nullable=False),
        Column("revision", Integer, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    Table(
        "edition_changes",
        md,
        Column("id", Integer, primary_key=True),
        Column("edition_date", Date, nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("who", String(256), nullable=False),
        Column("action", String(32), nullable=False),
        Column("detail", Text, nullable=False),
        Index("ix_edition_changes_edition_id", "edition_date", "id"),
    )
    md.create_all(conn)


def _migration_7(conn: Connection) -> None:
    """Privacy-first click counts (issue 15): per-reader clicks kept for the retention period,
    then folded into per-article totals; first opens, only when open tracking is on; and when a
    reader turned click tracking off for themselves (NULL: they did not)."""
    stamp = UTCDateTime().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE subscribers ADD COLUMN clicks_opted_out_at {stamp}"))
    md = MetaData()
    Table("subscribers", md, Column("id", Integer, primary_key=True))  # for the foreign keys
    Table(
        "clicks",
        md,
        Column("id", Integer, primary_key=True),
        Column("edition_date", Date, nullable=False),
        Column("article_ref", String(16), nullable=False),
        Column(
            "subscriber_id",
            Integer,
            ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("clicked_at", UTCDateTime, nullable=False),
        Index("ix_clicks_edition_article", "edition_date", "article_ref"),
        Index("ix_clicks_subscriber", "subscriber_id"),
        Index("ix_clicks_clicked_at", "clicked_at"),
    )
    Table(
        "click_totals",
        md,
        Column("edition_date", Date, primary_key=True),
        Column("article_ref", String(16), primary_key=True),
        Column("clicks", Integer, nullable=False),
        Column("unique_clicks", Integer, nullable=False),
    )
    Table(
        "opens",
        md,
        Column("edition_date", Date, primary_key=True),
        Column(
            "subscriber_id",
            Integer,
            ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("opened_at", UTCDateTime, nullable=False),
    )
    for name in ("clicks", "click_totals", "opens"):
        md.tables[name].create(conn)


def _migration_8(conn: Connection) -> None:
    """What came back of an edition, counted from an index (issue 16): `status` reads it during a
    send, and on a million-row edition the count walked every row of the edition (0.2 s)."""
    conn.execute(
        text(
            "CREATE INDEX ix_deliveries_edition_returned "
            "ON deliveries (edition_date, returned_kind)"
        )
    )


#: migration N is MIGRATIONS[N - 1]; append, never edit or reorder.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
)
LATEST_VERSION = len(MIGRATIONS)
# `status` glances at a SQLite store without importing this package (adapters/glance.py) and
# only when the schema is at its LATEST_SCHEMA_VERSION: a migration added here without raising
# that number would let it read a schema it was not written for. Checked at every import.
if LATEST_VERSION != LATEST_SCHEMA_VERSION:
    raise RuntimeError(
        f"{LATEST_VERSION} migrations but adapters/glance.py says the latest schema version is "
        f"{LATEST_SCHEMA_VERSION}: make them agree (and check the glance's statements)"
    )


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
