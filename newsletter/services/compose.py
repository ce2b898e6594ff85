"""Service: from the settings' sources to an edition and its rendered content variants.

Rendering (Jinja2 + premailer, about 4 ms) runs once per variant, the set of sections a group of
subscribers asked for, never once per subscriber: ``VariantRenderer`` caches by section keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

from newsletter.adapters.links import tracked_url_length
from newsletter.adapters.render import NOT_TRACKED, Brand, RenderedVariant, Renderer, Tracking
from newsletter.adapters.sources import read_sources
from newsletter.config import Settings
from newsletter.domain import Edition, wanted_keys
from newsletter.domain.curation import Curation
from newsletter.domain.edition import build_edition


def compose_edition(
    settings: Settings,
    day: date,
    *,
    exclude_uids: frozenset[str] = frozenset(),
    cache_dir: Path | None = None,
    curation: Curation | None = None,
) -> Edition:
    """Read every source and build edition ``day``; SourceError when every source failed.

    ``curation``: the editors' decisions (services.editions reads them from the store)."""
    report = read_sources(settings.sources, timeout=settings.feed_timeout, cache_dir=cache_dir)
    return build_edition(
        report.articles,
        day=day,
        send_time=settings.send_time,
        zone=settings.timezone,
        order=settings.section_order,
        max_per_section=settings.max_per_section,
        title=settings.title,
        locale=settings.locale,
        exclude_uids=exclude_uids,
        warnings=report.warnings,
        duplicates=report.duplicates,
        failed_sources=report.failures,
        site_url=settings.site_url or report.site_link,
        curation=curation,
    )


def brand_for(settings: Settings) -> Brand:
    """The publisher's identity and links every edition carries, from the settings."""
    base = settings.base_url.rstrip("/")
    return Brand(
        logo_url=settings.logo_url,
        publisher=settings.publisher,
        postal_address=settings.postal_address,
        subject_pattern=settings.subject_pattern,
        web_version_base=f"{base}/archive/" if base and settings.archive != "off" else "",
        signup_url=f"{base}/subscribe" if base else "",
        archive_url=f"{base}/archive" if base and settings.archive == "public" else "",
    )


def renderer_for(settings: Settings, locale: str = "") -> Renderer:
    """A renderer of this newsletter's editions in ``locale`` (default: the site's)."""
    return Renderer(
        title=settings.title,
        locale=locale or settings.locale,
        excerpt_chars=settings.excerpt_chars,
        brand=brand_for(settings),
        tracked_url_length=tracked_url_length(settings.base_url),
    )


def tracking_for(settings: Settings) -> Tracking:
    """What a tracked variant counts on this site (NEWSLETTER_TRACK_CLICKS / _OPENS)."""
    return Tracking(clicks=settings.track_clicks, opens=settings.track_opens)


class VariantRenderer:
    """Renders each distinct content variant of one edition once.

    A variant is the set of sections a subscriber receives and the language of the fixed text
    (dates, links, footer), and whether it is tracked (its readers' clicks counted); the
    articles themselves are as the site wrote them.
    """

    def __init__(self, edition: Edition, settings: Settings) -> None:
        self.edition = edition
        self._settings = settings
        self._renderers: dict[str, Renderer] = {}
        self._cache: dict[tuple[frozenset[str], str, bool, Tracking], RenderedVariant] = {}

    @classmethod
    def for_settings(cls, edition: Edition, settings: Settings) -> VariantRenderer:
        return cls(edition, settings)

    def _renderer(self, locale: str) -> Renderer:
        if locale not in self._renderers:
            self._renderers[locale] = renderer_for(self._settings, locale)
        return self._renderers[locale]

    def variant(
        self,
        keys: frozenset[str],
        locale: str = "",
        *,
        chosen: bool = False,
        tracking: Tracking = NOT_TRACKED,
    ) -> RenderedVariant:
        """The variant of sections ``keys`` in ``locale``; ``chosen`` when its readers picked
        their sections (the footer then names them); ``tracking``: its article links are click
        slots and/or it has the open pixel's."""
        locale = locale or self._settings.locale
        key = (keys, locale, chosen, tracking)
        if key not in self._cache:
            restricted = self.edition.restricted_to(keys)
            rendered = self._renderer(locale).render(restricted, chosen=chosen, tracking=tracking)
            self._cache[key] = rendered
        return self._cache[key]

    def variant_for(self, preferences: Iterable[str], locale: str = "") -> RenderedVariant | None:
        """The variant for a subscriber's preferences; None when it would be empty."""
        preferences = tuple(preferences)
        keys = self.edition.variant_keys(preferences)
        chosen = bool(wanted_keys(preferences))
        return self.variant(keys, locale, chosen=chosen) if keys else None
