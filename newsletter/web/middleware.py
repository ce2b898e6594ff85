"""The web app's ASGI middleware: security headers and a request log line, the body cap and deadline.

Pure ASGI rather than BaseHTTPMiddleware, so that they also wrap streaming and error responses
and see the body as it arrives. The editors' login is not middleware: editors.py applies it to the
editors' routes only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.web.pages import BODY_TIMEOUT, BodyTooLarge, BodyTooSlow, log
from newsletter.web.security import redact_path


class SecurityHeaders:
    """Adds the security headers to every response and logs one redacted line per request."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.info(
                "%s %s %s %.0fms", scope["method"], redact_path(scope["path"]), status, elapsed
            )


class BodyLimit:
    """413 for a declared Content-Length over the cap; BodyTooLarge when a body grows past it;
    BodyTooSlow when it is not all there ``timeout`` seconds after the request began."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        too_large: Callable[[], Response],
        timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.too_large()(scope, receive, send)
            return
        received = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # only waiting for a disconnect now: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(f"request body not received within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:  # chunked: no Content-Length to check up front
                    raise BodyTooLarge(f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)
