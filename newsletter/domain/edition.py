"""Edition rules, pure: which articles belong to day D, in which section, in which order.

The edition of day D holds the articles published after D-1 at the send time and up to D at the
send time (inclusive), local time in the site's zone. An article published after the cut-off
belongs to the next edition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.domain import GENERAL_SECTION_KEY, Article, Edition, Section, category_key


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


def select_articles(
    articles: Iterable[Article], window: Window, exclude_uids: frozenset[str] = frozenset()
) -> list[Article]:
    """The articles inside ``window`` that no earlier edition carried."""
    return [a for a in articles if a.published in window and a.uid not in exclude_uids]


def build_sections(
    articles: Sequence[Article],
    *,
    order: Sequence[str],
    max_per_section: int,
) -> tuple[Section, ...]:
    """Group by primary category, order the sections, newest first inside each, capped."""
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

    return tuple(
        Section(
            key=key,
            label=labels[key],
            articles=tuple(
                sorted(groups[key], key=lambda a: a.published, reverse=True)[:max_per_section]
            ),
        )
        for key in sorted(groups, key=rank)
    )


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
) -> Edition:
    window = edition_window(day, send_time, zone)
    chosen = select_articles(articles, window, exclude_uids)
    return Edition(
        date=day,
        window_start=window.start,
        window_end=window.end,
        sections=build_sections(chosen, order=order, max_per_section=max_per_section),
        title=title,
        locale=locale,
        warnings=tuple(warnings),
    )
