"""The public archive: /archive (the sent editions, newest first), its Atom feed, and each
edition's web version at /archive/YYYY-MM-DD, the page every email's "web version" link opens.

Public routes: no login, no cookie, nothing personal (the page is ``Renderer.web_page``, which
carries no subscriber's link). What is shown, and to whom, is ``services/archive.py``'s; here is
HTTP: 404 for what NEWSLETTER_ARCHIVE hides or the archive does not hold, the cache headers and
revalidation (an edition never changes after its send), the web version's own CSP and robots.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from newsletter.adapters.i18n import N_, language_tag, nN_
from newsletter.services.archive import Archive, ArchiveEntry, WebVersion
from newsletter.web.editors import day_or_404, edition_day
from newsletter.web.pages import Site
from newsletter.web.security import WEB_VERSION_CSP

# A sent edition does not change: browsers and proxies may keep its page a day without asking
# (then they revalidate with the ETag; a template fix reaches them within the day).
EDITION_MAX_AGE = 86_400
# The list and the feed gain an edition each send: five minutes old at most.
LIST_MAX_AGE = 300
ATOM_TYPE = "application/atom+xml"


class ArchivePages:
    """The archive's handlers."""

    def __init__(self, site: Site, archive: Archive | None = None) -> None:
        self.site = site
        self.archive = archive or Archive(site.store, site.settings)

    # -- /archive --------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        if not self.archive.listed:
            raise HTTPException(404)
        before_text = request.query_params.get("before")
        before = day_or_404(before_text) if before_text is not None else None
        listing = await run_in_threadpool(self.archive.listing, before)
        if before is not None and not listing.entries:
            raise HTTPException(404)  # no such page: nothing is older
        older = listing.older.isoformat() if listing.older else ""
        return self.site.page(
            "pages/archive.html",
            headers={"Cache-Control": f"public, max-age={LIST_MAX_AGE}"},
            entries=[self.entry_view(entry) for entry in listing.entries],
            feed_url=self.site.url("archive_feed"),
            feed_title=self.feed_title(),
            older_url=f"{self.site.url('archive')}?before={older}" if older else "",
            latest_url=self.site.url("archive") if before is not None else "",
            subscribe_url=self.site.url("subscribe_form"),
        )

    def entry_view(self, entry: ArchiveEntry) -> dict[str, str]:
        return {
            "day": entry.day.isoformat(),
            "long_date": entry.long_date,
            "headline": entry.headline,
            "count": self.site.t(None, nN_("%(num)d article", "%(num)d articles", entry.articles)),
            "url": entry.url,
        }

    def feed_title(self) -> str:
        return self.site.t(None, N_("%(title)s: every edition"), title=self.site.settings.title)

    def entry_title(self, entry: ArchiveEntry) -> str:
        """The feed entry's title: the date and the lead headline."""
        if not entry.headline:
            return entry.long_date
        # TRANSLATORS: an Atom feed entry's title: the edition's date and its lead headline
        title = N_("%(date)s: %(headline)s")
        return self.site.t(None, title, date=entry.long_date, headline=entry.headline)

    # -- /archive.atom ---------------------------------------------------------------------------

    async def feed(self, request: Request) -> Response:
        if not self.archive.listed:
            raise HTTPException(404)
        listing = await run_in_threadpool(self.archive.listing, None)
        settings = self.site.settings
        entries = [
            {
                **self.entry_view(entry),
                "title": self.entry_title(entry),
                "published": rfc3339(entry.published),
                "updated": rfc3339(entry.updated),
            }
            for entry in listing.entries
        ]
        # An empty archive's feed is still valid Atom: <updated> is required, so "now".
        newest = max((e.updated for e in listing.entries), default=datetime.now(UTC))
        xml = self.site.templates.get_template("pages/archive.xml").render(
            lang=language_tag(settings.locale),
            feed_id=self.site.url("archive"),
            feed_url=self.site.url("archive_feed"),
            archive_url=self.site.url("archive"),
            title=self.feed_title(),
            author=settings.publisher or settings.title,
            updated=rfc3339(newest),
            entries=entries,
        )
        return Response(
            xml,
            media_type=f"{ATOM_TYPE}; charset=utf-8",
            headers={"Cache-Control": f"public, max-age={LIST_MAX_AGE}"},
        )

    # -- /archive/YYYY-MM-DD ---------------------------------------------------------------------

    async def edition(self, request: Request) -> Response:
        if not self.archive.reachable:
            raise HTTPException(404)
        day = edition_day(request)
        page = await run_in_threadpool(self.archive.web_version, day)
        if page is None:  # never sent, held before its first message, or no such edition
            raise HTTPException(404)
        headers = self.edition_headers(page)
        if not_modified(request, page):
            return Response(status_code=304, headers=headers)
        return Response(page.body, media_type="text/html", headers=headers)

    def edition_headers(self, page: WebVersion) -> dict[str, str]:
        headers = {
            "Cache-Control": f"public, max-age={EDITION_MAX_AGE}",
            "ETag": page.etag,
            "Last-Modified": http_date(page.last_modified),
            "Content-Security-Policy": WEB_VERSION_CSP,
        }
        if self.archive.noindex:
            headers["X-Robots-Tag"] = "noindex"
        return headers


def archive_routes(pages: ArchivePages) -> list[BaseRoute]:
    """The archive's routes: public (no login); each answers 404 where NEWSLETTER_ARCHIVE says."""
    return [
        Route("/archive", pages.index, methods=["GET"], name="archive"),
        Route("/archive.atom", pages.feed, methods=["GET"], name="archive_feed"),
        Route("/archive/{day:str}", pages.edition, methods=["GET"], name="archive_edition"),
    ]


def not_modified(request: Request, page: WebVersion) -> bool:
    """Whether the client's copy is current (RFC 9110 13.1): If-None-Match when sent (weak
    comparison), else If-Modified-Since against the edition's freeze, to the second."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or page.etag in tags
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):  # not an HTTP date: ignored, as the RFC says
        return False
    if since.tzinfo is None:  # "-0000" dates parse naive: they are UTC
        since = since.replace(tzinfo=UTC)
    return page.last_modified.replace(microsecond=0) <= since


def http_date(moment: datetime) -> str:
    """``moment`` as an HTTP date: "Tue, 27 Jan 2026 06:00:00 GMT"."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def rfc3339(moment: datetime) -> str:
    """``moment`` as Atom's date-time, in UTC to the second: "2026-01-27T06:00:00Z"."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
