"""The editors' "what readers read" card: the latest sent edition's most read articles, and the
click-through of each section over the last 14 editions as small line charts.

The charts are SVG drawn here, on the server: polylines in the page, no script, no external
asset, nothing the editors' CSP has to allow. All sections share one vertical scale, so their
lines compare; a section absent from an edition leaves a gap in its line rather than a fake zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from newsletter.adapters.i18n import format_long_date, format_percent
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.services.stats import TREND_EDITIONS, SectionTrend, section_trend, top_articles

CHART_WIDTH = 168
CHART_HEIGHT = 36
CHART_PAD = 3  # room for the line's width at the edges
TOP_ARTICLES = 5


@dataclass(frozen=True, slots=True)
class Sparkline:
    """One section's click-through over the editions, ready for the template."""

    label: str
    segments: tuple[str, ...]  # SVG polyline "x,y x,y ..." runs, split where the section is absent
    latest: str  # the last edition's rate, as the locale writes a percentage; "" if absent
    description: str  # what the chart shows, in words, for screen readers


def sparklines(trend: Sequence[SectionTrend], locale: str) -> list[Sparkline]:
    """A line per section (in the order they first appear), on one shared scale."""
    labels = list(dict.fromkeys(label for edition in trend for label, _ in edition.rates))
    rates = [dict(edition.rates) for edition in trend]
    peak = max((rate for by_label in rates for rate in by_label.values()), default=0.0)
    lines = []
    for label in labels:
        values = [by_label.get(label) for by_label in rates]
        known = [v for v in values if v is not None]
        last = values[-1] if values else None
        lowest, highest = min(known, default=0.0), max(known, default=0.0)
        lines.append(
            Sparkline(
                label=label,
                segments=_segments(values, peak),
                latest="" if last is None else format_percent(last, locale),
                description=(
                    f"{label}: {format_percent(lowest, locale)} – {format_percent(highest, locale)}"
                ),
            )
        )
    return lines


def _segments(values: Sequence[float | None], peak: float) -> tuple[str, ...]:
    count = len(values)
    step = (CHART_WIDTH - 2 * CHART_PAD) / (count - 1) if count > 1 else 0.0
    height = CHART_HEIGHT - 2 * CHART_PAD
    runs: list[list[str]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            runs.append([])
            continue
        x = CHART_PAD + index * step if count > 1 else CHART_WIDTH / 2
        y = CHART_HEIGHT - CHART_PAD - (value / peak * height if peak else 0.0)
        runs[-1].append(f"{x:.1f},{y:.1f}")
    # A single point draws nothing as a polyline: give it a short flat stroke.
    return tuple(
        " ".join(run) if len(run) > 1 else f"{run[0]} {_nudge(run[0])}" for run in runs if run
    )


def _nudge(point: str) -> str:
    x, y = point.split(",")
    return f"{float(x) + 2:.1f},{y}"


def reading_context(store: Store, settings: Settings) -> dict[str, Any] | None:
    """The card's data, or None when clicks are not counted and none were ever counted."""
    trend = section_trend(store, settings, TREND_EDITIONS)
    top = top_articles(store, settings, limit=TOP_ARTICLES)
    counted = any(rate for edition in trend for _, rate in edition.rates)
    if not settings.track_clicks and not counted:
        return None
    latest = trend[-1].day if trend else None
    return {
        "top": top,
        "day_text": format_long_date(latest, settings.locale) if latest else "",
        "lines": sparklines(trend, settings.locale) if counted else [],
        "editions": len(trend),
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
    }
