"""Service: how an edition went, as `newsletter status` says it: the ledger's counts, the
failures, what came back, the editors' changes. `bounces list` and the editors' page reuse the
returned-mail lines and counts.

Light on purpose (issue 16: `status` answers in under a second during a million-subscriber
send): this module imports the domain and the settings only. Its functions read through a
``StatusSource``, which both the store and ``adapters.glance.SqliteGlance`` are;
``open_status_source`` picks the glance (``sqlite3``, no SQLAlchemy, no write lock) for a SQLite
file at the latest schema and the store for everything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Protocol

from newsletter.config import Settings
from newsletter.domain import DeliveryStatus, EditionRecord
from newsletter.domain.curation import EditorialChange
from newsletter.domain.returned import (
    BOUNCE_RATE_WARNING,
    COMPLAINT_RATE_WARNING,
    ReturnedCounts,
    percent,
)

STATUS_ORDER = (
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.PENDING,
    DeliveryStatus.SENDING,
    DeliveryStatus.SKIPPED,
)


class StatusSource(Protocol):
    """The reads `status` makes: ``Store``'s methods of these names, or a ``SqliteGlance``."""

    def latest_edition_date(self) -> date | None: ...

    def edition_record(self, day: date) -> EditionRecord | None: ...

    def delivery_counts(self, day: date) -> dict[str, int]: ...

    def delivery_failures(self, day: date, limit: int = 1000) -> list[tuple[str, str]]: ...

    def returned_counts(self, days: Iterable[date]) -> dict[date, dict[str, int]]: ...

    def curation_changes(self, day: date) -> list[EditorialChange]: ...


@contextmanager
def open_status_source(url: str) -> Iterator[StatusSource]:
    """What `status` reads database ``url`` through: a glance at a SQLite file already at the
    latest schema (one read transaction, no SQLAlchemy); otherwise the store, opened as every
    command opens it (created, migrated, refused, with its messages)."""
    from newsletter.adapters.glance import open_glance

    glance = open_glance(url)
    if glance is not None:
        with glance:
            yield glance
        return
    from newsletter.adapters.store import open_store

    with open_store(url) as store:
        yield store


def counts_text(counts: dict[str, int]) -> str:
    shown = STATUS_ORDER
    if counts.get(DeliveryStatus.UNCERTAIN):  # rare, and alarming: only when there are some
        shown = (*STATUS_ORDER, DeliveryStatus.UNCERTAIN)
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)


def status_lines(store: StatusSource, day: date) -> Iterator[str]:
    record = store.edition_record(day)
    if record is None:
        yield f"edition {day.isoformat()}: not sent yet"
        return
    yield f"edition {day.isoformat()}: {record.describe()}"
    counts = store.delivery_counts(day)
    yield f"  {counts_text(counts)}; {sum(counts.values())} recipients"
    if counts.get(DeliveryStatus.UNCERTAIN):
        yield (
            "  uncertain: the relay took these messages whole but never answered; the next "
            "send sends them again (same Message-ID, so a receiver can fold a duplicate)"
        )
    for email, error in store.delivery_failures(day):
        yield f"  failed: {email}: {error}"
    if any(counts.get(s) for s in (DeliveryStatus.SENT, DeliveryStatus.FAILED)):
        yield from returned_lines(store, day, indent="  ")


def returned_counts(store: StatusSource, days: list[date]) -> dict[date, ReturnedCounts]:
    """Per edition: its hard bounces, soft bounces and complaints against the messages mailed."""
    counted = store.returned_counts(days)
    result = {}
    for day in days:
        returned = counted.get(day, {})  # nothing mailed: no entry (the store's is a defaultdict)
        result[day] = ReturnedCounts.of(returned.get("mailed", 0), returned)
    return result


def returned_lines(store: StatusSource, day: date, indent: str = "") -> Iterator[str]:
    """What came back for edition ``day``: counts and rates, and a warning past a threshold."""
    counts = returned_counts(store, [day])[day]
    yield (
        f"{indent}returned: {counts.hard} hard bounced ({percent(counts.bounce_rate)}), "
        f"{counts.soft} soft bounced ({percent(counts.soft_rate)}), "
        f"{counts.complaints} complained ({percent(counts.complaint_rate)}) "
        f"of {counts.delivered} mailed"
    )
    if counts.bounce_warning:
        yield (
            f"{indent}warning: the bounce rate {percent(counts.bounce_rate)} is over "
            f"{percent(BOUNCE_RATE_WARNING)}: mailbox providers throttle senders past it; clean "
            "the list (old imports, typos) before the next edition"
        )
    if counts.complaint_warning:
        yield (
            f"{indent}warning: the complaint rate {percent(counts.complaint_rate)} is over "
            f"{percent(COMPLAINT_RATE_WARNING)}: Gmail and Yahoo filter senders past 0.3%; check "
            "consent and that the unsubscribe link is easy to find"
        )


def editorial_changes(store: StatusSource, day: date) -> tuple[EditorialChange, ...]:
    """Edition ``day``'s editorial changes, oldest first."""
    return tuple(store.curation_changes(day))


def change_lines(store: StatusSource, settings: Settings, day: date) -> list[str]:
    """The change log as `status` prints it, under the edition: when (the site's time), who,
    what; nothing when the editors changed nothing."""
    changes = editorial_changes(store, day)
    if not changes:
        return []
    lines = [f"  editorial changes: {len(changes)}"]
    for change in changes:
        at = change.at.astimezone(settings.timezone).strftime("%Y-%m-%d %H:%M")
        lines.append(f"    {at}  {change.who}  {change.action} {change.detail}".rstrip())
    return lines
