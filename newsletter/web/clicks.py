"""The tracked links' routes (issue 15): ``GET /c/{token}``, the click redirect, and
``GET /o/{token}.gif``, the open pixel. Public: no login, no cookie.

The redirect answers **302 to exactly the article's URL** in the edition as frozen at its send
(NEWSLETTER_UTM merged, services/clicks.ClickTargets), ``Cache-Control: no-store`` (every click
comes back here) and ``Referrer-Policy: no-referrer`` (the site never sees the token). A token
that does not verify, names an edition that was never frozen or was forgotten, or an article
that edition does not hold (another edition's, or one the editors excluded) gets the 404 page:
no Location, never a redirect anywhere else, so this is no open redirect.

Answer first, store later: a click to count goes into ``ClickBuffer``; ``ClickRoutes.flusher``
(run by the app's lifespan) writes it at most a second later, and once more at shutdown.

What is counted is domain/clicks.py's rule: not a HEAD (it answers the same 302), not a
prefetch or preview, not a scanner's user agent, not an editors' test message (subscriber 0),
nothing when NEWSLETTER_TRACK_CLICKS is off (old tracked links still redirect: people read old
mail), and at counting time not a message whose links were all opened within seconds.
The pixel is a 1x1 transparent GIF, counted (first open of the edition by that reader) only
with NEWSLETTER_TRACK_OPENS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from newsletter.adapters.tokens import ClickClaim, ClickSigner, InvalidToken
from newsletter.domain.clicks import Click, is_prefetch, is_scanner_agent
from newsletter.domain.errors import error_line
from newsletter.services.clicks import FLUSH_SECONDS, ClickBuffer, ClickTargets
from newsletter.web.pages import Site, log

CLICK_PATH = "/c/"
OPEN_PATH = "/o/"
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NOT_CACHED = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class ClickRoutes:
    """The redirect and the pixel, their cache of targets and their buffer of clicks."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.settings = site.settings
        self.signer = ClickSigner(site.settings.secret_key)
        self.targets = ClickTargets(site.store, site.settings)
        self.buffer = ClickBuffer(site.store)

    # -- GET /c/{token} --------------------------------------------------------------------------

    async def click(self, request: Request) -> Response:
        claim = self.claim(request.path_params["token"])
        target = self.targets.cached(claim.edition_date, claim.article_ref)
        if target is False:  # edition not read yet (or a while ago): once, in a thread
            target = await run_in_threadpool(
                self.targets.load, claim.edition_date, claim.article_ref
            )
        if not isinstance(target, str):
            raise HTTPException(404)
        if self.settings.track_clicks and self.by_reader(request, claim):
            self.buffer.add_click(
                Click(
                    claim.edition_date,
                    claim.article_ref,
                    claim.subscriber_id,
                    self.site.store.now(),
                )
            )
        return Response(status_code=302, headers={"Location": target, **NOT_CACHED})

    def claim(self, token: str) -> ClickClaim:
        try:
            return self.signer.read_click(token)
        except InvalidToken:
            raise HTTPException(404) from None

    # -- GET /o/{token}.gif ----------------------------------------------------------------------

    async def pixel(self, request: Request) -> Response:
        try:
            claim = self.signer.read_open(request.path_params["token"])
        except InvalidToken:
            raise HTTPException(404) from None
        if self.settings.track_opens and self.by_reader(request, claim):
            self.buffer.add_open(claim.edition_date, claim.subscriber_id, self.site.store.now())
        return Response(PIXEL, media_type="image/gif", headers=NOT_CACHED)

    @staticmethod
    def by_reader(request: Request, claim: ClickClaim) -> bool:
        """Whether this request is a person's: see domain/clicks.py for the rule."""
        return (
            request.method == "GET"
            and claim.subscriber_id != 0
            and not is_prefetch(request.headers)
            and not is_scanner_agent(request.headers.get("user-agent", ""))
        )

    # -- the buffer ------------------------------------------------------------------------------

    async def flusher(self) -> None:
        """Write the buffered clicks every FLUSH_SECONDS until cancelled (the app's lifespan)."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        if not self.buffer.pending():
            return
        try:
            await run_in_threadpool(self.buffer.flush)
        except Exception as err:  # the database is busy or down: kept for the next flush
            log.warning("clicks: could not be stored yet: %s", error_line(err))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The flusher for the app's lifetime; at shutdown, the last clicks are written."""
        task = asyncio.create_task(self.flusher())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush()


def click_routes(routes: ClickRoutes) -> list[BaseRoute]:
    """Public routes; a GET route also answers HEAD (the same answer, never counted)."""
    return [
        Route(CLICK_PATH + "{token:str}", routes.click, methods=["GET"], name="click"),
        Route(OPEN_PATH + "{token:str}.gif", routes.pixel, methods=["GET"], name="open_pixel"),
    ]
