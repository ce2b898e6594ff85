"""Click counts per article and section of an edition (``newsletter stats``), the top articles
and the 14-edition click-through trend per section (the editors' page).

The articles and their sections are the edition's as frozen at its send (services/editions,
rebuilt with the editors' curation); the counts are the store's (scanner rule applied, folded
totals added). Reading stats first folds the rows past NEWSLETTER_CLICK_RETENTION_DAYS.

Click-through of a section in an edition = the unique clickers of its articles, added up, over
the messages sent (deliveries the relay accepted): a reader who clicks two articles of a section
counts twice, since after the fold only per-article totals are left to add up.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TextIO

from newsletter.adapters.render import section_label
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.domain.clicks import Tally
from newsletter.domain.curation import article_ref
from newsletter.domain.errors import NewsletterError
from newsletter.services.clicks import fold_old_clicks
from newsletter.services.editions import rebuild_edition

CSV_COLUMNS = ("section", "title", "url", "clicks", "unique_clicks")
TREND_EDITIONS = 14


class NoStats(NewsletterError):
    """No edition to report on: none was sent yet, or the date names one that was not sent."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class ArticleStats:
    section: str
    title: str
    url: str
    ref: str
    clicks: int
    unique_clicks: int


@dataclass(frozen=True, slots=True)
class SectionStats:
    section: str
    clicks: int
    unique_clicks: int


@dataclass(frozen=True, slots=True)
class EditionStats:
    day: date
    sent: int  # messages the relay accepted
    articles: tuple[ArticleStats, ...]  # in edition order
    sections: tuple[SectionStats, ...]  # in edition order

    @property
    def clicks(self) -> int:
        return sum(a.clicks for a in self.articles)

    @property
    def unique_clicks(self) -> int:
        return sum(a.unique_clicks for a in self.articles)


@dataclass(frozen=True, slots=True)
class SectionTrend:
    """One edition's click-through per section (0.0 to 1.0, or more: see the module)."""

    day: date
    sent: int
    rates: tuple[tuple[str, float], ...]  # section label -> rate, in edition order


def _articles(
    store: Store, settings: Settings, day: date, tallies: dict[tuple[date, str], Tally]
) -> tuple[ArticleStats, ...] | None:
    frozen = store.frozen_articles(day)
    if frozen is None:
        return None
    edition = rebuild_edition(settings, day, frozen, store.edition_curation(day).curation)
    rows = []
    for section in edition.sections:
        label = section_label(section, settings.locale)
        for article in section.articles:
            ref = article_ref(article.uid)
            counted = tallies.get((day, ref), Tally())
            rows.append(
                ArticleStats(
                    label, article.title, article.link, ref, counted.clicks, counted.unique_clicks
                )
            )
    return tuple(rows)


def _sections(articles: Sequence[ArticleStats]) -> tuple[SectionStats, ...]:
    totals: dict[str, Tally] = {}
    for article in articles:
        totals[article.section] = totals.get(article.section, Tally()) + Tally(
            article.clicks, article.unique_clicks
        )
    return tuple(SectionStats(name, t.clicks, t.unique_clicks) for name, t in totals.items())


def edition_stats(
    store: Store, settings: Settings, day: date | None = None, *, fold: bool = True
) -> EditionStats:
    """Edition ``day``'s clicks per article and section (default: the latest sent edition);
    NoStats when there is none. Folds the rows past the retention period first."""
    if fold:
        fold_old_clicks(store, settings)
    if day is None:
        latest = store.sent_edition_dates(1)
        if not latest:
            raise NoStats("no edition was sent yet", "stats count clicks on sent editions")
        day = latest[0]
    tallies = store.article_tallies([day])
    articles = _articles(store, settings, day, tallies)
    if articles is None:
        raise NoStats(
            f"edition {day} was not sent", "stats count clicks on sent editions; see `status`"
        )
    return EditionStats(day, store.messages_sent([day]).get(day, 0), articles, _sections(articles))


def top_articles(
    store: Store, settings: Settings, day: date | None = None, limit: int = 5
) -> tuple[ArticleStats, ...]:
    """Edition ``day``'s most clicked articles (unique clickers first), at most ``limit``,
    only those with a click; () when there is no sent edition."""
    try:
        stats = edition_stats(store, settings, day, fold=False)
    except NoStats:
        return ()
    ranked = sorted(
        (a for a in stats.articles if a.clicks),
        key=lambda a: (-a.unique_clicks, -a.clicks),
    )
    return tuple(ranked[:limit])


def section_trend(
    store: Store, settings: Settings, editions: int = TREND_EDITIONS
) -> tuple[SectionTrend, ...]:
    """For the last ``editions`` sent editions, oldest first: click-through per section."""
    days = store.sent_edition_dates(editions)
    tallies = store.article_tallies(days)
    sent = store.messages_sent(days)
    trend = []
    for day in sorted(days):
        articles = _articles(store, settings, day, tallies) or ()
        delivered = sent.get(day, 0)
        rates = tuple(
            (s.section, s.unique_clicks / delivered if delivered else 0.0)
            for s in _sections(articles)
        )
        trend.append(SectionTrend(day, delivered, rates))
    return tuple(trend)


# -- output --------------------------------------------------------------------------------------


def write_csv(stats: EditionStats, out: TextIO) -> None:
    """One row per article, exactly CSV_COLUMNS with a header; no total rows (the text form
    has them: a spreadsheet adds up a column itself)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in stats.articles:
        writer.writerow((a.section, a.title, a.url, a.clicks, a.unique_clicks))


def stats_lines(stats: EditionStats, *, width: int = 48) -> list[str]:
    """The text form: a table per section, its articles then its total, and the edition's."""
    lines = [f"edition {stats.day}: {stats.sent} messages sent"]
    header = f"  {'clicks':>7} {'unique':>7}  {'title':<{width}}  url"
    for section in stats.sections:
        lines += ["", section.section, header]
        for a in (a for a in stats.articles if a.section == section.section):
            title = a.title if len(a.title) <= width else a.title[: width - 1] + "…"
            lines.append(f"  {a.clicks:>7} {a.unique_clicks:>7}  {title:<{width}}  {a.url}")
        lines.append(f"  {section.clicks:>7} {section.unique_clicks:>7}  (section total)")
    rate = f" ({stats.unique_clicks / stats.sent:.1%} of messages)" if stats.sent else ""
    lines += ["", f"total: {stats.clicks} clicks, {stats.unique_clicks} unique clicks{rate}"]
    return lines
