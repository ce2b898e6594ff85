"""The receiving end of tracked links (issue 15): where a click lands, the buffer that stores
clicks after the answer, and the retention fold.

* ``ClickTargets``: the URL a click token leads to: the article's own URL in the edition as
  frozen at its send, with NEWSLETTER_UTM merged (domain/clicks.with_campaign). Each edition's
  targets are read once and kept (``CACHE_SECONDS``), so a flood of clicks does not read the
  database for each one.
* ``ClickBuffer``: the redirect answers first, then hands the click here; the web app writes the
  buffer in one transaction at most every second (``FLUSH_SECONDS``) and at shutdown, so a crash
  loses at most the last second of clicks and a clean restart loses none.
* ``fold_old_clicks``: per-reader rows older than NEWSLETTER_CLICK_RETENTION_DAYS become
  per-article totals (the daemon runs it daily; ``newsletter stats`` before reporting).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.domain.clicks import Click, with_campaign
from newsletter.domain.curation import article_ref
from newsletter.domain.urls import is_http_url

log = logging.getLogger("newsletter.clicks")

FLUSH_SECONDS = 1.0
CACHE_SECONDS = 300.0  # an edition's targets do not change once frozen; forgetting is rare
CACHE_EDITIONS = 64
# Past this many clicks waiting (the database down for a long while), new ones are dropped with
# a warning rather than growing the web process without bound.
MAX_PENDING = 200_000


class ClickTargets:
    """Article URLs by (edition, ref), read from the ledger's frozen editions and cached."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.utm = settings.utm
        self._cache: dict[date, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def cached(self, day: date, ref: str) -> str | bool | None:
        """The target when edition ``day`` is cached (None: no such article), False when the
        edition must be read first (``load``): the redirect calls this without a thread."""
        with self._lock:
            entry = self._cache.get(day)
        if entry is None or time.monotonic() - entry[0] > CACHE_SECONDS:
            return False
        return entry[1].get(ref)

    def load(self, day: date, ref: str) -> str | None:
        """Read edition ``day``'s targets from the database, cache them, return ``ref``'s."""
        articles = self.store.frozen_articles(day)
        if articles is None:  # never frozen, or forgotten: nothing cached, nothing to land on
            return None
        targets = {
            article_ref(article.uid): with_campaign(article.link, self.utm, day)
            for article in articles
            if is_http_url(article.link)  # never lead a click anywhere but to the web
        }
        with self._lock:
            if len(self._cache) >= CACHE_EDITIONS:
                self._cache.pop(min(self._cache, key=lambda d: self._cache[d][0]))
            self._cache[day] = (time.monotonic(), targets)
        return targets.get(ref)


@dataclass(frozen=True, slots=True)
class FlushReport:
    clicks: int
    opens: int


class ClickBuffer:
    """Clicks and opens waiting to be written; ``add_click``/``add_open`` from any thread,
    ``flush`` from one at a time (the web app's flusher, and its shutdown)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._clicks: list[Click] = []
        self._opens: list[tuple[date, int, datetime]] = []
        self._warned = False

    def add_click(self, click: Click) -> None:
        with self._lock:
            if len(self._clicks) < MAX_PENDING:
                self._clicks.append(click)
                return
        self._drop_warning()

    def add_open(self, day: date, subscriber_id: int, at: datetime) -> None:
        with self._lock:
            if len(self._opens) < MAX_PENDING:
                self._opens.append((day, subscriber_id, at))
                return
        self._drop_warning()

    def pending(self) -> int:
        with self._lock:
            return len(self._clicks) + len(self._opens)

    def flush(self) -> FlushReport:
        """Write what is waiting, in one transaction per kind. On a database error the batch
        goes back to the front of the queue for the next flush, and the error is raised."""
        with self._flushing:
            with self._lock:
                batch, self._clicks = self._clicks, []
                opened, self._opens = self._opens, []
            try:
                clicks = self.store.record_clicks(batch)
            except Exception:
                with self._lock:
                    self._clicks[:0] = batch
                    self._opens[:0] = opened
                raise
            try:
                opens = self.store.record_opens(opened)
            except Exception:
                with self._lock:
                    self._opens[:0] = opened
                raise
            with self._lock:
                self._warned = False
            return FlushReport(clicks, opens)

    def _drop_warning(self) -> None:
        with self._lock:
            warned, self._warned = self._warned, True
        if not warned:
            log.warning("clicks: %d waiting to be stored, new ones are dropped", MAX_PENDING)


def fold_old_clicks(store: Store, settings: Settings, now: datetime | None = None) -> int:
    """Fold the per-reader click rows older than NEWSLETTER_CLICK_RETENTION_DAYS into
    per-article totals; returns the number of rows folded (and deleted)."""
    moment = now or store.now()
    return store.fold_clicks(moment - timedelta(days=settings.click_retention_days))
