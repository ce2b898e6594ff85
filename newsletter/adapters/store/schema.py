"""The tables: the current schema as SQLAlchemy Core ``Table`` objects, and its column types.

Every query of the store is written against these. They describe the schema as the migrations
(``migrations.py``) leave it; a change here always comes with a new migration that makes it
(tests/test_store.py compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


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
    """A timestamp parameter already in the driver's form (see SubscriberQueries._bound_datetime).

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
    # When the reader turned click tracking off on the preferences page; NULL: they did not.
    Column("clicks_opted_out_at", UTCDateTime, nullable=True),
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
    # What came back after the relay took the message (services/bounces.py): ReturnedKind,
    # the RFC 3463 status code ("5.1.1"), the diagnostic on one line, when it was read.
    Column("returned_kind", String(16), nullable=True),
    Column("returned_status", String(16), nullable=True),
    Column("returned_diagnostic", String(300), nullable=True),
    Column("returned_at", UTCDateTime, nullable=True),
    UniqueConstraint("edition_date", "subscriber_id", name="uq_deliveries_edition_subscriber"),
    Index("ix_deliveries_edition_status", "edition_date", "status", "id"),
    Index("ix_deliveries_subscriber_returned", "subscriber_id", "returned_kind"),
    Index("ix_deliveries_edition_returned", "edition_date", "returned_kind"),  # migration 8
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

# What the editors decided about one edition (domain.curation), and their log. No foreign key to
# ``editions``: an edition is curated before the scheduler records anything about it. Once the
# edition is frozen (editions.frozen_at) the service refuses every change, so this row is then the
# frozen edition's lead, intro and Subject (its articles are in editions.articles).
edition_curations = Table(
    "edition_curations",
    METADATA,
    Column("edition_date", Date, primary_key=True),
    # JSON: [{"uid", "title", "url", "section"}]: the title and URL say what was excluded even
    # once the feed has forgotten the article (`edition show` of a sent edition).
    Column("excluded", Text, nullable=False, default="[]"),
    Column("lead_uid", String(2048), nullable=False, default=""),
    Column("intro", Text, nullable=False, default=""),
    Column("subject", String(256), nullable=False, default=""),
    # JSON: [{"url", "title", "section", "summary", "image_url"}]
    Column("added", Text, nullable=False, default="[]"),
    # Bumped by every change: the send freezes only the curation it composed (ledger.freeze_edition).
    Column("revision", Integer, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)

edition_changes = Table(
    "edition_changes",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("edition_date", Date, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("who", String(256), nullable=False),  # "cli:<os user>" or "web:<login>"
    Column("action", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_edition_changes_edition_id", "edition_date", "id"),
)

# Click counts (issue 15). One row per counted click of a reader on an article of an edition,
# kept NEWSLETTER_CLICK_RETENTION_DAYS, then folded into click_totals; forgetting a subscriber
# removes their rows. An article is named by its short ref (domain.curation.article_ref).
clicks = Table(
    "clicks",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("edition_date", Date, nullable=False),
    Column("article_ref", String(16), nullable=False),
    Column(
        "subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("clicked_at", UTCDateTime, nullable=False),
    Index("ix_clicks_edition_article", "edition_date", "article_ref"),
    Index("ix_clicks_subscriber", "subscriber_id"),
    Index("ix_clicks_clicked_at", "clicked_at"),
)

# Per-article totals of the clicks folded out of ``clicks`` after the retention period: what is
# left of them is counts, nothing about any reader.
click_totals = Table(
    "click_totals",
    METADATA,
    Column("edition_date", Date, primary_key=True),
    Column("article_ref", String(16), primary_key=True),
    Column("clicks", Integer, nullable=False),
    Column("unique_clicks", Integer, nullable=False),
)

# First open of an edition by a reader: only written when NEWSLETTER_TRACK_OPENS is on.
opens = Table(
    "opens",
    METADATA,
    Column("edition_date", Date, primary_key=True),
    Column(
        "subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("opened_at", UTCDateTime, nullable=False),
)
