"""The web app's error pages: one exception handler per kind of failure, each a page in the
newsletter's language (never a stack trace), and the table create_app wires them with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from newsletter.adapters.i18n import N_, nN_
from newsletter.adapters.links import CONFIRM_PATH
from newsletter.adapters.store import DatabaseBusy, DatabaseFailure
from newsletter.adapters.tokens import InvalidToken
from newsletter.domain.errors import NewsletterError
from newsletter.services.signup import UnknownLink
from newsletter.web.pages import BodyTooLarge, BodyTooSlow, Site, UnsupportedForm, log
from newsletter.web.security import redact_path

# Seconds a client is asked to wait after a 503 for a busy database: a writer holds the lock for
# a send batch or an import chunk, so a few seconds later the retry (a mail client's one-click
# POST, say) goes through.
BUSY_RETRY_AFTER = 5


class ErrorPages:
    """The exception handlers: what a visitor sees when a request fails, and what is logged."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def handlers(self) -> dict[Any, Callable[..., Any]]:
        """Exception class → handler, for Starlette(exception_handlers=...)."""
        return {
            HTTPException: self.on_http_error,
            InvalidToken: self.on_bad_token,
            BodyTooLarge: self.on_too_large,
            BodyTooSlow: self.on_too_slow,
            UnsupportedForm: self.on_unsupported,
            ClientDisconnect: self.on_client_gone,
            DatabaseBusy: self.on_busy,
            DatabaseFailure: self.on_busy,
            NewsletterError: self.on_service_error,
            Exception: self.on_crash,
        }

    def too_large(self) -> Response:
        """The 413 page; BodyLimit also sends it for a declared Content-Length over the cap."""
        return self.site.message(
            413,
            N_("Request too large"),
            N_("The form could not be read. Go back to the previous page and try again."),
        )

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        keys = {
            404: (N_("Page not found"), N_("There is no page at this address.")),
            405: (
                N_("Method not allowed"),
                N_("The form could not be read. Go back to the previous page and try again."),
            ),
            413: (
                N_("Request too large"),
                N_("The form could not be read. Go back to the previous page and try again."),
            ),
        }.get(exc.status_code)
        if keys is None and exc.status_code < 500:
            keys = (
                N_("Invalid request"),
                N_("The form could not be read. Go back to the previous page and try again."),
            )
        elif keys is None:
            keys = (
                N_("Something went wrong"),
                N_("We could not handle your request. Please try again later."),
            )
        return self.site.message(exc.status_code, *keys, headers=exc.headers)

    async def on_bad_token(self, request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, UnknownLink) else 400
        if request.url.path.startswith(CONFIRM_PATH):
            return self.site.message(
                status,
                N_("This link is not valid"),
                N_("It may be incomplete (copy all of it) or too old."),
                nN_(
                    "Confirmation links are valid for %(num)d day. Sign up again to get a new one.",
                    "Confirmation links are valid for %(num)d days. Sign up again to get a new one.",
                    self.site.settings.confirm_days,
                ),
                link=(self.site.url("subscribe_form"), N_("Sign up again")),
            )
        return self.site.message(
            status,
            N_("This link is not valid"),
            N_("It may be incomplete (copy all of it) or too old."),
        )

    async def on_too_large(self, request: Request, exc: Exception) -> Response:
        return self.too_large()

    async def on_too_slow(self, request: Request, exc: Exception) -> Response:
        # Connection: close makes uvicorn drop the connection once this page is sent.
        return self.site.message(
            408,
            N_("Invalid request"),
            N_("The request arrived too slowly."),
            headers={"Connection": "close"},
        )

    async def on_unsupported(self, request: Request, exc: Exception) -> Response:
        return self.site.message(
            415,
            N_("Invalid request"),
            N_("The form could not be read. Go back to the previous page and try again."),
        )

    async def on_service_error(self, request: Request, exc: Exception) -> Response:
        # The database is down or similar: say so without details (they may name servers).
        log.error("%s %s: %s", request.method, redact_path(request.url.path), exc)
        return self.site.message(
            503,
            N_("Something went wrong"),
            N_("We could not handle your request. Please try again later."),
        )

    async def on_busy(self, request: Request, exc: Exception) -> Response:
        # The store's bounded wait for the write lock ran out (DatabaseBusy), or the driver
        # itself said the database is locked or unreachable: nothing was changed, so "try again
        # shortly" is the honest answer, not a 500. Only the class is logged (details may name
        # servers).
        reason = type(exc.orig).__name__ if isinstance(exc, DatabaseFailure) else type(exc).__name__
        log.warning(
            "%s %s: database busy (%s)", request.method, redact_path(request.url.path), reason
        )
        return self.site.message(
            503,
            N_("Service briefly unavailable"),
            N_(
                "We are very busy right now. Please try again in a few seconds: nothing was changed."
            ),
            headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        )

    async def on_client_gone(self, request: Request, exc: Exception) -> Response:
        # The client hung up in the middle of its body: nobody will read an answer, and it is
        # not our failure (no error, no traceback in the log).
        log.info("%s %s: client disconnected", request.method, redact_path(request.url.path))
        return Response(status_code=400)

    async def on_crash(self, request: Request, exc: Exception) -> Response:
        log.error(
            "%s %s failed: %s", request.method, redact_path(request.url.path), type(exc).__name__
        )
        return self.site.message(
            500,
            N_("Something went wrong"),
            N_("We could not handle your request. Please try again later."),
        )
