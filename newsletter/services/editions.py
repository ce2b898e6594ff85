"""Service: the edition of day D as editors handle it: hold and release, dry runs, reports.

The CLI, the web console and the daemon all go through here, so each says the same thing. How an
edition went (`status`, what came back) is services/status.py, kept light for `status`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.domain import (
    Article,
    Edition,
    EditionRecord,
    EditionStatus,
    SendReport,
)
from newsletter.domain.curation import Curation
from newsletter.domain.edition import build_edition
from newsletter.domain.errors import NewsletterError
from newsletter.domain.timetable import is_finished
from newsletter.services.status import counts_text


def frozen_edition(store: Store, settings: Settings, day: date) -> Edition:
    """Edition ``day`` as frozen at its first send, else composed now from the sources; either
    way as the editors curated it."""
    return curated_edition(store, settings, day)[0]


def curated_edition(store: Store, settings: Settings, day: date) -> tuple[Edition, int]:
    """``frozen_edition`` and the revision of the editors' curation it was built with: the send
    freezes it only if no editor changed the edition since (ledger.freeze_edition)."""
    stored = store.edition_curation(day)
    articles = store.frozen_articles(day)
    if articles is None:
        # Imported here: hold and release use this module without loading the sources and
        # the renderer.
        from newsletter.services.compose import compose_edition

        edition = compose_edition(
            settings,
            day,
            exclude_uids=store.sent_article_uids(before=day),
            curation=stored.curation,
        )
        return edition, stored.revision
    return rebuild_edition(settings, day, articles, stored.curation), stored.revision


def rebuild_edition(
    settings: Settings,
    day: date,
    articles: Sequence[Article],
    curation: Curation | None = None,
) -> Edition:
    """Edition ``day`` from the articles it was frozen with: every one of them, in sections,
    with the editors' lead, intro and Subject (``curation``; its excluded and added articles
    are already out of and in the frozen ones).

    Never reads a source: the archive rebuilds sent editions with it, on a public route.
    """
    return build_edition(
        articles,
        day=day,
        send_time=settings.send_time,
        zone=settings.timezone,
        order=settings.section_order,
        max_per_section=max(settings.max_per_section, len(articles)),
        title=settings.title,
        locale=settings.locale,
        site_url=settings.site_url,
        curation=curation.without_articles() if curation else None,
    )


def report_line(report: SendReport) -> str:
    state = "complete" if report.complete else f"{report.remaining} still to send"
    return (
        f"edition {report.edition_date.isoformat()}: {report.sent_this_run} sent this run; "
        f"{counts_text(report.counts)} ({state})"
    )


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
    articles = _count(len(edition.articles), "%(num)d article", "%(num)d articles")
    sections = _count(len(edition.sections), "%(num)d section", "%(num)d sections")
    yield f"edition {day.isoformat()}: {articles} in {sections}"
    if not variants and not nothing and store.frozen_articles(day) is None:
        yield "no active subscriber: a send now would stop with nothing sent and nothing recorded"
        return
    messages = _count(sum(variants.values()), "%(num)d message", "%(num)d messages")
    kinds = _count(len(variants), "%(num)d content variant", "%(num)d content variants")
    yield f"would send {messages} in {kinds}"
    from newsletter.adapters.render import section_label

    labels = {s.key: section_label(s, edition.locale) for s in edition.sections}
    for keys, count in variants.most_common():
        yield f"  {count:>7}  {', '.join(sorted(labels[k] for k in keys))}"
    if nothing:
        yield english_ngettext(
            "%(num)d active subscriber gets nothing: none of their sections has an article",
            "%(num)d active subscribers get nothing: none of their sections has an article",
            nothing,
        ) % {"num": nothing}


def _count(n: int, singular: str, plural: str) -> str:
    """ "1 article", "2 articles": an operator's count, in English."""
    return english_ngettext(singular, plural, n) % {"num": n}


class EditionFinished(NewsletterError):
    """An editor asked to hold an edition that is already finished: there is nothing to hold."""

    def __init__(self, day: date, status: EditionStatus) -> None:
        super().__init__(
            f"edition {day} is already {status}: it cannot be held", "nothing was changed"
        )
        self.day = day
        self.status = status


def hold_edition(store: Store, day: date) -> EditionRecord | None:
    """Hold edition ``day``; returns its ledger entry as it was before.

    EditionFinished, and nothing recorded, when it is already sent, empty or skipped: the
    scheduler will never send it, so a hold would only say something untrue on the editors' page.
    """
    record = store.edition_record(day)
    if record is not None and is_finished(record):
        raise EditionFinished(day, record.status)
    store.set_held(day, True)
    return record


def set_hold(
    store: Store, settings: Settings, day: date, *, held: bool, now: datetime | None = None
) -> str:
    """Hold or release edition ``day`` for the scheduler; returns the line to show the editor.

    Holding a finished edition raises EditionFinished (the CLI: one line, exit 1).
    """
    if held:
        record = hold_edition(store, day)
        text = f"edition {day}: held; the scheduler will not send it until `newsletter release --date {day}`"
        if record is not None and record.frozen_at is not None:
            text += " (it is partly sent; a send already running is not interrupted)"
        return text
    record = store.edition_record(day)
    if record is None or not record.held:
        return f"edition {day}: was not held; nothing changed"
    store.set_held(day, False)
    return f"edition {day}: released; {_when_released(settings, day, record.status, now)}"


def _when_released(
    settings: Settings, day: date, status: EditionStatus, now: datetime | None
) -> str:
    if status in (EditionStatus.SENT, EditionStatus.EMPTY, EditionStatus.SKIPPED_LATE):
        return f"it is already {status}: the scheduler sends nothing more"
    timetable = settings.timetable
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if moment < timetable.send_at(day):
        return f"the scheduler sends it at {timetable.local(timetable.send_at(day))}"
    deadline = timetable.deadline_at(day)
    if moment <= deadline:
        return (
            f"the scheduler sends it within a minute (its deadline is {timetable.local(deadline)})"
        )
    return (
        f"past its deadline ({timetable.local(deadline)}), the scheduler will not send it; "
        f"`newsletter send --date {day}` sends it now"
    )
