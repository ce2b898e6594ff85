"""``create_app``: the named route table, the middleware stack, the error handlers, the lifespan.

Routes (under NEWSLETTER_BASE_URL; the name each is built from in url() / url_path_for):
  GET  /                     home              the sign-up form
  GET  /subscribe            subscribe_form    the sign-up form
  POST /subscribe            subscribe         pending subscriber + confirmation email
  GET  /confirm/{token}      confirm_form      double opt-in: a page with one button
  POST /confirm/{token}      confirm           the button: the subscriber becomes active
  GET  /unsubscribe/{token}  unsubscribe_form  a page with one button
  POST /unsubscribe/{token}  unsubscribe       RFC 8058 one-click (and the button)
  GET  /preferences/{token}  preferences_form  sections and language
  POST /preferences/{token}  preferences       saved at once
  GET  /editor               editor            editors: recent editions, hold / release
  POST /editor/{day}/hold    editor_hold       editors
  POST /editor/{day}/release editor_release    editors
  POST /editor/{day}/test    editor_test       editors: a test send of the edition
  POST /editor/{day}/edition editor_curate     editors: the curation form (exclude, lead, intro...)
  GET  /preview/{day}        preview           editors: the edition as subscribers see it, and
                                               beside it the form that shapes it
  GET  /archive              archive           the sent editions, newest first (NEWSLETTER_ARCHIVE=public)
  GET  /archive.atom         archive_feed      their Atom feed (public)
  GET  /archive/{day}        archive_edition   an edition's web version, as sent (public, unlisted)
  GET  /c/{token}            click             a tracked article link: 302 to the article (issue 15)
  GET  /o/{token}.gif        open_pixel        the open pixel (counted with NEWSLETTER_TRACK_OPENS)
  GET  /healthz              healthz           "ok" when the database answers
  POST /hooks/ses            ses_hook          Amazon SES bounces and complaints through SNS
                                               (only with NEWSLETTER_SNS_TOPIC_ARNS)

The token paths come from links.py, which builds the same URLs for emails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.adapters.links import CONFIRM_PATH, PREFERENCES_PATH, UNSUBSCRIBE_PATH
from newsletter.adapters.smtp import SmtpConfig
from newsletter.adapters.store import DatabaseError, Store, open_store
from newsletter.config import Settings
from newsletter.domain.errors import NewsletterError
from newsletter.web.archive import ArchivePages, archive_routes
from newsletter.web.clicks import ClickRoutes, click_routes
from newsletter.web.editors import EditorConsole, Endpoint
from newsletter.web.errors import ErrorPages
from newsletter.web.hooks import hook_routes
from newsletter.web.middleware import BodyLimit, SecurityHeaders
from newsletter.web.pages import Site, WebLimits, log
from newsletter.web.security import check_thank_you_url
from newsletter.web.subscriber_pages import SubscriberPages


def health_check(store: Store) -> Endpoint:
    """GET /healthz: "ok" when the database answers, 503 when it does not."""

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(store.schema_version)
        except (DatabaseError, NewsletterError):
            log.warning("health check: the database does not answer")
            return PlainTextResponse("unavailable", status_code=503)
        return PlainTextResponse("ok")

    return healthz


def subscriber_routes(pages: SubscriberPages, healthz: Endpoint) -> list[BaseRoute]:
    token = "{token:str}"
    confirm, unsubscribe, preferences = (
        f"{CONFIRM_PATH}{token}",
        f"{UNSUBSCRIBE_PATH}{token}",
        f"{PREFERENCES_PATH}{token}",
    )
    return [
        Route("/", pages.subscribe_form, methods=["GET"], name="home"),
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/subscribe", pages.subscribe_form, methods=["GET"], name="subscribe_form"),
        Route("/subscribe", pages.subscribe, methods=["POST"], name="subscribe"),
        Route(confirm, pages.confirm_form, methods=["GET"], name="confirm_form"),
        Route(confirm, pages.confirm, methods=["POST"], name="confirm"),
        Route(unsubscribe, pages.unsubscribe_form, methods=["GET"], name="unsubscribe_form"),
        Route(unsubscribe, pages.unsubscribe, methods=["POST"], name="unsubscribe"),
        Route(preferences, pages.preferences_form, methods=["GET"], name="preferences_form"),
        Route(preferences, pages.preferences, methods=["POST"], name="preferences"),
    ]


def editor_routes(console: EditorConsole) -> list[BaseRoute]:
    """The editors' routes, every one behind the editors' login (applied here, at routing)."""

    def editors_only(path: str, endpoint: Endpoint, method: str, name: str) -> Route:
        return Route(path, console.login.required(endpoint), methods=[method], name=name)

    return [
        editors_only("/editor", console.status, "GET", "editor"),
        editors_only("/editor/{day}/hold", console.hold, "POST", "editor_hold"),
        editors_only("/editor/{day}/release", console.release, "POST", "editor_release"),
        editors_only("/editor/{day}/test", console.test_send, "POST", "editor_test"),
        editors_only("/editor/{day}/edition", console.curate, "POST", "editor_curate"),
        editors_only("/preview/{day}", console.preview, "GET", "preview"),
    ]


def create_app(
    settings: Settings,
    store: Store | None = None,
    *,
    limits: WebLimits | None = None,
    smtp: SmtpConfig | None = None,
) -> Starlette:
    """The web app. Opens the store when not given one, and then closes it at shutdown."""
    settings.require_sending()  # secret for tokens, base URL for links, From for confirmations
    check_thank_you_url(settings)
    owned = store is None
    store = store if store is not None else open_store(settings.database_url, for_web=True)
    site = Site(settings, store, limits or WebLimits())
    errors = ErrorPages(site)
    clicks = ClickRoutes(site)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            # The click buffer is written every second, and a last time before the store closes.
            async with clicks.running():
                yield
        finally:
            if owned:
                store.close()

    app = Starlette(
        routes=[
            *subscriber_routes(SubscriberPages(site, smtp), health_check(store)),
            *archive_routes(ArchivePages(site)),
            *click_routes(clicks),
            *editor_routes(EditorConsole(site)),
            *hook_routes(site),
        ],
        exception_handlers=errors.handlers(),
        middleware=[
            Middleware(SecurityHeaders, headers=site.security),
            Middleware(
                BodyLimit,
                max_bytes=site.limits.max_body_bytes,
                too_large=errors.too_large,
                timeout=site.limits.body_timeout,
            ),
        ],
        lifespan=lifespan,
    )
    site.router = app.router
    app.state.site = site
    app.state.clicks = clicks
    return app
