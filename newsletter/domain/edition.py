"""Edition rules, pure: which articles belong to day D, in which section, in which order.

The edition of day D holds the articles published after D-1 at the send time and up to D at the
send time (inclusive), local time in the site's zone. An article published after the cut-off
belongs to the next edition.

Composing also says what the edition left out, and why (``Edition.left_out``), so that a preview
can answer "where is my article?" without previewing other dates:

- a source that could not be read;
- a duplicate merged into another version of the same article (same guid or link), when either
  version falls in this edition's window;
- an article in the window that an earlier edition already carried (the ledger's frozen articles:
  an Atom entry dated by its ``<updated>`` moves to a later window when it is edited);
- an article an editor excluded (domain.curation);
- an article past NEWSLETTER_MAX_PER_SECTION in its section;
- an article outside the window but in the previous or the next edition's window, with the edition
  it belongs to; in the previous window, only one no edition carried (yesterday's edition, once
  sent, is not repeated every day). Older and newer articles are the feed's history or future, not
  near misses, and are not listed: one edition's worth on each side bounds the list.

All of it is one pass over the articles already in memory: no I/O, no cost worth measuring.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.domain import (
    GENERAL_SECTION_KEY,
    Article,
    Edition,
    LeftOut,
    LeftOutReason,
    Section,
    category_key,
)
from newsletter.domain.curation import Curation
from newsletter.domain.urls import http_url


@dataclass(frozen=True, slots=True)
class Window:
    """A span of real time, held in UTC: Python compares and subtracts two datetimes that share a
    tzinfo by wall clock, which is wrong across a DST change."""

    start: datetime  # exclusive, UTC
    end: datetime  # inclusive, UTC

    def __contains__(self, moment: datetime) -> bool:
        return self.start < moment.astimezone(UTC) <= self.end


def local_cutoff(day: date, send_time: time, zone: ZoneInfo) -> datetime:
    """Day ``day`` at ``send_time`` in ``zone``, as a UTC instant.

    On a spring-forward day a send time inside the gap (02:30 in Europe/Paris) does not exist;
    zoneinfo then reads it with the offset before the change, which lands one hour later in real
    time: the cut-off still happens once that day.
    """
    return datetime.combine(day, send_time, tzinfo=zone).astimezone(UTC)


def edition_window(day: date, send_time: time, zone: ZoneInfo) -> Window:
    return Window(
        start=local_cutoff(day - timedelta(days=1), send_time, zone),
        end=local_cutoff(day, send_time, zone),
    )


def edition_date_for(moment: datetime, send_time: time, zone: ZoneInfo) -> date:
    """The edition that ``moment`` falls into: today's if before today's cut-off, else tomorrow's."""
    local = moment.astimezone(zone)
    today = local.date()
    return (
        today
        if moment.astimezone(UTC) <= local_cutoff(today, send_time, zone)
        else today + timedelta(days=1)
    )


def build_sections(
    articles: Sequence[Article],
    *,
    order: Sequence[str],
    max_per_section: int,
) -> tuple[Section, ...]:
    """Group by primary category, order the sections, newest first inside each, capped."""
    return _sections_and_overflow(articles, order=order, max_per_section=max_per_section)[0]


def _sections_and_overflow(
    articles: Sequence[Article], *, order: Sequence[str], max_per_section: int
) -> tuple[tuple[Section, ...], list[Article]]:
    """``build_sections`` and the articles the cap left out of each section."""
    order_keys = [category_key(name) for name in order]
    preferred_label = {category_key(name): name for name in order}
    groups: dict[str, list[Article]] = {}
    labels: dict[str, str] = {}
    for article in articles:
        key = article.section_key
        groups.setdefault(key, []).append(article)
        labels.setdefault(key, preferred_label.get(key, article.primary_category or ""))

    def rank(key: str) -> tuple[int, int, str]:
        if key == GENERAL_SECTION_KEY:
            return (2, 0, "")  # the general section closes the edition
        if key in order_keys:
            return (0, order_keys.index(key), key)
        return (1, 0, key)  # unknown sections after the configured ones, by name

    sections: list[Section] = []
    overflow: list[Article] = []
    for key in sorted(groups, key=rank):
        newest_first = sorted(groups[key], key=lambda a: a.published, reverse=True)
        sections.append(
            Section(key=key, label=labels[key], articles=tuple(newest_first[:max_per_section]))
        )
        overflow.extend(newest_first[max_per_section:])
    return tuple(sections), overflow


