"""``newsletter check``: everything the daily send needs, looked at in one pass, changing nothing.

Each check yields ``Finding`` values: a problem (the send would fail or go out wrong), a warning
(worth knowing, the send still works) or ok. The settings themselves are checked by the command
(``config.load_settings``) before these run, since every check here needs valid settings.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from newsletter.adapters.httpprobe import probe_url
from newsletter.adapters.smtp import SmtpConfig, probe_relay
from newsletter.adapters.sources import SourceError, display_name, read_sources
from newsletter.adapters.store import inspect_database
from newsletter.config import Settings
from newsletter.domain.addresses import InvalidAddress, normalise_address
from newsletter.domain.edition import edition_window
from newsletter.domain.urls import redact_url


class Level(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    subject: str  # what was looked at: "database", "relay", "source <name>" ...
    text: str

    def __str__(self) -> str:
        return f"{self.level.value + ':':<9}{self.subject}: {self.text}"


def check_everything(settings: Settings, now: datetime | None = None) -> Iterator[Finding]:
    """Every check after the settings: database, relay, sources, editors, base URL."""
    yield check_database(settings)
    yield from check_relay(settings)
    yield from check_sources(settings, now or datetime.now(UTC))
    yield from check_editors(settings)
    yield check_base_url(settings)


def check_database(settings: Settings) -> Finding:
    where = redact_url(settings.database_url)
    health = inspect_database(settings.database_url)
    if health.problem:
        return Finding(Level.PROBLEM, "database", f"{where}: {health.problem}")
    if health.version is None or health.version == 0:
        return Finding(Level.OK, "database", f"{where}: {health.note}")
    state = f"{where}: schema version {health.version}, writable"
    return Finding(Level.OK, "database", f"{state} ({health.note})" if health.note else state)


def check_relay(settings: Settings) -> Iterator[Finding]:
    config = SmtpConfig.from_settings(settings)
    problems = probe_relay(config)
    for problem in problems:
        yield Finding(Level.PROBLEM, "relay", problem.removeprefix("relay "))
    if not problems:
        steps = ["connected", "EHLO"]
        if config.security == "starttls":
            steps.append("STARTTLS")
        if config.security == "tls":
            steps.insert(1, "TLS")
        if config.username:
            steps.append(f"AUTH as {config.username}")
        yield Finding(Level.OK, "relay", f"{config.where}: {', '.join(steps)} (no mail sent)")


def check_sources(settings: Settings, now: datetime) -> Iterator[Finding]:
    """Each source read on its own, and how many of its articles the coming edition gets."""
    day = settings.next_edition_date(now)
    window = edition_window(day, settings.send_time, settings.timezone)
    for spec in settings.sources:
        name = f"source {display_name(spec)}"
        try:
            report = read_sources([spec], timeout=settings.feed_timeout)
        except SourceError as err:
            reason = err.failures[0][1] if err.failures else str(err)
            yield Finding(Level.PROBLEM, name, f"cannot be read: {reason}")
            continue
        count = sum(article.published in window for article in report.articles)
        start, end = (moment.astimezone(settings.timezone) for moment in (window.start, window.end))
        articles = "1 article" if count == 1 else f"{count} articles"
        yield Finding(
            Level.OK,
            name,
            f"{len(report.articles)} read; {articles} in the edition of {day.isoformat()} "
            f"(published {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}, {settings.timezone.key})",
        )
        for warning in report.warnings:
            yield Finding(Level.WARNING, name, warning)


def check_editors(settings: Settings) -> Iterator[Finding]:
    if not settings.editors:
        yield Finding(
            Level.OK, "editors", "none set (NEWSLETTER_EDITORS): no test send before each edition"
        )
        return
    bad = 0
    for address in settings.editors:
        try:
            normalise_address(address)
        except InvalidAddress as err:
            bad += 1
            yield Finding(Level.PROBLEM, "editors", f"NEWSLETTER_EDITORS: {err}")
    if not bad:
        count = len(settings.editors)
        yield Finding(
            Level.OK,
            "editors",
            f"{count} address{'es' if count != 1 else ''}, each gets the edition "
            f"{settings.preview_lead_minutes} minutes before the send",
        )


def check_base_url(settings: Settings) -> Finding:
    if not settings.base_url:
        return Finding(Level.PROBLEM, "base URL", "NEWSLETTER_BASE_URL is not set")
    url = f"{settings.base_url}/healthz"
    failure = probe_url(url)
    if failure:
        # A warning, not a problem: on a first set-up `newsletter serve` may not run yet. The
        # mail's unsubscribe links lead nowhere until it does.
        return Finding(
            Level.WARNING,
            "base URL",
            f"{url}: {failure} (the links in each mail lead there: run `newsletter serve` "
            "behind it)",
        )
    return Finding(Level.OK, "base URL", f"{settings.base_url}: the web app answers")
