"""Service: the public archive of sent editions and each edition's web version.

Which editions are in it is the store's rule (``adapters/store/archive.py``): frozen with
articles, and finished or mailed to at least one reader; an edition held before its first
message went out is not. ``NEWSLETTER_ARCHIVE`` says who may see it: ``public`` (the list, its
Atom feed and every edition's page), ``unlisted`` (only the pages, each marked noindex: the
emails' "web version" links work, but nothing lists or indexes them) or ``off`` (nothing).

An edition does not change once sent, so what is built from it is kept in process: the rendered
page of the last ``PAGE_CACHE_SIZE`` editions opened (a burst of readers clicking "view in
browser" renders it once), and each listed edition's lead headline and article count (the list
reads the frozen articles of an edition once, not on every request). Both are bounded LRU maps.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Generic, TypeVar

from newsletter.adapters.i18n import format_long_date
from newsletter.adapters.render import TITLE_MAX, plain_line
from newsletter.adapters.store import ArchivedEdition, Store
from newsletter.config import Settings
from newsletter.domain.curation import lead_first
from newsletter.services.compose import brand_for, renderer_for
from newsletter.services.editions import rebuild_edition

# Editions on one page of /archive and in the Atom feed; older ones are one "older" link away.
PAGE_SIZE = 50
# Rendered web versions kept: the last editions opened (each is the email's HTML, 20-90 KB).
PAGE_CACHE_SIZE = 64
# Listed editions whose lead headline and count are kept: a few pages of the list's worth.
SUMMARY_CACHE_SIZE = 1024

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A bounded least-recently-used map, safe across the web app's worker threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One edition as the list and the feed show it."""

    day: date
    long_date: str  # in the newsletter's language: "mardi 27 janvier 2026"
    headline: str  # the lead story's title, as plain text ("" if the edition has none left)
    articles: int
    url: str  # its web version: {NEWSLETTER_BASE_URL}/archive/YYYY-MM-DD
    published: datetime  # when its send started (frozen_at)
    updated: datetime  # when its send finished, else when it started


@dataclass(frozen=True, slots=True)
class ArchiveListing:
    """One page of the archive, newest first; ``older`` is the next page's ``before``."""

    entries: tuple[ArchiveEntry, ...]
    older: date | None


@dataclass(frozen=True, slots=True)
class WebVersion:
    """An edition's web page as sent, ready to serve and to revalidate."""

    day: date
    body: bytes  # UTF-8 HTML
    etag: str  # a strong validator: the hash of the body, quoted
    last_modified: datetime  # frozen_at: the edition's content dates from then


@dataclass(frozen=True, slots=True)
class _Summary:
    headline: str
    articles: int


class Archive:
    """The archive of one newsletter: its listing and its editions' web versions."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        page_size: int = PAGE_SIZE,
        page_cache_size: int = PAGE_CACHE_SIZE,
    ) -> None:
        self.store = store
        self.settings = settings
        self.page_size = page_size
        self.brand = brand_for(settings)
        self.pages: LruCache[date, WebVersion] = LruCache(page_cache_size)
        self._summaries: LruCache[tuple[date, datetime], _Summary] = LruCache(SUMMARY_CACHE_SIZE)
        self._renderer = renderer_for(settings)
        # One render per edition at a time: the readers who click while it renders wait for
        # that render instead of starting their own.
        self._rendering: dict[date, threading.Lock] = {}
        self._rendering_guard = threading.Lock()

    @property
    def listed(self) -> bool:
        """Whether /archive and the feed exist (``public``)."""
        return self.settings.archive == "public"

    @property
    def reachable(self) -> bool:
        """Whether an edition's page answers (``public`` or ``unlisted``)."""
        return self.settings.archive in ("public", "unlisted")

    @property
    def noindex(self) -> bool:
        """Whether pages ask search engines to stay out (``unlisted``)."""
        return self.settings.archive == "unlisted"

    # -- the list --------------------------------------------------------------------------------

    def listing(self, before: date | None = None) -> ArchiveListing:
        """The ``page_size`` newest editions of the archive, older than ``before`` if given."""
        found = self.store.archived_editions(self.page_size + 1, before=before)
        shown, more = found[: self.page_size], len(found) > self.page_size
        summaries = self._summaries_of(shown)
        entries = tuple(self._entry(edition, summaries[edition.edition_date]) for edition in shown)
        return ArchiveListing(entries, shown[-1].edition_date if more and shown else None)

    def _summaries_of(self, editions: Sequence[ArchivedEdition]) -> dict[date, _Summary]:
        known: dict[date, _Summary] = {}
        missing: list[ArchivedEdition] = []
        for edition in editions:
            cached = self._summaries.get((edition.edition_date, edition.frozen_at))
            if cached is None:
                missing.append(edition)
            else:
                known[edition.edition_date] = cached
        if missing:  # one statement for every edition not seen yet
            days = [e.edition_date for e in missing]
            articles = self.store.frozen_articles_of(days)
            curations = self.store.curations_of(days)
            for edition in missing:
                day = edition.edition_date
                rebuilt = lead_first(
                    rebuild_edition(self.settings, day, articles.get(day, []), curations.get(day))
                )
                lead = rebuilt.articles[0].title if rebuilt.articles else ""
                summary = _Summary(plain_line(lead, TITLE_MAX), len(rebuilt.articles))
                self._summaries.put((day, edition.frozen_at), summary)
                known[day] = summary
        return known

    def _entry(self, edition: ArchivedEdition, summary: _Summary) -> ArchiveEntry:
        day = edition.edition_date
        return ArchiveEntry(
            day=day,
            long_date=format_long_date(day, self.settings.locale),
            headline=summary.headline,
            articles=summary.articles,
            url=self.brand.web_version_url(day),
            published=edition.frozen_at,
            updated=edition.finished_at or edition.frozen_at,
        )

    # -- one edition -----------------------------------------------------------------------------

    def web_version(self, day: date) -> WebVersion | None:
        """Edition ``day``'s page as sent, or None when it is not in the archive."""
        cached = self.pages.get(day)
        if cached is not None:
            return cached
        with self._rendering_guard:
            lock = self._rendering.setdefault(day, threading.Lock())
        try:
            with lock:
                cached = self.pages.get(day)  # rendered while this thread waited
                if cached is not None:
                    return cached
                page = self._render(day)
                if page is not None:
                    self.pages.put(day, page)
                return page
        finally:
            with self._rendering_guard:
                self._rendering.pop(day, None)

    def _render(self, day: date) -> WebVersion | None:
        archived = self.store.archived_edition(day)
        if archived is None:
            return None
        articles = self.store.frozen_articles(day) or []
        edition = rebuild_edition(
            self.settings, day, articles, self.store.edition_curation(day).curation
        )
        html = self._renderer.web_page(edition, noindex=self.noindex)
        body = html.encode("utf-8")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return WebVersion(day, body, etag, archived.frozen_at)