def build_edition(
    articles: Iterable[Article],
    *,
    day: date,
    send_time: time,
    zone: ZoneInfo,
    order: Sequence[str],
    max_per_section: int,
    title: str,
    locale: str,
    exclude_uids: frozenset[str] = frozenset(),
    warnings: Sequence[str] = (),
    duplicates: Sequence[tuple[Article, Article]] = (),
    failed_sources: Sequence[tuple[str, str]] = (),
    site_url: str = "",
    curation: Curation | None = None,
) -> Edition:
    """Edition ``day`` and what it left out.

    ``duplicates`` are the (dropped, kept) pairs the sources' merge made; ``failed_sources`` the
    (name, reason) of each source that could not be read. ``curation`` applies the editors'
    decisions: excluded articles are left out (and said so), added items join their section
    dated at the window's end (unless already among ``articles``, as in a frozen edition), and
    the lead, intro and Subject ride on the edition for the renderer.
    """
    curation = curation or Curation()
    window = edition_window(day, send_time, zone)
    articles = list(articles)
    present = {a.uid for a in articles}
    articles += [item.article(window.end) for item in curation.added if item.uid not in present]
    excluded: list[Article] = []
    before = edition_window(day - timedelta(days=1), send_time, zone)
    after = edition_window(day + timedelta(days=1), send_time, zone)
    chosen: list[Article] = []
    already_sent: list[Article] = []
    late: list[Article] = []
    early: list[Article] = []
    for article in articles:
        if article.uid in curation.excluded:
            if article.published in window:
                excluded.append(article)
        elif article.published in window:
            (already_sent if article.uid in exclude_uids else chosen).append(article)
        elif article.published in after:
            late.append(article)
        elif article.published in before and article.uid not in exclude_uids:
            early.append(article)  # one an earlier edition carried went out: not a near miss
    sections, over_cap = _sections_and_overflow(
        chosen, order=order, max_per_section=max_per_section
    )
    left_out = [
        *(
            LeftOut(LeftOutReason.SOURCE_FAILED, source=name, detail=reason)
            for name, reason in failed_sources
        ),
        *(
            LeftOut(LeftOutReason.DUPLICATE, dropped, kept=kept)
            for dropped, kept in duplicates
            if dropped.published in window or kept.published in window
        ),
        *(LeftOut(LeftOutReason.EXCLUDED, a) for a in _newest_first(excluded)),
        *(LeftOut(LeftOutReason.ALREADY_SENT, a) for a in _newest_first(already_sent)),
        *(LeftOut(LeftOutReason.OVER_CAP, a) for a in over_cap),
        *(
            LeftOut(LeftOutReason.AFTER_CUTOFF, a, edition=day + timedelta(days=1))
            for a in _newest_first(late)
        ),
        *(
            LeftOut(LeftOutReason.BEFORE_WINDOW, a, edition=day - timedelta(days=1))
            for a in _newest_first(early)
        ),
    ]
    return Edition(
        date=day,
        window_start=window.start,
        window_end=window.end,
        sections=sections,
        title=title,
        locale=locale,
        warnings=tuple(warnings),
        left_out=tuple(left_out),
        site_url=site_url or site_origin(chosen),
        lead_uid=curation.lead,
        intro=curation.intro,
        subject=curation.subject,
    )


def site_origin(articles: Sequence[Article]) -> str:
    """``scheme://host/`` of the first article's link: the site's home page when nothing names it
    (a folder of JSON articles has no ``<link>``; an edition rebuilt from the ledger neither)."""
    for article in articles:
        parts = http_url(article.link)
        if parts is not None:
            return f"{parts.scheme.lower()}://{parts.netloc}/"
    return ""


def _newest_first(articles: list[Article]) -> list[Article]:
    return sorted(articles, key=lambda a: a.published, reverse=True)
