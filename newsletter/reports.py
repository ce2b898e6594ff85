"""Service: what editors read about a send: dry runs, one-line summaries, status listings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date

from newsletter.config import Settings
from newsletter.deliver import SendReport, frozen_edition
from newsletter.domain import DeliveryStatus
from newsletter.store import Store

STATUS_ORDER = (
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.PENDING,
    DeliveryStatus.SENDING,
    DeliveryStatus.SKIPPED,
)


def counts_text(counts: dict[str, int]) -> str:
    shown = STATUS_ORDER
    if counts.get(DeliveryStatus.UNCERTAIN):  # rare, and alarming: only when there are some
        shown = (*STATUS_ORDER, DeliveryStatus.UNCERTAIN)
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)


def report_line(report: SendReport) -> str:
    state = "complete" if report.complete else f"{report.remaining} still to send"
    return (
        f"edition {report.edition_date.isoformat()}: {report.sent_this_run} sent this run; "
        f"{counts_text(report.counts)} ({state})"
    )


def status_lines(store: Store, day: date) -> Iterator[str]:
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


def dry_run_lines(store: Store, settings: Settings, day: date) -> Iterator[str]:
    """What a send would do now: articles, recipients per variant; nothing is written."""
    edition = frozen_edition(store, settings, day)
    if edition.is_empty:
        yield f"edition {day.isoformat()}: no article in its window, nothing to send"
        return
    variants: Counter[frozenset[str]] = Counter()
    nothing = 0
    for subscriber in store.iter_active():
        keys = edition.variant_keys(subscriber.categories)
        if keys:
            variants[keys] += 1
        else:
            nothing += 1
    yield f"edition {day.isoformat()}: {len(edition.articles)} articles in {len(edition.sections)} sections"
    yield f"would send {sum(variants.values())} messages in {len(variants)} content variants"
    labels = {s.key: s.label or "(general)" for s in edition.sections}
    for keys, count in variants.most_common():
        yield f"  {count:>7}  {', '.join(sorted(labels[k] for k in keys))}"
    if nothing:
        yield f"{nothing} active subscribers get nothing: none of their sections has an article"
